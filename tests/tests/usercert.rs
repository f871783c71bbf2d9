//! OpenSSH user certificates as identity, end to end: certificates that
//! `ssh-keygen -s` writes (Ed25519, ECDSA and RSA user CAs), a proxy with
//! `trusted_user_ca_keys`, zero standing keys, real sshd and ssh. The key
//! that signs in (carol's) is in no file on the proxy or sshd: the
//! certificate alone vouches for the principal.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ztssh_tests::zsk::ACCOUNT;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// The user CAs (`ca_ed25519`, `ca_ecdsa`, `ca_rsa`, and `ca_other`, which
/// the proxy does not trust) and carol's key, in a directory of their own.
struct Cas {
    dir: TempDir,
}

impl Cas {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        for (name, t, bits) in [
            ("ca_ed25519", "ed25519", None),
            ("ca_ecdsa", "ecdsa", Some("256")),
            ("ca_rsa", "rsa", Some("3072")),
            ("ca_other", "ed25519", None),
            ("carol", "ed25519", None),
        ] {
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-t", t, "-N", "", "-C", name]);
            if let Some(b) = bits {
                c.args(["-b", b]);
            }
            assert_ok(
                &run_bounded(c.arg("-f").arg(dir.path().join(name)), T),
                "ssh-keygen",
            );
        }
        let trusted: String = ["ca_ed25519", "ca_ecdsa", "ca_rsa"]
            .iter()
            .map(|n| read_text(&dir.path().join(format!("{n}.pub"))))
            .collect();
        std::fs::write(dir.path().join("trusted.pub"), trusted).expect("trusted");
        Self { dir }
    }

    fn trusted(&self) -> PathBuf {
        self.dir.path().join("trusted.pub")
    }

    fn carol(&self) -> PathBuf {
        self.dir.path().join("carol")
    }

    /// `ssh-keygen -s CA` over carol's key: the certificate lands in
    /// `carol-cert.pub`, where the sidecar (and ssh) look for it.
    fn sign(&self, ca: &str, serial: u32, principals: &str, validity: &str, opts: &[&str]) {
        let d = self.dir.path();
        let mut c = Command::new("ssh-keygen");
        c.arg("-q")
            .arg("-s")
            .arg(d.join(ca))
            .args([
                "-I",
                &format!("carol@corp-{serial}"),
                "-z",
                &serial.to_string(),
            ])
            .args(["-V", validity]);
        if !principals.is_empty() {
            c.args(["-n", principals]);
        }
        for o in opts {
            c.args(["-O", o]);
        }
        assert_ok(&run_bounded(c.arg(d.join("carol.pub")), T), "ssh-keygen -s");
    }
}

fn world(cas: &Cas, range: &str) -> World {
    World::builder()
        .zero_standing_keys(range)
        .proxy_toml(&format!(
            "trusted_user_ca_keys = \"{}\"\n",
            cas.trusted().display()
        ))
        .start()
}

/// ssh as [`ACCOUNT`] through ztssh with carol's key, as `principal`.
fn through(w: &World, key: &Path, principal: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(key))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={}",
            w.proxy_command_as(key, principal, "")
        ))
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg(format!("{ACCOUNT}@localhost"));
    c
}

#[test]
fn certificates_from_each_ca_type_log_in_with_no_entry_in_any_file() {
    let cas = Cas::new();
    let w = world(&cas, "127.81.0.0/16");
    // Without a certificate, carol's key is authorized nowhere.
    let out = run_bounded(through(&w, &cas.carol(), "alice").arg("true"), T);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not authorized"), "{}", stderr(&out));
    for (n, ca) in [(1, "ca_ed25519"), (2, "ca_ecdsa"), (3, "ca_rsa")] {
        cas.sign(ca, 100 + n, "alice", "-5m:+1h", &["permit-pty"]);
        let out = run_bounded(through(&w, &cas.carol(), "alice").arg("whoami"), T);
        assert_ok(&out, ca);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCOUNT);
        let log = w.proxy.log_text();
        let serial = format!("serial {}", 100 + n);
        let authorized = log
            .lines()
            .find(|l| l.contains("event=\"authorized\"") && l.contains(&serial))
            .unwrap_or_else(|| panic!("{ca}: no authorized line with the certificate: {log}"));
        assert!(
            authorized.contains(&format!("carol@corp-{}", 100 + n)),
            "{authorized}"
        );
        assert!(authorized.contains("CA SHA256:"), "{authorized}");
    }
    // The AuthorizedKeysCommand audit line names the certificate too.
    assert!(
        w.proxy
            .log_text()
            .lines()
            .any(|l| l.contains("event=\"authorized_keys\"") && l.contains("serial 103")),
        "{}",
        w.proxy.log_text()
    );
}

