//! Zero standing keys, end to end: a real sshd with `AuthorizedKeysFile
//! none` and the lines `ztssh-proxy sshd-config` prints, so it accepts a
//! user key only when the proxy's `AuthorizedKeysCommand` socket vouches
//! for it, bound to one live session's loopback source address.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ztssh_tests::zsk::{ACCOUNT, Installed, refused};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// A private world in zero-standing-keys mode: alice and bob are
/// principals, each with a key of their own, both mapped to [`ACCOUNT`].
struct Zsk {
    world: World,
    bob: PathBuf,
}

impl Zsk {
    /// `range`: this test's `upstream_source_range`.
    fn new(range: &str) -> Self {
        let world = World::builder()
            .user("bob")
            .zero_standing_keys(range)
            .start();
        let bob = world.key("bob").to_owned();
        Self { world, bob }
    }

    fn installed(&self) -> &Installed {
        self.world.installed()
    }

    /// ssh through ztssh: `identity` signs for the sidecar as `principal`
    /// and logs in to sshd as `account`.
    fn through(&self, identity: &Path, principal: &str, inner: &Path, account: &str) -> Command {
        let w = &self.world;
        let mut c = Command::new("ssh");
        c.args(w.direct_opts(inner))
            .arg("-o")
            .arg(format!(
                "ProxyCommand={}",
                w.proxy_command_as(identity, principal, "")
            ))
            .arg("-p")
            .arg(w.proxy.port.to_string())
            .arg(format!("{account}@localhost"));
        c
    }

    /// ssh straight to sshd with `key` as [`ACCOUNT`], from `source`.
    fn direct(&self, key: &Path, source: &str) -> Command {
        let w = &self.world;
        let mut c = Command::new("ssh");
        c.args(w.direct_opts(key))
            .args(["-b", source, "-p"])
            .arg(w.sshd.port.to_string())
            .arg(format!("{ACCOUNT}@127.0.0.1"));
        c
    }

    fn proxy_log(&self) -> String {
        self.world.proxy.log_text()
    }

    /// Waits for the `n`th proxy log line with all of `parts`; returns it.
    fn wait_log(&self, n: usize, parts: &[&str]) -> String {
        let mut found = String::new();
        wait_until(T, &format!("proxy log line #{n} with {parts:?}"), || {
            let log = self.proxy_log();
            match log
                .lines()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .nth(n - 1)
            {
                Some(l) => {
                    found = l.to_owned();
                    true
                }
                None => false,
            }
        });
        found
    }

    /// The source address of the `n`th session's connection to sshd.
    fn source_of(&self, n: usize) -> String {
        let line = self.wait_log(n, &["event=\"upstream_connected\""]);
        line.split_once("source=")
            .and_then(|(_, r)| r.split_whitespace().next())
            .expect("source in upstream_connected")
            .to_owned()
    }

    /// Waits until sshd logged an accepted login as ACCOUNT from `source`.
    fn wait_accepted(&self, source: &str) {
        let want = format!("Accepted publickey for {ACCOUNT} from {source} port");
        wait_until(T, &want, || self.world.sshd.log_text().contains(&want));
    }
}

#[test]
fn sshd_config_lines_fit_this_sshd() {
    let z = Zsk::new("127.71.0.0/16");
    let lines = &z.world.sshd_head;
    for want in [
        "AuthorizedKeysFile none\n",
        "AuthorizedKeysCommandUser nobody\n",
        &format!("ListenAddress 127.0.0.1:{}\n", z.world.sshd.port),
        &format!(
            "AuthorizedKeysCommand {} authorized-keys --socket {}{} %u %t %k\n",
            z.installed().command.display(),
            z.installed().socket().display(),
            if sshd_version() >= (9, 4) {
                " --connection %C"
            } else {
                ""
            }
        ),
    ] {
        assert!(lines.contains(want), "missing {want:?} in:\n{lines}");
    }
    // OpenSSH 9.2 (Debian 12): no PerSourcePenalties directives; 9.8+
    // (tests/sshd10.sh): the session range is exempt, one address a block.
    if sshd_version() < (9, 8) {
        assert!(
            !lines.lines().any(|l| l.starts_with("PerSource")),
            "{lines}"
        );
    } else {
        assert!(
            lines.contains(
                "\nPerSourcePenaltyExemptList 127.71.0.0/16\nPerSourceNetBlockSize 32:128\n"
            ),
            "{lines}"
        );
    }
    if sshd_version() >= (9, 4) {
        assert!(lines.contains(" --connection %C %u %t %k\n"), "{lines}");
    }
    // A newer sshd gets the penalties line; an unsafe command path is refused.
    let ask = |args: &[&str]| {
        run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("sshd-config")
                .arg("--sshd")
                .arg(sshd_bin())
                .arg("--config")
                .arg(&z.world.proxy.config)
                .args(args),
            T,
        )
    };
    let command = z.installed().command.display().to_string();
    let newer = ask(&["--command", &command, "--sshd-version", "9.9"]);
    assert_ok(&newer, "sshd-config for 9.9");
    assert!(String::from_utf8_lossy(&newer.stdout).contains("\nPerSourceNetBlockSize 32:128\n"));
    assert!(
        String::from_utf8_lossy(&newer.stdout)
            .contains("\nPerSourcePenaltyExemptList 127.71.0.0/16\n"),
        "9.8+: the session range is exempt from sshd's penalties"
    );
    assert!(String::from_utf8_lossy(&newer.stdout).contains(" --connection %C %u %t %k\n"));
    let under_tmp = z.world.proxy.config.display().to_string();
    let unsafe_path = ask(&["--command", &under_tmp]);
    assert_eq!(unsafe_path.status.code(), Some(64));
    assert!(
        stderr(&unsafe_path).contains("root-owned"),
        "{}",
        stderr(&unsafe_path)
    );
}

