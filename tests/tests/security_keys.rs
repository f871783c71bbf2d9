//! FIDO security keys end to end: real ssh through the sidecar to a real
//! sshd, the key held by a software authenticator behind the ssh-agent
//! protocol (tests/src/skagent.rs) that signs with the flags each test
//! chooses. A touch at login, and again only when the principal's
//! re-verification interval runs out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use ztssh_tests::skagent::{SkAgent, UP, UV};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
const FAST: &str = "challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 4\ninsecure_short_certs = true\n";

/// A world with `policy` and `extra` proxy lines, alice authorized with
/// the security key a software authenticator holds, signing with `flags`.
fn world(policy: &str, extra: &str, flags: u8) -> (World, SkAgent) {
    let w = World::builder()
        .file("policy.toml", policy)
        .proxy_toml(&format!("policy = \"{{dir}}/policy.toml\"\n{extra}"))
        .start();
    let agent = SkAgent::start(&w.dir.path().join("sk.sock"), [7; 32], flags);
    let path = w.dir.path().join("principals");
    let mut text = read_text(&path);
    text.push_str(&format!(
        "alice {}\n",
        agent.public.to_openssh().expect("openssh")
    ));
    std::fs::write(&path, text).expect("principals");
    w.proxy.sighup();
    let deadline = std::time::Instant::now() + T;
    while !w
        .proxy
        .log_text()
        .contains("event=\"reload\" result=\"ok\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {}",
            w.proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (w, agent)
}

/// `ssh root@localhost` logging in to sshd with alice's file key, the
/// sidecar signing with the security key in the agent.
fn ssh(w: &World, agent: &SkAgent) -> Command {
    let mut c = Command::new("ssh");
    c.env("XDG_CACHE_HOME", w.dir.path().join("cache"));
    c.args(w.direct_opts(&w.alice));
    c.arg("-o").arg(format!(
        "ProxyCommand={} {}--root {} --principal alice %h %p",
        bin("ztssh-sidecar").display(),
        if w.short_certs {
            "--insecure-short-certs "
        } else {
            ""
        },
        w.pki.root_pub().display()
    ));
    c.arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .env("SSH_AUTH_SOCK", &agent.sock)
        // The key that worked is remembered under the world's directory,
        // never the runner's home.
        .env("XDG_CACHE_HOME", w.dir.path().join("cache"));
    c
}

fn fp(agent: &SkAgent) -> String {
    agent
        .public
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

#[test]
fn a_touched_security_key_logs_in_and_renews_without_another_touch() {
    let (w, agent) = world("", FAST, UP);
    let mut live = LiveSsh::start(ssh(&w, &agent));
    live.send("before\n");
    wait_until(T, "three renewals", || {
        count(&w.proxy.log_text(), "event=\"cert_renewed\"") >= 3
    });
    live.send("after\n");
    let out = live.finish();
    assert_ok(&out, "security key session");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    // One touch: the login. The renewals went without the key.
    assert_eq!(agent.signs(), 1);
    assert!(w.proxy.log_text().contains(&fp(&agent)));
}

#[test]
fn a_security_key_signature_without_a_touch_is_refused() {
    let (w, agent) = world("", "", 0);
    let mut cmd = ssh(&w, &agent);
    cmd.arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first,
        format!(
            "ztssh: web1 refused the session: principal alice: key {}: security key signature without user presence (the key was not touched)",
            fp(&agent)
        )
    );
    assert!(!w.proxy.log_text().contains("upstream_connected"));
}

#[test]
fn a_pin_is_needed_only_where_the_policy_requires_it() {
    let (w, agent) = world("[principal.alice]\nrequire_verification = true\n", "", UP);
    let mut cmd = ssh(&w, &agent);
    cmd.arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first,
        format!(
            "ztssh: web1 refused the session: principal alice: key {}: security key signature without user verification (no PIN), which the policy requires",
            fp(&agent)
        )
    );
    agent.set_flags(UP | UV);
    let mut cmd = ssh(&w, &agent);
    cmd.arg("echo ok");
    let out = run_bounded(&mut cmd, T);
    assert_ok(&out, "touch and PIN");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn after_the_reverification_interval_a_renewal_needs_a_touch() {
    // Certificates live 4 s; alice re-verifies every 6 s.
    let (w, agent) = world("[principal.alice]\nreverify_interval_secs = 6\n", FAST, UP);
    let mut live = LiveSsh::start(ssh(&w, &agent));
    live.send("before\n");
    // Renewals with and without a touch: at least one more signature than
    // the login, and renewals in between that needed none.
    wait_until(T, "a touch at re-verification and renewals", || {
        agent.signs() >= 2 && count(&w.proxy.log_text(), "event=\"cert_renewed\"") >= 4
    });
    live.send("after\n");
    let out = live.finish();
    assert_ok(&out, "re-verified session");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    let renewals = count(&w.proxy.log_text(), "event=\"cert_renewed\"");
    assert!(
        (agent.signs() as usize) <= renewals,
        "fewer touches ({}) than renewals ({renewals})",
        agent.signs()
    );

    // Once the interval runs out, a renewal the key signed without a
    // touch is refused, and the session ends.
    let (w, agent) = world("[principal.alice]\nreverify_interval_secs = 6\n", FAST, UP);
    let mut cmd = ssh(&w, &agent);
    cmd.arg("sleep 60");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    wait_until(T, "login", || agent.signs() == 1);
    agent.set_flags(0);
    let out = wait_bounded(child, T);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "session terminated by web1: renewal refused: user key: security key signature without user presence (the key was not touched)"
        ),
        "{err}"
    );
}

