//! Issue 21 §3: one signed access list for a fleet. Three proxies (web1,
//! web2, db1) under one root pull one list from nginx: a principal added to
//! it logs in on all three with nothing touched on the proxies; taken out,
//! its live sessions end on all three; a list for `web*` does not admit on
//! db1; an older or a tampered list is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ztssh_tests::nginx::{Nginx, WebRoot};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// The fleet's CA (its root signs every licence and the list) and the
/// web server that publishes the list.
struct Publisher {
    dir: TempDir,
    ca: PathBuf,
    web: WebRoot,
    nginx: Nginx,
}

impl Publisher {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca_init(dir.path());
        let web = WebRoot::new();
        let nginx = Nginx::start_empty(&web);
        Self {
            dir,
            ca,
            web,
            nginx,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/access.pem", self.nginx.port)
    }

    fn served(&self) -> PathBuf {
        self.web.path().join("www/access.pem")
    }

    /// Signs `toml` as the next list and returns its file (not yet served).
    fn sign(&self, name: &str, toml: &str) -> PathBuf {
        let input = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&input, toml).expect("write access.toml");
        let out = self.web.path().join(format!("staging/{name}.pem"));
        let o = run_bounded(
            Command::new(bin("ztssh-ca"))
                .args(["access", "--dir"])
                .arg(&self.ca)
                .arg("--in")
                .arg(&input)
                .arg("--out")
                .arg(&out),
            T,
        );
        assert_ok(&o, "ztssh-ca access");
        out
    }

    /// Serves `signed` (a copy renamed into place, as a publisher does).
    fn serve(&self, signed: &Path) {
        let tmp = self.web.path().join("staging/next.pem");
        std::fs::copy(signed, &tmp).expect("copy");
        std::fs::rename(&tmp, self.served()).expect("rename into place");
    }

    /// A proxy with server id `server_id`, licensed by this CA's root, that
    /// pulls the list every second.
    fn proxy(&self, server_id: &str) -> World {
        self.proxy_with(server_id, "")
    }

    /// [`Self::proxy`], with `extra` lines in its proxy.toml.
    fn proxy_with(&self, server_id: &str, extra: &str) -> World {
        let ca = self.ca.clone();
        let id = server_id.to_owned();
        World::builder()
            .proxy_toml(&format!(
                "access_list_url = \"{}\"\naccess_list_cache = \"{{dir}}/access-cache.pem\"\n\
                 revocation_poll_secs = 1\nrevocation_fetch_timeout_secs = 2\n{extra}",
                self.url()
            ))
            .before_start(move |pki, dir| {
                // The fleet's user key, as each user's machine holds it.
                for f in ["team", "team.pub"] {
                    std::fs::copy(ca.parent().expect("dir").join(f), dir.join(f)).expect("key");
                }
                let team = dir.join("team");
                std::fs::set_permissions(
                    &team,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod");
                // This world's CA becomes the fleet's: the same root, a
                // licence for this server id, a list under that root.
                for f in ["root.key", "root.pub"] {
                    std::fs::copy(ca.join(f), pki.ca.join(f)).expect("the fleet's root");
                }
                let o = run_bounded(
                    Command::new(bin("ztssh-ca"))
                        .args(["authorize-server", "--dir"])
                        .arg(&pki.ca)
                        .arg("--request")
                        .arg(pki.state.join("licence-request.pem"))
                        .args(["--server-id", &id, "--hostname", "localhost"])
                        .args(["--hostname", "web1", "--out"])
                        .arg(&pki.licence),
                    T,
                );
                assert_ok(&o, "authorize-server");
                pki.publish_crl();
            })
            .start()
    }
}

fn list(entries: &[(&str, &Path, Option<&str>)]) -> String {
    let mut s = String::from("# the team's access list\n");
    for (name, key, servers) in entries {
        let key = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
        s.push_str(&format!(
            "[principal.{name}]\nkeys = [\"{}\"]\n",
            key.trim()
        ));
        if let Some(g) = servers {
            s.push_str(&format!("servers = [\"{g}\"]\n"));
        }
    }
    s
}

/// The fleet's user key: the list grants it; no proxy's own file has it.
fn fleet_key(p: &Publisher) -> PathBuf {
    p.dir.path().join("team")
}