#[test]
fn refusals_say_which_rule_refused() {
    let cas = Cas::new();
    let w = world(&cas, "127.82.0.0/16");
    let cases: [(&str, &str, &[&str], &str, &str); 6] = [
        (
            "ca_ed25519",
            "-5m:+1h",
            &[],
            "bob",
            "principal bob is not in your certificate (alice)",
        ),
        (
            "ca_ed25519",
            "20200101:20200102",
            &[],
            "alice",
            "certificate expired at 2020-01-02",
        ),
        (
            "ca_other",
            "-5m:+1h",
            &[],
            "alice",
            "certificate signed by an untrusted CA SHA256:",
        ),
        (
            "ca_ed25519",
            "-5m:+1h",
            &["critical:no-such@example.com=x"],
            "alice",
            "unknown critical option \"no-such@example.com\"",
        ),
        (
            "ca_ed25519",
            "-5m:+1h",
            &["source-address=10.0.0.0/8"],
            "alice",
            "your address 127.0.0.1 is not in the certificate's source-address (10.0.0.0/8)",
        ),
        (
            "ca_ecdsa",
            "-5m:+1h",
            &[],
            "",
            "certificate names no principal",
        ),
    ];
    for (i, (ca, validity, opts, principal, want)) in cases.into_iter().enumerate() {
        let principals = if want.contains("no principal") {
            ""
        } else {
            "alice"
        };
        cas.sign(ca, 200 + i as u32, principals, validity, opts);
        let principal = if principal.is_empty() {
            "alice"
        } else {
            principal
        };
        let out = run_bounded(through(&w, &cas.carol(), principal).arg("true"), T);
        assert!(!out.status.success(), "{want}: logged in");
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
    }
}

#[test]
fn force_command_and_permits_reach_sshd() {
    let cas = Cas::new();
    let w = world(&cas, "127.83.0.0/16");
    cas.sign(
        "ca_ed25519",
        300,
        "alice",
        "-5m:+1h",
        &["clear", "force-command=echo forced"],
    );
    let out = run_bounded(through(&w, &cas.carol(), "alice").arg("whoami"), T);
    assert_ok(&out, "force-command");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "forced");
    // No permit-port-forwarding: sshd refuses to open a forward (-W opens
    // one at once, as -L does on its first connection).
    let forward = |serial: u32, opts: &[&str]| {
        cas.sign("ca_ed25519", serial, "alice", "-5m:+1h", opts);
        run_bounded(
            through(&w, &cas.carol(), "alice")
                .arg("-W")
                .arg(format!("127.0.0.1:{}", w.sshd.port)),
            T,
        )
    };
    let out = forward(301, &["clear", "permit-pty"]);
    assert!(
        !out.status.success(),
        "forwarding allowed: {}",
        stderr(&out)
    );
    let why = stderr(&out);
    assert!(
        why.contains("administratively prohibited") || why.contains("stdio forwarding failed"),
        "{why}"
    );
    // With it, the same forward reaches sshd (its banner comes back).
    let out = forward(302, &["clear", "permit-port-forwarding"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("SSH-2.0-"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_session_ends_when_its_certificate_does_and_the_user_is_told() {
    let cas = Cas::new();
    let w = world(&cas, "127.84.0.0/16");
    cas.sign("ca_ed25519", 400, "alice", "-5m:+15s", &["permit-pty"]);
    let live = LiveSsh::start(through(&w, &cas.carol(), "alice"));
    let mut line = String::new();
    wait_until(
        Duration::from_secs(40),
        "the session to end with its certificate",
        || match w
            .proxy
            .log_text()
            .lines()
            .find(|l| l.contains("event=\"session_terminated\""))
        {
            Some(l) => {
                line = l.to_owned();
                true
            }
            None => false,
        },
    );
    assert!(
        line.contains("reason=\"user_cert_expired\"") || line.contains("reason=user_cert_expired"),
        "{line}"
    );
    let out = live.finish();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("certificate (key id \"carol@corp-400\", serial 400"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("expired at"), "{}", stderr(&out));
}

#[test]
fn a_force_command_sshd_cannot_be_told_refuses_the_login_and_says_why() {
    // sshd's option parser reads `\"` as a quote inside `command="..."`,
    // so a force-command ending in a backslash would eat the closing quote
    // of the AuthorizedKeysCommand line: sshd drops the line unseen. The
    // proxy must refuse it itself and say why.
    let cas = Cas::new();
    let w = world(&cas, "127.85.0.0/16");
    cas.sign(
        "ca_ed25519",
        500,
        "alice",
        "-5m:+1h",
        &["clear", "force-command=echo forced\\"],
    );
    let out = run_bounded(through(&w, &cas.carol(), "alice").arg("whoami"), T);
    assert!(!out.status.success(), "logged in: {}", stderr(&out));
    w.proxy.wait_log("force-command ends in a backslash", T);
    // A backslash elsewhere (and a quote) reach sshd unchanged.
    cas.sign(
        "ca_ed25519",
        501,
        "alice",
        "-5m:+1h",
        &["clear", "force-command=printf '%s\\n' \"a\\\\z\""],
    );
    let out = run_bounded(through(&w, &cas.carol(), "alice").arg("whoami"), T);
    assert_ok(&out, "force-command with a backslash inside");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a\\z");
}

#[test]
fn a_certificate_reaches_only_the_accounts_the_policy_maps_its_principal_to() {
    // The certificate is the principal's authorization; the policy still
    // decides the accounts (alice -> ACCOUNT only).
    let cas = Cas::new();
    let w = world(&cas, "127.86.0.0/16");
    cas.sign("ca_ed25519", 600, "alice,root", "-5m:+1h", &[]);
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(&cas.carol()))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={}",
            w.proxy_command_as(&cas.carol(), "alice", "")
        ))
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .arg("true");
    let out = run_bounded(&mut c, T);
    assert!(!out.status.success(), "logged in as root: {}", stderr(&out));
    w.proxy
        .wait_log("principal alice may not use account root", T);
    let out = run_bounded(through(&w, &cas.carol(), "alice").arg("whoami"), T);
    assert_ok(&out, "the mapped account");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCOUNT);
}

