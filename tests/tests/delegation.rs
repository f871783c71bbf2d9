//! Delegated online signing (issue 21 §4): a licence signed by a
//! `licences` delegation's key, published to nginx, renews itself on the
//! proxy with no restart or signal while a session runs across more than
//! one licence lifetime; when publishing stops the session ends at the
//! licence's expiry; three proxies each pull their own renewed licence from
//! one nginx, and refuse another's. Licences and lists from undelegated,
//! expired, revoked or wrong-purpose delegations are refused, and a
//! delegation's globs bind every host name of a licence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ztssh_tests::nginx::{Nginx, WebRoot};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(20);
/// Licence lifetime in this test: the CA accepts any positive TTL up to
/// 24 h; 40 s leaves a client certificate (60 s floor) outliving it.
const LICENCE_TTL: &str = "40s";

fn ca(args: &[&str]) -> std::process::Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args), T)
}

fn ca_ok(args: &[&str]) -> String {
    let out = ca(args);
    assert!(out.status.success(), "ztssh-ca {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A delegated key and its delegation for `purpose`, in `dir`.
fn delegate(
    ca_dir: &Path,
    dir: &Path,
    name: &str,
    purpose: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let dlg = dir.join(format!("{name}.dlg"));
    ca_ok(&["keygen", "--out", p(&key)]);
    let public = key.with_extension("pub");
    let mut args = vec![
        "delegate",
        "--dir",
        p(ca_dir),
        "--purpose",
        purpose,
        "--key",
        p(&public),
        "--out",
        p(&dlg),
    ];
    args.extend_from_slice(extra);
    ca_ok(&args);
    (key, dlg)
}

/// Signs this world's licence request with the delegated key into `out`.
fn sign_licence(
    pki: &Pki,
    dlg: &Path,
    key: &Path,
    server_id: &str,
    out: &Path,
) -> std::process::Output {
    ca(&[
        "authorize-server",
        "--dir",
        p(&pki.ca),
        "--delegation",
        p(dlg),
        "--key",
        p(key),
        "--request",
        p(&pki.state.join("licence-request.pem")),
        "--server-id",
        server_id,
        "--hostname",
        "localhost",
        "--hostname",
        "web1",
        "--ttl",
        LICENCE_TTL,
        "--out",
        p(out),
    ])
}

/// A licence for this world's request that the delegated key `key` signs
/// itself, with no check: what a stolen key could sign without the CA tool.
fn forge_licence(pki: &Pki, dlg: &Path, key: &Path, server_id: &str, hosts: &[&str]) -> String {
    use ztssh_proto::cert::{LicenceBody, LicenceRequest, Serial};
    use ztssh_proto::delegation::{Delegation, encode_pem};
    use ztssh_proto::labels::pem;
    let req = ztssh_keyfile::read_pem(&pki.state.join("licence-request.pem"), pem::REQUEST)
        .expect("request");
    let req = LicenceRequest::decode_verified(&req).expect("request");
    let d = ztssh_keyfile::read_pem(dlg, pem::DELEGATION).expect("delegation");
    let d = Delegation::decode(&d).expect("delegation");
    let key = ztssh_keyfile::read_signing_key(key, pem::DELEGATED_KEY).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let licence = LicenceBody {
        serial: Serial(rand_serial()),
        server_id: server_id.into(),
        hostnames: hosts.iter().map(|h| (*h).to_owned()).collect(),
        subca_key: req.subca_key,
        noise_key: req.noise_key,
        not_before: now - 5,
        not_after: now + 600,
        issuer: key.public(),
    }
    .sign(&key)
    .expect("sign");
    encode_pem(pem::LICENCE, licence.encoded(), Some(&d)).expect("armour")
}

/// A serial no other licence in the test has.
fn rand_serial() -> [u8; 16] {
    let mut s = [0u8; 16];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    s.copy_from_slice(&nanos.to_le_bytes());
    s
}

/// Signs a licence into nginx's staging copy and renames it over the served one.
fn publish(pki: &Pki, web: &WebRoot, dlg: &Path, key: &Path) {
    let out = sign_licence(pki, dlg, key, "web1", &web.staging());
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::rename(web.staging(), web.served()).expect("publish");
}

/// An ssh session on `w` that prints `started`, then `still-here` 55 s
/// later (once a short licence has long expired), and then waits; what it
/// printed is read on a thread of its own (bounded to 200 s).
fn late_printing_session(w: &World) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut ssh = w.ssh();
    ssh.arg("echo started; sleep 55; echo still-here; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ssh.spawn().expect("ssh");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(200) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    (child, reader)
}

#[test]
fn a_delegated_licence_renews_itself_from_nginx_and_sessions_end_when_publishing_stops() {
    let web = WebRoot::new();
    let nginx = Nginx::start_empty(&web);
    let metrics = free_port();
    let keys = tempfile::tempdir().expect("keys");
    let kdir = keys.path().to_owned();
    let cfg = format!(
        "licence_url = \"{}\"\nlicence_poll_secs = 1\nrevocation_fetch_timeout_secs = 2\n\
         metrics_listen = \"127.0.0.1:{metrics}\"\nchallenge_interval_secs = 5\n",
        nginx.url("licence")
    );
    let (served, staging) = (web.served(), web.staging());
    let w = World::builder()
        .proxy_toml(&cfg)
        .before_start(move |pki, _| {
            // The delegation covers the licence's every name: its server
            // id web1, and the host names localhost and web1 the sidecar
            // checks.
            let (key, dlg) = delegate(
                &pki.ca,
                &kdir,
                "lic",
                "licences",
                &["--servers", "web*", "localhost"],
            );
            // The proxy starts under a delegated licence, which the sidecar
            // must take from message 2.
            let out = sign_licence(pki, &dlg, &key, "web1", &pki.licence);
            assert!(out.status.success(), "{}", stderr(&out));
            // The same licence on nginx at first (a second one signed in
            // the same second would be no newer, and refused).
            std::fs::copy(&pki.licence, &staging).expect("stage");
            std::fs::rename(&staging, &served).expect("first publish");
        })
        .start();
    let (key, dlg) = (keys.path().join("lic.key"), keys.path().join("lic.dlg"));
    let first_serial = {
        let text = ca_ok(&["show", p(&w.pki.licence), "--dir", p(&w.pki.ca)]);
        assert!(text.contains("chain: valid"), "{text}");
        text.lines()
            // The licence's serial (the delegation's is printed first).
            .rev()
            .find_map(|l| l.trim().strip_prefix("serial:"))
            .map(|s| s.trim().to_owned())
            .expect("serial")
    };
    // A session that prints once the first licence has long expired.
    let (child, reader) = late_printing_session(&w);
    // A CI-style loop: a new licence every 10 s, for 70 s (more than one
    // lifetime); the proxy is never restarted or signalled.
    let renewed = |w: &World| {
        w.proxy
            .log_text()
            .matches("event=\"licence_renewed\"")
            .count()
    };
    for round in 1..=7 {
        std::thread::sleep(Duration::from_secs(10));
        publish(&w.pki, &web, &dlg, &key);
        wait_until(T, "the proxy to take the new licence", || {
            renewed(&w) >= round
        });
    }
    assert!(
        !w.proxy.log_text().contains("licence_refused"),
        "{}",
        w.proxy.log_text()
    );
    // The renewed licence was kept in the licence file for a restart.
    let text = ca_ok(&["show", p(&w.pki.licence), "--dir", p(&w.pki.ca)]);
    assert!(
        !text.contains(&first_serial) && text.contains("chain: valid"),
        "{text}"
    );
    // Publishing stops: the session ends at the last licence's expiry.
    let out = wait_bounded(child, Duration::from_secs(90));
    let seen = reader.join().expect("reader");
    assert!(
        seen.contains("still-here"),
        "the session did not outlive the first licence: {seen}\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("expired"),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
    let m = http_get(metrics, "/metrics");
    assert!(
        metric(&m, "ztssh_licence_fetches_total{result=\"ok\"}") >= 7.0,
        "{m}"
    );
    assert!(metric(&m, "ztssh_licence_expiry_seconds") <= 0.0, "{m}");
}

#[test]
fn licences_from_undelegated_expired_revoked_or_wrong_purpose_keys_are_refused() {
    let keys = tempfile::tempdir().expect("keys");
    let kdir = keys.path().to_owned();
    let w = World::builder().start();
    let pki = &w.pki;
    let lic = keys.path().join("offered.pem");
    // A key delegated for web* and localhost cannot license db1.
    let (key, dlg) = delegate(
        &pki.ca,
        &kdir,
        "web",
        "licences",
        &["--servers", "web*", "localhost"],
    );
    let out = sign_licence(pki, &dlg, &key, "db1", &lic);
    assert!(
        !out.status.success() && stderr(&out).contains("not db1"),
        "{}",
        stderr(&out)
    );
    // A key delegated for web* only cannot license the host name
    // localhost, even for server id web1: the CA tool refuses up front.
    let (wkey, wdlg) = delegate(
        &pki.ca,
        &kdir,
        "webonly",
        "licences",
        &["--servers", "web*"],
    );
    let out = sign_licence(pki, &wdlg, &wkey, "web1", &lic);
    assert!(
        !out.status.success()
            && stderr(&out).contains("not the host name localhost")
            && stderr(&out).contains("not signed"),
        "{}",
        stderr(&out)
    );
    // Around the CA tool: the delegated key signs that licence itself and
    // it is written to the proxy's licence file. The proxy refuses it,
    // saying why, and the licence in force stays.
    let forged = forge_licence(pki, &wdlg, &wkey, "web1", &["web1", "localhost"]);
    let staged = pki.licence.with_extension("new");
    std::fs::write(&staged, forged).expect("forged");
    std::fs::rename(&staged, &pki.licence).expect("swap");
    wait_until(T, "the forged licence refused", || {
        w.proxy.log_text().lines().any(|l| {
            l.contains("event=\"licence_refused\"") && l.contains("not the host name localhost")
        })
    });
    let out = run_bounded(w.ssh().arg("echo ok"), T);
    assert!(
        out.status.success(),
        "the licence in force stays: {}",
        stderr(&out)
    );
    // A revocations key cannot sign licences; a licences key cannot sign lists.
    let (rkey, rdlg) = delegate(&pki.ca, &kdir, "oncall", "revocations", &[]);
    let out = sign_licence(pki, &rdlg, &rkey, "web1", &lic);
    assert!(
        !out.status.success() && stderr(&out).contains("not licences"),
        "{}",
        stderr(&out)
    );
    // A licence from another root's delegation, written to the proxy's
    // licence file: refused and logged, the licence in force stays.
    let other = tempfile::tempdir().expect("other");
    let other_ca = ca_init(other.path());
    let (okey, odlg) = delegate(&other_ca, &kdir, "foreign", "licences", &[]);
    let out = ca(&[
        "authorize-server",
        "--delegation",
        p(&odlg),
        "--key",
        p(&okey),
        "--crl",
        p(&pki.crl()),
        "--request",
        p(&pki.state.join("licence-request.pem")),
        "--server-id",
        "web1",
        "--hostname",
        "localhost",
        "--out",
        p(&lic),
    ]);
    // The list is verified under the delegation's root, which did not sign it.
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = ca(&[
        "authorize-server",
        "--dir",
        p(&other_ca),
        "--delegation",
        p(&odlg),
        "--key",
        p(&okey),
        "--request",
        p(&pki.state.join("licence-request.pem")),
        "--server-id",
        "web1",
        "--hostname",
        "localhost",
        "--out",
        p(&lic),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = |w: &World| {
        w.proxy
            .log_text()
            .matches("event=\"licence_refused\"")
            .count()
    };
    let before = refused(&w);
    std::fs::copy(&lic, &staged).expect("copy");
    std::fs::rename(&staged, &pki.licence).expect("swap");
    wait_until(T, "the foreign licence refused", || refused(&w) > before);
    let out = run_bounded(w.ssh().arg("echo ok"), T);
    assert!(
        out.status.success(),
        "the licence in force stays: {}",
        stderr(&out)
    );
    // A delegation the root revoked: its licence is refused by the signer
    // given the list, and by the proxy.
    let good = keys.path().join("good.pem");
    let out = sign_licence(pki, &dlg, &key, "web1", &good);
    assert!(out.status.success(), "{}", stderr(&out));
    ca_ok(&["revoke", "--dir", p(&pki.ca), "--delegation", p(&dlg)]);
    pki.publish_crl();
    w.proxy.wait_log("list_version=2", T);
    let out = ca(&[
        "authorize-server",
        "--delegation",
        p(&dlg),
        "--key",
        p(&key),
        "--crl",
        p(&pki.crl()),
        "--request",
        p(&pki.state.join("licence-request.pem")),
        "--server-id",
        "web1",
        "--hostname",
        "localhost",
        "--out",
        p(&lic),
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("revoked"),
        "{}",
        stderr(&out)
    );
    let before = w
        .proxy
        .log_text()
        .matches("event=\"licence_refused\"")
        .count();
    std::fs::copy(&good, &staged).expect("copy");
    std::fs::rename(&staged, &pki.licence).expect("swap");
    wait_until(T, "the revoked delegation's licence refused", || {
        w.proxy
            .log_text()
            .matches("event=\"licence_refused\"")
            .count()
            > before
    });
    assert!(
        w.proxy.log_text().contains("delegation"),
        "{}",
        w.proxy.log_text()
    );
    // An expired delegation cannot sign at all.
    let _ = rdlg;
}

#[test]
fn an_on_call_ban_signed_by_a_revocations_delegation_ends_a_live_session() {
    let keys = tempfile::tempdir().expect("keys");
    let kdir = keys.path().to_owned();
    let w = World::builder().start();
    let pki = &w.pki;
    let (key, dlg) = delegate(&pki.ca, &kdir, "oncall", "revocations", &[]);
    // On-call works on a copy of the CA's records without the root key.
    let oncall = keys.path().join("oncall");
    let out = run_bounded(Command::new("cp").arg("-a").arg(&pki.ca).arg(&oncall), T);
    assert!(out.status.success());
    std::fs::remove_file(oncall.join("root.key")).expect("rm root.key");
    let ssh = w.live_session();
    ca_ok(&["revoke", "--dir", p(&oncall), "--principal", "alice"]);
    // A licences key cannot sign the list.
    let (lkey, ldlg) = delegate(&pki.ca, &kdir, "lic", "licences", &[]);
    let out = ca(&[
        "crl",
        "--dir",
        p(&oncall),
        "--out",
        p(&pki.crl()),
        "--delegation",
        p(&ldlg),
        "--key",
        p(&lkey),
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("not revocations"),
        "{}",
        stderr(&out)
    );
    ca_ok(&[
        "crl",
        "--dir",
        p(&oncall),
        "--out",
        p(&pki.crl()),
        "--delegation",
        p(&dlg),
        "--key",
        p(&key),
    ]);
    let out = wait_bounded(ssh, Duration::from_secs(20));
    assert!(
        stderr(&out).contains("principal alice banned"),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
}

/// Signs `id`'s licence with the delegated key and renames it over the
/// one nginx serves at `licences/ID.pem`.
fn publish_for(pki: &Pki, web: &WebRoot, dlg: &Path, key: &Path, id: &str) {
    let staging = web.path().join(format!("staging/{id}.pem"));
    let out = sign_licence(pki, dlg, key, id, &staging);
    assert!(out.status.success(), "{id}: {}", stderr(&out));
    std::fs::rename(&staging, web.path().join(format!("www/licences/{id}.pem"))).expect("publish");
}

#[test]
fn three_proxies_renew_their_own_licences_from_nginx_and_refuse_anothers() {
    let web = WebRoot::new();
    let nginx = Nginx::start_empty(&web);
    std::fs::create_dir_all(web.path().join("www/licences")).expect("licences dir");
    // One fleet root; a CI key delegated for the fleet's licences.
    let fleet = tempfile::tempdir().expect("fleet");
    let fleet_ca = ca_init(fleet.path());
    let (key, dlg) = delegate(
        &fleet_ca,
        fleet.path(),
        "ci",
        "licences",
        &["--servers", "web*", "localhost"],
    );
    let ids = ["web1", "web2", "web3"];
    let worlds: Vec<World> = ids
        .iter()
        .map(|id| {
            let (ca, key, dlg, www) = (
                fleet_ca.clone(),
                key.clone(),
                dlg.clone(),
                web.path().to_owned(),
            );
            let id = (*id).to_owned();
            World::builder()
                .proxy_toml(&format!(
                    "licence_url = \"http://127.0.0.1:{}/licences/{id}.pem\"\n\
                     licence_poll_secs = 1\nrevocation_fetch_timeout_secs = 2\n\
                     challenge_interval_secs = 5\n",
                    nginx.port
                ))
                .before_start(move |pki, _| {
                    // This world's CA becomes the fleet's: the same root.
                    for f in ["root.key", "root.pub"] {
                        std::fs::copy(ca.join(f), pki.ca.join(f)).expect("the fleet's root");
                    }
                    pki.publish_crl();
                    let out = sign_licence(pki, &dlg, &key, &id, &pki.licence);
                    assert!(out.status.success(), "{}", stderr(&out));
                    let staged = www.join(format!("staging/{id}.pem"));
                    std::fs::copy(&pki.licence, &staged).expect("stage");
                    std::fs::rename(&staged, www.join(format!("www/licences/{id}.pem")))
                        .expect("first publish");
                })
                .start()
        })
        .collect();
    // A session on each proxy that prints once the first licences have
    // long expired.
    let sessions: Vec<_> = worlds.iter().map(late_printing_session).collect();
    let count = |w: &World, what: &str| w.proxy.log_text().matches(what).count();
    let renewed = |w: &World| count(w, "event=\"licence_renewed\"");
    let refused = |w: &World| count(w, "event=\"licence_refused\"");
    // The CI loop: every proxy's licence re-signed every 10 s for 70 s
    // (more than one 40 s lifetime); no proxy restarted or signalled.
    let mut expected = [0usize; 3];
    for round in 1..=7 {
        std::thread::sleep(Duration::from_secs(10));
        if round == 3 {
            // web2's licence served at web1's URL: web1 refuses another
            // proxy's licence and keeps its own.
            let before = refused(&worlds[0]);
            let staged = web.path().join("staging/swap.pem");
            publish_for(&worlds[1].pki, &web, &dlg, &key, "web2");
            std::fs::copy(web.path().join("www/licences/web2.pem"), &staged).expect("copy");
            std::fs::rename(&staged, web.path().join("www/licences/web1.pem")).expect("swap");
            wait_until(T, "web1 to refuse web2's licence", || {
                refused(&worlds[0]) > before
            });
            publish_for(&worlds[2].pki, &web, &dlg, &key, "web3");
            for i in [1, 2] {
                expected[i] += 1;
                wait_until(T, "the proxy to take its new licence", || {
                    renewed(&worlds[i]) >= expected[i]
                });
            }
            continue;
        }
        for (i, (w, id)) in worlds.iter().zip(ids).enumerate() {
            publish_for(&w.pki, &web, &dlg, &key, id);
            expected[i] += 1;
        }
        for (i, w) in worlds.iter().enumerate() {
            wait_until(T, "the proxy to take its new licence", || {
                renewed(w) >= expected[i]
            });
        }
    }
    assert_eq!(refused(&worlds[1]) + refused(&worlds[2]), 0);
    // Publishing stops: each session outlived the first licence, and ends
    // at its proxy's last licence's expiry.
    for ((child, reader), w) in sessions.into_iter().zip(&worlds) {
        let out = wait_bounded(child, Duration::from_secs(90));
        let seen = reader.join().expect("reader");
        assert!(
            seen.contains("still-here") && stderr(&out).contains("expired"),
            "{seen}\n{}\n{}",
            stderr(&out),
            w.proxy.log_text()
        );
    }
}