/// `ssh` through `w`'s proxy as `principal`: the sidecar signs with the
/// fleet's user key, ssh logs in to sshd with this world's alice key.
fn ssh_as(w: &World, principal: &str) -> Command {
    let key = w.dir.path().join("team");
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(&w.alice));
    c.arg("-o").arg(format!(
        "ProxyCommand={}",
        w.proxy_command_as(&key, principal, "")
    ));
    c.arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost");
    c
}

/// A live session as `principal` on `w`, once sshd accepted it.
fn live_as(w: &World, principal: &str) -> Child {
    let before = count(&w.proxy.log_text(), "event=\"upstream_connected\"");
    let child = ssh_as(w, principal)
        .arg("echo started; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    wait_until(Duration::from_secs(20), "session to connect", || {
        count(&w.proxy.log_text(), "event=\"upstream_connected\"") > before
    });
    child
}

#[test]
fn one_list_on_nginx_grants_and_withdraws_access_on_three_proxies() {
    let p = Publisher::new();
    let dave = user_key(p.dir.path(), "dave");
    let team = user_key(p.dir.path(), "team");
    assert_eq!(team, fleet_key(&p));
    // Version 1 names only dave: carol is nowhere.
    let v1 = p.sign("v1", &list(&[("dave", &dave, None)]));
    p.serve(&v1);
    let fleet: Vec<World> = ["web1", "web2", "db1"]
        .iter()
        .map(|id| p.proxy(id))
        .collect();
    for w in &fleet {
        w.proxy.wait_log("access list version 1 loaded", WAIT);
        let out = run_bounded(ssh_as(w, "carol").arg("true"), T);
        assert!(!out.status.success(), "carol is in no list yet");
        assert!(
            stderr(&out).contains("principal carol is not authorized with key"),
            "{}",
            stderr(&out)
        );
    }
    let cache = fleet[0].dir.path().join("access-cache.pem");
    wait_until(WAIT, "the list kept in the cache", || cache.exists());
    let check = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(fleet[0].dir.path().join("proxy.toml")),
        T,
    );
    let said = String::from_utf8_lossy(&check.stdout).to_string() + &stderr(&check);
    assert!(
        said.contains("principals: the union of 1 from")
            && said.contains("1 from the access list (version 1"),
        "{said}"
    );

    // Version 2: carol everywhere, erin on web* only. Nothing is done on
    // the proxies.
    let alice = team.clone();
    let v2 = p.sign(
        "v2",
        &list(&[
            ("carol", &alice, None),
            ("dave", &dave, None),
            ("erin", &alice, Some("web*")),
        ]),
    );
    p.serve(&v2);
    for w in &fleet {
        w.proxy.wait_log("access list version 2 loaded", WAIT);
        let out = run_bounded(ssh_as(w, "carol").arg("echo in"), T);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("in"),
            "{}\n{}",
            stderr(&out),
            w.proxy.log_text()
        );
    }
    let out = run_bounded(ssh_as(&fleet[1], "erin").arg("true"), T);
    assert!(out.status.success(), "erin on web2: {}", stderr(&out));
    let out = run_bounded(ssh_as(&fleet[2], "erin").arg("true"), T);
    assert!(!out.status.success(), "erin's grant is for web* only");
    assert!(
        stderr(&out).contains("principal erin is not authorized with key")
            && stderr(&out).contains("on db1"),
        "{}",
        stderr(&out)
    );

    // Carol's live sessions on all three end when version 3 drops her.
    let live: Vec<Child> = fleet.iter().map(|w| live_as(w, "carol")).collect();
    let v3 = p.sign(
        "v3",
        &list(&[("dave", &dave, None), ("erin", &alice, Some("web*"))]),
    );
    p.serve(&v3);
    for (ssh, w) in live.into_iter().zip(&fleet) {
        let out = wait_bounded(ssh, Duration::from_secs(20));
        assert!(
            stderr(&out).contains(
                "principal carol is no longer authorized with this key: your access was withdrawn"
            ),
            "{}\n{}",
            stderr(&out),
            w.proxy.log_text()
        );
    }
    // alice, from the proxies' own files, was never touched.
    let out = run_bounded(fleet[0].ssh().arg("true"), T);
    assert!(out.status.success(), "{}", stderr(&out));

    // An older list is refused and the newer one stays in force.
    p.serve(&v2);
    for w in &fleet {
        w.proxy.wait_log(
            "access list version 2 is older than the loaded 3; refused",
            WAIT,
        );
    }
    let out = run_bounded(ssh_as(&fleet[0], "carol").arg("true"), T);
    assert!(
        !out.status.success(),
        "the rollback did not bring carol back"
    );

    // A tampered list (a principal's key swapped after signing) is refused.
    let text = std::fs::read_to_string(&v2).expect("v2");
    let tampered = p.web.path().join("staging/tampered.pem");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mid = lines.len() / 2;
    let flipped: String = lines[mid]
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    lines[mid] = flipped;
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    p.serve(&tampered);
    for w in &fleet {
        w.proxy.wait_log("event=\"access_fetch_failed\"", WAIT);
    }
    let out = run_bounded(ssh_as(&fleet[0], "carol").arg("true"), T);
    assert!(!out.status.success());
}