/// `ssh-keygen -k` under `ca_ed25519` at `version`, revoking `spec` (a
/// KRL spec file's lines), put in place at `to` atomically.
fn write_krl(cas: &Cas, version: u64, spec: &str, to: &Path) {
    let d = cas.dir.path();
    let spec_file = d.join("krl.spec");
    std::fs::write(&spec_file, spec).expect("spec");
    let next = to.with_extension("new");
    let _ = std::fs::remove_file(&next);
    let mut c = Command::new("ssh-keygen");
    c.arg("-k")
        .arg("-f")
        .arg(&next)
        .arg("-s")
        .arg(d.join("ca_ed25519.pub"))
        .args(["-z", &version.to_string()])
        .arg(&spec_file);
    assert_ok(&run_bounded(&mut c, T), "ssh-keygen -k");
    std::fs::rename(&next, to).expect("rename");
}

#[test]
fn a_krl_revoking_a_live_certificates_serial_or_key_id_ends_its_session() {
    let cas = Cas::new();
    let krl = cas.dir.path().join("user-ca.krl");
    write_krl(&cas, 1, "serial: 9999\n", &krl);
    let w = World::builder()
        .zero_standing_keys("127.87.0.0/16")
        .proxy_toml(&format!(
            "trusted_user_ca_keys = \"{}\"\nuser_ca_krl = \"{}\"\n",
            cas.trusted().display(),
            krl.display()
        ))
        .start();
    for (version, serial, spec) in [(2, 700, "serial: 700\n"), (3, 701, "id: carol@corp-701\n")] {
        cas.sign("ca_ed25519", serial, "alice", "-5m:+1h", &["permit-pty"]);
        let live = LiveSsh::start(through(&w, &cas.carol(), "alice"));
        // Live: sshd let it in (the audit line names the certificate).
        let serial_text = format!("serial {serial}");
        wait_until(T, "sshd's login of the certificate", || {
            w.proxy
                .log_text()
                .lines()
                .any(|l| l.contains("event=\"authorized_keys\"") && l.contains(&serial_text))
        });
        write_krl(&cas, version, spec, &krl);
        let ended = format!("serial {serial}) was revoked by your SSH CA");
        wait_until(T, "the KRL to end the live session", || {
            w.proxy.log_text().contains(&ended)
        });
        let out = live.finish();
        assert!(!out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("revoked by your SSH CA's KRL"),
            "{}\n{}",
            stderr(&out),
            w.proxy.log_text()
        );
        // And the certificate logs in no more.
        let out = run_bounded(through(&w, &cas.carol(), "alice").arg("true"), T);
        assert!(!out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn a_certificate_held_only_in_ssh_agent_logs_in() {
    let cas = Cas::new();
    let w = world(&cas, "127.91.0.0/16");
    cas.sign("ca_ed25519", 800, "alice", "-5m:+1h", &["permit-pty"]);
    // ssh-add loads carol-cert.pub with carol; then both leave the disk
    // (carol.pub stays: ssh's -i names which agent key to use).
    let agent =
        ztssh_tests::agent::RealAgent::start(&w.dir.path().join("agent.sock"), &[&cas.carol()]);
    let listed = run_bounded(
        Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &agent.sock),
        T,
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ED25519-CERT"),
        "the agent holds no certificate: {}",
        String::from_utf8_lossy(&listed.stdout)
    );
    std::fs::remove_file(cas.carol()).unwrap();
    std::fs::remove_file(cas.dir.path().join("carol-cert.pub")).unwrap();
    // The sidecar signs with the agent's key (no --identity) and presents
    // the agent's certificate for it.
    let sidecar = format!(
        "{} --root {} --principal alice --verbose %h %p",
        bin("ztssh-sidecar").display(),
        w.pki.root_pub().display()
    );
    let pubkey = cas.dir.path().join("carol.pub");
    let out = run_bounded(
        Command::new("ssh")
            .args(w.direct_opts(&pubkey))
            .arg("-o")
            .arg(format!("ProxyCommand={sidecar}"))
            .arg("-p")
            .arg(w.proxy.port.to_string())
            .arg(format!("{ACCOUNT}@localhost"))
            .arg("whoami")
            .env("SSH_AUTH_SOCK", &agent.sock)
            .env("XDG_CACHE_HOME", w.dir.path().join("cache")),
        T,
    );
    assert_ok(&out, "login with the agent's certificate");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCOUNT);
    assert!(
        stderr(&out).contains("presenting ssh-agent's certificate (key id \"carol@corp-800\""),
        "{}",
        stderr(&out)
    );
    let log = w.proxy.log_text();
    assert!(
        log.lines().any(|l| l.contains("event=\"authorized\"")
            && l.contains("serial 800")
            && l.contains("carol@corp-800")),
        "{log}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Issue 21: a session lives only while its certificate does, and a newer
/// one extends it. A 20 s certificate, renewed by its CA during the
/// session (`ssh-keygen -s` again: serial 501, ten minutes), is sent by
/// the sidecar as it finds it; the proxy takes it (`user_cert_renewed`)
/// and the session lives on past the first certificate's end.
#[test]
fn a_certificate_renewed_during_the_session_keeps_it_past_the_first_ones_end() {
    let cas = Cas::new();
    let w = world(&cas, "127.86.0.0/16");
    let signed_at = unix_now();
    cas.sign("ca_ed25519", 500, "alice", "-5m:+20s", &["permit-pty"]);
    let mut live = LiveSsh::start(through(&w, &cas.carol(), "alice"));
    live.send("before\n");
    w.proxy.wait_log("event=\"authorized\"", T);
    // The CA renews carol's certificate, where ssh (and the sidecar) find it.
    cas.sign("ca_ed25519", 501, "alice", "-5m:+10m", &["permit-pty"]);
    let log = w.proxy.wait_log("event=\"user_cert_renewed\"", T);
    let renewed = log
        .lines()
        .find(|l| l.contains("event=\"user_cert_renewed\""))
        .unwrap_or_default();
    assert!(renewed.contains("serial 501"), "{renewed}");
    // Past the first certificate's end (bounded by the test's own clock).
    wait_until(T, "the first certificate's end to pass", || {
        unix_now() > signed_at + 23
    });
    live.send("after\n");
    let out = live.finish();
    assert_ok(&out, "the session past its first certificate's end");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    let log = w.proxy.log_text();
    assert!(
        !log.contains("event=\"session_terminated\""),
        "the session was ended:\n{log}"
    );
}

/// The same, with a newer certificate the proxy refuses (its critical
/// options differ from the session's: sshd applied the first one's at
/// login): the session ends at the first certificate's end, and ssh says
/// why the newer one was refused.
#[test]
fn a_renewed_certificate_with_other_options_is_refused_and_the_user_is_told() {
    let cas = Cas::new();
    let w = world(&cas, "127.87.0.0/16");
    cas.sign("ca_ed25519", 600, "alice", "-5m:+20s", &["permit-pty"]);
    let live = LiveSsh::start(through(&w, &cas.carol(), "alice"));
    w.proxy.wait_log("event=\"authorized\"", T);
    cas.sign(
        "ca_ed25519",
        601,
        "alice",
        "-5m:+10m",
        &["permit-pty", "force-command=echo other"],
    );
    w.proxy.wait_log("event=\"user_cert_refused\"", T);
    w.proxy
        .wait_log("event=\"session_terminated\"", Duration::from_secs(40));
    let out = live.finish();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the newer one sent was refused") && err.contains("critical options"),
        "{err}"
    );
}