#[test]
fn sshd_config_adds_host_certificates_and_the_krl_that_sshd_accepts() {
    let z = Zsk::new("127.73.0.0/16");
    let w = &z.world;
    let dir = w.dir.path().join("trust");
    std::fs::create_dir(&dir).expect("dir");
    let host_key = sshd_host_key(&dir);
    let ca = w.pki.ca.display().to_string();
    let cert = dir.join("ssh_host_ed25519_key-cert.pub");
    let krl = dir.join("revoked.krl");
    let ca_tool = |args: &[&str]| {
        let out = run_bounded(Command::new(bin("ztssh-ca")).args(args), T);
        assert_ok(&out, &args.join(" "));
    };
    let pub_key = host_key.with_extension("pub").display().to_string();
    let cert_s = cert.display().to_string();
    ca_tool(&[
        "sign-host",
        "--dir",
        &ca,
        "--host-key",
        &pub_key,
        "--hostname",
        "localhost",
        "--out",
        &cert_s,
    ]);
    let base = read_text(&w.proxy.config);
    let with = |extra: &str| {
        let path = dir.join("proxy.toml");
        std::fs::write(&path, format!("{base}{extra}")).expect("config");
        run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("sshd-config")
                .arg("--sshd")
                .arg(sshd_bin())
                .arg("--config")
                .arg(&path)
                .arg("--command")
                .arg(&z.installed().command),
            T,
        )
    };
    let extra = format!(
        "sshd_host_certificates = [\"{}\"]\nsshd_revoked_keys = \"{}\"\n",
        cert.display(),
        krl.display()
    );
    // No KRL yet: sshd would refuse every key, so nothing is printed.
    let missing = with(&extra);
    assert_eq!(missing.status.code(), Some(64), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("sshd refuses every key while it cannot read this file"),
        "{}",
        stderr(&missing)
    );
    ca_tool(&["krl", "--dir", &ca, "--out", &krl.display().to_string()]);
    let out = with(&extra);
    assert_ok(&out, "sshd-config with host certificates and a KRL");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        format!("\nHostCertificate {}\n", cert.display()),
        format!("\nRevokedKeys {}\n", krl.display()),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{lines}");
    }
    // The real sshd takes them as they are.
    let sshd_cfg = dir.join("sshd_config");
    std::fs::write(
        &sshd_cfg,
        format!("HostKey {}\nPidFile none\n{lines}", host_key.display()),
    )
    .expect("sshd_config");
    let t = run_bounded(
        Command::new(sshd_bin()).arg("-t").arg("-f").arg(&sshd_cfg),
        T,
    );
    assert_ok(&t, "sshd -t with the printed lines");
    // A user certificate or a file that is not a KRL is refused by name.
    std::fs::write(&krl, b"not a krl\n").expect("krl");
    let bad = with(&extra);
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        stderr(&bad).contains("not an OpenSSH KRL"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn keys_work_only_through_a_live_session_for_mapped_accounts() {
    let z = Zsk::new("127.72.0.0/16");
    let w = &z.world;
    // No session: the key alone opens nothing.
    refused(
        &run_bounded(&mut z.direct(&w.alice, "127.0.0.1"), T),
        "direct, no session",
    );
    z.wait_log(
        1,
        &["event=\"authorized_keys_refused\"", "session=\"none\""],
    );
    // Through ztssh, alice logs in as the account her principal maps to.
    let out = run_bounded(
        z.through(&w.alice, "alice", &w.alice, ACCOUNT)
            .arg("whoami"),
        T,
    );
    assert_ok(&out, "alice through ztssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCOUNT);
    let first = z.source_of(1);
    assert!(first.starts_with("127.72."), "{first}");
    z.wait_accepted(&first);
    // While a session of hers is live, her key from 127.0.0.1 is refused.
    let live = LiveSsh::start(z.through(&w.alice, "alice", &w.alice, ACCOUNT));
    let second = z.source_of(2);
    assert_ne!(first, second, "each session has an address of its own");
    z.wait_accepted(&second);
    refused(
        &run_bounded(&mut z.direct(&w.alice, "127.0.0.1"), T),
        "direct, session live",
    );
    // What sshd is told now (asked as root, through the config file): her
    // key, bound to the live session's address only; the first session is
    // over and gone from the answer.
    z.wait_log(1, &["event=\"session_closed\""]);
    let asked = run_bounded(
        Command::new(&z.installed().command)
            .arg("authorized-keys")
            .arg("--config")
            .arg(&w.proxy.config)
            .arg(ACCOUNT),
        T,
    );
    assert_ok(&asked, "authorized-keys --config");
    let alice_key = read_text(&w.alice.with_extension("pub"));
    let alice_key: Vec<&str> = alice_key.split_whitespace().take(2).collect();
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout),
        format!("from=\"{second}\" {}\n", alice_key.join(" "))
    );
    assert!(
        w.sshd.log_text().contains("Refused by key options"),
        "sshd saw the key, bound elsewhere"
    );
    // With sshd's %C (9.4+, passed here by hand on 9.2), only the live
    // session's own connection, address and port, gets her key.
    let line = z.wait_log(2, &["event=\"upstream_connected\""]);
    let port: u16 = line
        .split_once("local_port=")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("local_port in upstream_connected");
    let on = |client: &str, port: u16| {
        let asked = run_bounded(
            Command::new(&z.installed().command)
                .arg("authorized-keys")
                .arg("--config")
                .arg(&w.proxy.config)
                .arg("--connection")
                // %C as OpenSSH 10.0 sends it: the server's end first.
                .arg(format!("127.0.0.1 {} {client} {port}", w.sshd.port))
                .arg(ACCOUNT),
            T,
        );
        assert_ok(&asked, "authorized-keys --connection");
        String::from_utf8_lossy(&asked.stdout).into_owned()
    };
    assert_eq!(
        on(&second, port),
        format!("from=\"{second}\" {}\n", alice_key.join(" "))
    );
    assert_eq!(on(&second, port ^ 1), "", "another port of that address");
    assert_eq!(on("127.0.0.1", port), "", "another address");
    // Her principal maps to ACCOUNT only: root is refused, and the proxy
    // says which session asked.
    refused(
        &run_bounded(
            z.through(&w.alice, "alice", &w.alice, "root").arg("true"),
            T,
        ),
        "alice as root",
    );
    let line = z.wait_log(
        1,
        &[
            "event=\"authorized_keys_refused\"",
            "account=\"root\"",
            "principal=alice",
        ],
    );
    assert!(line.contains("may not use account root"), "{line}");
    assert!(!line.contains("session=\"none\""), "{line}");
    let out = live.finish();
    assert!(out.status.success(), "live session: {}", stderr(&out));
}