/// Runs `ztssh-ca` with `args`, bounded.
fn ca(args: &[&std::ffi::OsStr]) -> std::process::Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args), T)
}

/// The list in `signed` (a delegated key's, its delegation beside it)
/// with every grant's servers replaced by `servers`, re-signed by the
/// delegated key `key` itself: what a stolen key could publish without
/// the CA tool's checks.
fn forge_servers(signed: &Path, key: &Path, servers: &[&str], version: u64) -> String {
    use ztssh_proto::access::AccessList;
    use ztssh_proto::delegation::{Delegation, encode_pem, split_pem};
    use ztssh_proto::labels::pem;
    let text = std::fs::read(signed).expect("signed list");
    let (list, dlg) = split_pem(&text, pem::ACCESS).expect("pem");
    let dlg = Delegation::decode(&dlg.expect("a delegation beside the list")).expect("delegation");
    let key = ztssh_keyfile::read_signing_key(key, pem::DELEGATED_KEY).expect("delegated key");
    let mut list = AccessList::decode_verified(&list, &key.public().into()).expect("list");
    list.list_version = version;
    for g in list.principals.values_mut() {
        g.servers = servers.iter().map(|s| (*s).to_owned()).collect();
    }
    encode_pem(pem::ACCESS, &list.sign(&key).expect("sign"), Some(&dlg)).expect("armour")
}

/// An online key in `dir` (`NAME.key`) and the root's `access`
/// delegation to it for `web*` (`NAME.dlg`), with `extra` arguments to
/// `ztssh-ca delegate` (`--ttl 25s`, say).
fn delegate_web(p: &Publisher, dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (key, dlg) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.dlg")),
    );
    assert_ok(
        &ca(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()]),
        "keygen",
    );
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "delegate".as_ref(),
        "--dir".as_ref(),
        p.ca.as_os_str(),
        "--purpose".as_ref(),
        "access".as_ref(),
        "--key".as_ref(),
    ];
    let public = key.with_extension("pub");
    args.push(public.as_os_str());
    args.extend(["--servers", "web*"].map(std::ffi::OsStr::new));
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend(["--out".as_ref(), dlg.as_os_str()]);
    assert_ok(&ca(&args), "delegate");
    (key, dlg)
}