/// A world trusting a user CA, and the software security key with a
/// `verify-required` certificate from `ssh-keygen -s` beside its public
/// half (`sk.pub`, `sk-cert.pub`), where the sidecar finds it.
fn verify_required_world(policy: &str, flags: u8) -> (World, SkAgent, std::path::PathBuf) {
    let cas = TempDir::new().expect("tempdir");
    let ca = cas.path().join("ca");
    assert_ok(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "user-ca", "-f"])
                .arg(&ca),
            T,
        ),
        "ssh-keygen",
    );
    let w = World::builder()
        .file("policy.toml", policy)
        .file("user_ca.pub", &read_text(&ca.with_extension("pub")))
        .proxy_toml(&format!(
            "policy = \"{{dir}}/policy.toml\"\ntrusted_user_ca_keys = \"{{dir}}/user_ca.pub\"\n{FAST}"
        ))
        .start();
    let agent = SkAgent::start(&w.dir.path().join("sk.sock"), [7; 32], flags);
    let public = w.dir.path().join("sk.pub");
    std::fs::write(&public, agent.public.to_openssh().expect("openssh")).expect("sk.pub");
    assert_ok(
        &run_bounded(
            Command::new("ssh-keygen")
                .arg("-q")
                .arg("-s")
                .arg(&ca)
                .args([
                    "-I",
                    "alice@fido",
                    "-z",
                    "31",
                    "-n",
                    "alice",
                    "-V",
                    "-5m:+1h",
                ])
                .args(["-O", "verify-required"])
                .arg(&public),
            T,
        ),
        "ssh-keygen -s",
    );
    (w, agent, public)
}

/// [`ssh`] with the sidecar told `--identity sk.pub`: the security key in
/// the agent signs, and `sk-cert.pub` travels with it.
fn ssh_with_cert(w: &World, agent: &SkAgent, public: &std::path::Path) -> Command {
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(&w.alice));
    c.arg("-o").arg(format!(
        "ProxyCommand={} --insecure-short-certs --root {} --identity {} --principal alice %h %p",
        bin("ztssh-sidecar").display(),
        w.pki.root_pub().display(),
        public.display()
    ));
    c.arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@localhost")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .env("XDG_CACHE_HOME", w.dir.path().join("cache"));
    c
}

#[test]
fn a_verify_required_certificate_needs_the_pin_at_login_and_at_every_reverification() {
    // A touch without the PIN: refused at login, saying why.
    let (w, agent, public) =
        verify_required_world("[principal.alice]\nreverify_interval_secs = 6\n", UP);
    let out = run_bounded(ssh_with_cert(&w, &agent, &public).arg("true"), T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("your certificate has verify-required"),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
    // With the PIN it logs in, the certificate vouching (serial 31).
    agent.set_flags(UP | UV);
    let child = ssh_with_cert(&w, &agent, &public)
        .arg("sleep 60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    let signs = agent.signs();
    wait_until(T, "the login with the certificate", || {
        w.proxy
            .log_text()
            .lines()
            .any(|l| l.contains("event=\"authorized\"") && l.contains("serial 31"))
    });
    // At re-verification the key signs with a touch but no PIN, though the
    // principal's policy asks none: the certificate does, and the session ends.
    wait_until(T, "login signature", || agent.signs() > signs);
    agent.set_flags(UP);
    let out = wait_bounded(child, T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("verify-required and this signature carries no user verification"),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
}