#[test]
fn a_key_is_good_only_on_its_own_sessions_connection() {
    let z = Zsk::new("127.73.0.0/16");
    let w = &z.world;
    let bob_live = LiveSsh::start(z.through(&z.bob, "bob", &z.bob, ACCOUNT));
    let bobs = z.source_of(1);
    z.wait_accepted(&bobs);
    let answered_for_bob = z.proxy_log().matches("event=\"authorized_keys\"").count();
    // alice's session (her tunnel, her identity) offers bob's key to sshd:
    // the proxy vouches for that key only from bob's session's address.
    let out = run_bounded(z.through(&w.alice, "alice", &z.bob, ACCOUNT).arg("true"), T);
    refused(&out, "bob's key on alice's connection");
    let alices = z.source_of(2);
    assert_ne!(alices, bobs);
    // The proxy did vouch for bob's key (bob's session is live), and sshd
    // refused it on alice's connection for the address it is bound to.
    let answered = z.proxy_log().matches("event=\"authorized_keys\"").count();
    assert!(
        answered > answered_for_bob,
        "the proxy answered for bob's key again"
    );
    assert!(
        w.sshd.log_text().contains("Refused by key options"),
        "sshd refused bob's key by its from= option"
    );
    assert!(
        !w.sshd
            .log_text()
            .contains(&format!("Accepted publickey for {ACCOUNT} from {alices}")),
        "nothing was accepted on alice's connection"
    );
    drop(bob_live);
}