#[test]
fn a_list_signed_by_an_access_delegation_grants_within_its_servers_until_revoked() {
    let p = Publisher::new();
    let team = user_key(p.dir.path(), "team");
    assert_eq!(team, fleet_key(&p));
    // The root delegates an online key for access lists on web* servers;
    // CI signs from a copy of the CA's records without the root key.
    let keys = p.dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys");
    let (key, dlg) = delegate_web(&p, &keys, "ci", &[]);
    let ci = p.dir.path().join("ci-ca");
    assert_ok(
        &run_bounded(Command::new("cp").arg("-a").arg(&p.ca).arg(&ci), T),
        "cp",
    );
    std::fs::remove_file(ci.join("root.key")).expect("rm root.key");
    let sign_as = |name: &str, toml: &str, d: &Path, k: &Path| {
        let input = p.dir.path().join(format!("{name}.toml"));
        std::fs::write(&input, toml).expect("toml");
        let out = p.web.path().join(format!("staging/{name}.pem"));
        let o = ca(&[
            "access".as_ref(),
            "--dir".as_ref(),
            ci.as_os_str(),
            "--in".as_ref(),
            input.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--delegation".as_ref(),
            d.as_os_str(),
            "--key".as_ref(),
            k.as_os_str(),
        ]);
        (o, out)
    };
    // The CA tool refuses up front a list that grants beyond web*.
    let (o, _) = sign_as("db", &list(&[("carol", &team, Some("db1"))]), &dlg, &key);
    assert!(
        !o.status.success() && stderr(&o).contains("covers servers web* only"),
        "{}",
        stderr(&o)
    );
    let (o, _) = sign_as("all", &list(&[("carol", &team, None)]), &dlg, &key);
    assert!(
        !o.status.success() && stderr(&o).contains("every server"),
        "{}",
        stderr(&o)
    );
    // A licences delegation cannot sign an access list.
    let (lkey, ldlg) = (keys.join("lic.key"), keys.join("lic.dlg"));
    assert_ok(
        &ca(&["keygen".as_ref(), "--out".as_ref(), lkey.as_os_str()]),
        "keygen",
    );
    assert_ok(
        &ca(&[
            "delegate".as_ref(),
            "--dir".as_ref(),
            p.ca.as_os_str(),
            "--purpose".as_ref(),
            "licences".as_ref(),
            "--key".as_ref(),
            lkey.with_extension("pub").as_os_str(),
            "--out".as_ref(),
            ldlg.as_os_str(),
        ]),
        "delegate licences",
    );
    let (o, _) = sign_as(
        "lic",
        &list(&[("carol", &team, Some("web*"))]),
        &ldlg,
        &lkey,
    );
    assert!(
        !o.status.success() && stderr(&o).contains("not access"),
        "{}",
        stderr(&o)
    );
    // Version 1, signed by CI under the delegation: carol on web*.
    let (o, v1) = sign_as("v1", &list(&[("carol", &team, Some("web*"))]), &dlg, &key);
    assert_ok(&o, "delegated access list");
    p.serve(&v1);
    let fleet: Vec<World> = ["web1", "db1"].iter().map(|id| p.proxy(id)).collect();
    for w in &fleet {
        w.proxy.wait_log("access list version 1 loaded", WAIT);
    }
    let (web1, db1) = (&fleet[0], &fleet[1]);
    let out = run_bounded(ssh_as(web1, "carol").arg("echo in"), T);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("in"),
        "a delegated list lets carol in on web1: {}\n{}",
        stderr(&out),
        web1.proxy.log_text()
    );
    let out = run_bounded(ssh_as(db1, "carol").arg("true"), T);
    assert!(
        !out.status.success() && stderr(&out).contains("on db1"),
        "{}",
        stderr(&out)
    );
    // Around the CA tool: the delegated key itself signs a list granting
    // db1 (and one granting every server), served to both proxies. Each
    // refuses the whole list, saying why, and version 1 stays in force.
    for (n, servers) in [(2u64, &["db1"][..]), (3, &[])] {
        let forged = p.web.path().join(format!("staging/forged{n}.pem"));
        std::fs::write(&forged, forge_servers(&v1, &key, servers, n)).expect("forged");
        p.serve(&forged);
        for w in &fleet {
            wait_until(WAIT, "the forged list refused", || {
                w.proxy.log_text().lines().any(|l| {
                    l.contains("event=\"access_fetch_failed\"")
                        && l.contains(&format!(
                            "grants principal carol {}",
                            ["servers db1", "every server"][usize::from(n == 3)]
                        ))
                        && l.contains("covers servers web* only")
                })
            });
            assert!(
                !w.proxy
                    .log_text()
                    .contains(&format!("access list version {n} loaded")),
                "{}",
                w.proxy.log_text()
            );
        }
    }
    let out = run_bounded(ssh_as(db1, "carol").arg("true"), T);
    assert!(!out.status.success(), "the forged list granted db1");
    // Carol's live session on web1; then the root revokes the delegation.
    let live = live_as(web1, "carol");
    let ci_dlg = dlg.clone();
    for w in &fleet {
        let o = ca(&[
            "revoke".as_ref(),
            "--dir".as_ref(),
            w.pki.ca.as_os_str(),
            "--delegation".as_ref(),
            ci_dlg.as_os_str(),
        ]);
        assert_ok(&o, "revoke the delegation");
        w.pki.publish_crl();
    }
    // The list in force is withdrawn with it: carol's session ends, told why.
    let out = wait_bounded(live, Duration::from_secs(20));
    assert!(
        stderr(&out).contains("no longer grants anything") && stderr(&out).contains("revoked"),
        "{}\n{}",
        stderr(&out),
        web1.proxy.log_text()
    );
    // The next list the revoked delegation signs is refused, saying what
    // to do.
    let (o, v4) = sign_as("v4", &list(&[("carol", &team, Some("web1"))]), &dlg, &key);
    assert_ok(&o, "the CA tool does not know the list in force");
    p.serve(&v4);
    wait_until(WAIT, "the revoked delegation's list refused", || {
        web1.proxy.log_text().lines().any(|l| {
            l.contains("event=\"access_fetch_failed\"")
                && l.contains("is revoked")
                && l.contains("sign the list with the root (ztssh-ca access --dir CA)")
        })
    });
    let out = run_bounded(ssh_as(web1, "carol").arg("true"), T);
    assert!(
        !out.status.success(),
        "a revoked delegation's list let carol in"
    );
}

#[test]
fn a_list_whose_delegation_ends_grants_nothing_at_once_and_after_a_restart() {
    let p = Publisher::new();
    let team = user_key(p.dir.path(), "team");
    // Version 1, the root's: carol everywhere.
    let v1 = p.sign("v1", &list(&[("carol", &team, None)]));
    p.serve(&v1);
    // Challenges far apart: only the delegation's own deadline can end the
    // session within the test's wait.
    let mut web1 = p.proxy_with("web1", "challenge_interval_secs = 600\n");
    web1.proxy.wait_log("access list version 1 loaded", WAIT);
    // Version 2, signed by CI under a delegation that lasts 25 s.
    let (key, dlg) = delegate_web(&p, p.dir.path(), "ci", &["--ttl", "25s"]);
    let input = p.dir.path().join("v2.toml");
    std::fs::write(&input, list(&[("carol", &team, Some("web*"))])).expect("toml");
    let v2 = p.web.path().join("staging/v2.pem");
    assert_ok(
        &ca(&[
            "access".as_ref(),
            "--dir".as_ref(),
            p.ca.as_os_str(),
            "--in".as_ref(),
            input.as_os_str(),
            "--out".as_ref(),
            v2.as_os_str(),
            "--delegation".as_ref(),
            dlg.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
        ]),
        "delegated access list",
    );
    p.serve(&v2);
    web1.proxy.wait_log("access list version 2 loaded", WAIT);
    let live = live_as(&web1, "carol");
    // The delegation's end withdraws the list at once: carol's session
    // ends, told why, with no new list, no fetch and no challenge due.
    let out = wait_bounded(live, Duration::from_secs(60));
    assert!(
        stderr(&out).contains("no longer grants anything"),
        "{}\n{}",
        stderr(&out),
        web1.proxy.log_text()
    );
    web1.proxy
        .wait_log("event=\"access_delegation_ended\"", WAIT);
    // The root's older list, published again, cannot take its place.
    p.serve(&v1);
    web1.proxy
        .wait_log("access list version 1 is older than the loaded 2", WAIT);
    // Nor after a restart: the kept list loads withdrawn, and still bounds
    // the version.
    web1.proxy.restart();
    let log = web1
        .proxy
        .wait_log("event=\"access_delegation_ended\"", WAIT);
    assert!(!log.contains("event=\"access_cache_unusable\""), "{log}");
    web1.proxy
        .wait_log("access list version 1 is older than the loaded 2", WAIT);
    let out = run_bounded(ssh_as(&web1, "carol").arg("true"), T);
    assert!(
        !out.status.success() && stderr(&out).contains("no longer grants anything"),
        "the root's older list re-granted carol after a restart: {}\n{}",
        stderr(&out),
        web1.proxy.log_text()
    );
    assert!(
        !web1
            .proxy
            .log_text()
            .contains("access list version 1 loaded"),
        "{}",
        web1.proxy.log_text()
    );
}