#[test]
fn after_a_ban_the_sessions_address_gets_no_key() {
    let z = Zsk::new("127.74.0.0/16");
    let w = &z.world;
    let live = LiveSsh::start(z.through(&w.alice, "alice", &w.alice, ACCOUNT));
    let addr = z.source_of(1);
    z.wait_accepted(&addr);
    // Control: while the session lives, sshd accepts its key from its
    // address. (Without %C, which needs sshd 9.4, a local process that holds
    // alice's private key and binds that address could log in too; see
    // docs/THREAT_MODEL.md.)
    assert_ok(
        &run_bounded(z.direct(&w.alice, &addr).arg("true"), T),
        "control from the session's address",
    );
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    z.wait_log(1, &["event=\"session_terminated\"", "principal_banned"]);
    refused(
        &run_bounded(z.direct(&w.alice, &addr).arg("true"), T),
        "the session's address after the ban",
    );
    let _ = live.finish();
}

#[test]
fn only_root_and_the_command_user_may_ask() {
    let z = Zsk::new("127.75.0.0/16");
    let ask_as = |user: &str| {
        run_bounded(
            Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&z.installed().command)
                .arg("authorized-keys")
                .arg("--socket")
                .arg(z.installed().socket())
                .arg(ACCOUNT),
            T,
        )
    };
    let nobody = ask_as("nobody");
    assert!(
        nobody.status.success(),
        "the command user may ask: {}",
        stderr(&nobody)
    );
    let daemon = ask_as("daemon");
    assert!(!daemon.status.success(), "another user may not");
    assert!(daemon.stdout.is_empty());
    // Even when the socket's mode lets anyone connect (a proxy that is not
    // root cannot give it away), the peer's uid decides.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        z.installed().socket(),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod socket");
    let daemon = ask_as("daemon");
    assert!(daemon.stdout.is_empty(), "nothing for another user");
    let line = z.wait_log(1, &["event=\"authorized_keys_forbidden\""]);
    assert!(line.contains("uid=1 "), "{line}");
}

#[test]
fn check_explains_zero_standing_keys_mistakes() {
    let dir = tempfile::Builder::new()
        .prefix("ztssh-zsk-check-")
        .tempdir()
        .expect("tempdir");
    let pki = Pki::create(dir.path(), &["web1"]);
    let key = user_key(dir.path(), "alice");
    let principals = format!("alice {}", read_text(&key.with_extension("pub")));
    let sock = dir.path().join("akc.sock");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[principal.alice]\n\naccounts = [\"alice\", \"-rf\"]\n",
    )
    .expect("policy");
    let range = "upstream_source_range = \"127.77.0.0/16\"\n";
    let cases = [
        (
            "upstream_source_range = \"127.0.0.0/16\"\n".to_owned(),
            "contains 127.0.0.1".to_owned(),
        ),
        (
            "upstream_source_range = \"::1/128\"\n".to_owned(),
            "IPv6 has a single loopback address".to_owned(),
        ),
        (
            "upstream_source_range = \"127.77.0.0/24\"\n".to_owned(),
            "fewer than max_connections (1024)".to_owned(),
        ),
        (
            format!(
                "authorized_keys_socket = \"{}\"\nauthorized_keys_command_user = \"nobody\"\n",
                sock.display()
            ),
            "authorized_keys_socket needs upstream_source_range".to_owned(),
        ),
        (
            format!("{range}authorized_keys_socket = \"{}\"\n", sock.display()),
            "needs authorized_keys_command_user".to_owned(),
        ),
        (
            format!(
                "{range}authorized_keys_socket = \"/nonexistent/akc.sock\"\nauthorized_keys_command_user = \"nobody\"\n"
            ),
            "directory /nonexistent does not exist".to_owned(),
        ),
        (
            format!(
                "{range}authorized_keys_socket = \"{}\"\nauthorized_keys_command_user = \"no-such-user-zsk\"\n",
                sock.display()
            ),
            "\"no-such-user-zsk\": no such user".to_owned(),
        ),
        (
            format!("policy = \"{}\"\n", policy.display()),
            format!(
                "{}:3: principal.alice.accounts: \"-rf\" is not an account name",
                policy.display()
            ),
        ),
    ];
    for (extra, want) in cases {
        let (_, config) = Proxy::configure(dir.path(), &pki, 22, &principals, &extra);
        let out = run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(&config),
            T,
        );
        assert_eq!(out.status.code(), Some(64), "{extra}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&want),
            "{extra}\n got: {}\nwant: {want}",
            stderr(&out)
        );
    }
}
