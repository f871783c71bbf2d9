//! Every key users hold, end to end: real ssh through the sidecar to a real
//! sshd with RSA and ECDSA key files and ssh-agent keys, the agent key the
//! proxy accepts found behind refused ones, and keys ztssh refuses
//! explained in the exact words the user reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ztssh_tests::agent::RealAgent;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// A key made by ssh-keygen with `args` (type and size).
fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name])
            .args(args)
            .arg("-f")
            .arg(&path),
        T,
    );
    assert_ok(&out, "ssh-keygen");
    path
}

fn public(key: &Path) -> String {
    read_text(&key.with_extension("pub")).trim().to_owned()
}

fn fingerprint(key: &Path) -> String {
    ssh_key::PublicKey::from_openssh(&public(key))
        .expect("public key")
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

/// Authorizes `keys` for alice on the proxy (the principals file is
/// re-read on SIGHUP) and waits for the reload.
fn authorize(w: &World, keys: &[&Path]) {
    let path = w.dir.path().join("principals");
    let mut text = read_text(&path);
    for k in keys {
        text.push_str(&format!("alice {}\n", public(k)));
    }
    std::fs::write(&path, text).expect("principals");
    let before = count(&w.proxy.log_text(), "event=\"reload\" result=\"ok\"");
    w.proxy.sighup();
    wait_until(T, "reload", || {
        count(&w.proxy.log_text(), "event=\"reload\" result=\"ok\"") > before
    });
}

/// `ssh root@localhost` logging in to sshd with alice's key, the sidecar
/// signing with `sidecar_flags` (an `--identity`, or none for the agent).
fn ssh_via(w: &World, sidecar: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(&w.alice));
    c.arg("-o").arg(format!(
        "ProxyCommand={} {}--root {} --principal alice {sidecar} %h %p",
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
        .arg("root@localhost");
    // The sidecar remembers the agent key that worked under the world's
    // directory, never the user's home.
    c.env("XDG_CACHE_HOME", w.dir.path().join("cache"));
    c
}

/// A real ssh-agent holding `keys`, in that order, in the world's directory.
fn agent_with(w: &World, keys: &[&Path]) -> RealAgent {
    RealAgent::start(&w.dir.path().join("agent.sock"), keys)
}

fn first_line(out: &std::process::Output) -> String {
    stderr(out).lines().next().unwrap_or_default().to_owned()
}

fn echo_ok(mut cmd: Command, what: &str) {
    cmd.arg("echo ok");
    let out = run_bounded(&mut cmd, T);
    assert_ok(&out, what);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{what}");
}

#[test]
fn rsa_and_ecdsa_key_files_log_in_through_the_sidecar() {
    let w = World::start();
    let d = w.dir.path();
    let keys = [
        keygen(d, "rsa3072", &["-t", "rsa", "-b", "3072"]),
        keygen(d, "rsa2048", &["-t", "rsa", "-b", "2048"]),
        keygen(d, "p256", &["-t", "ecdsa", "-b", "256"]),
        keygen(d, "p384", &["-t", "ecdsa", "-b", "384"]),
        keygen(d, "p521", &["-t", "ecdsa", "-b", "521"]),
    ];
    authorize(&w, &keys.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    for k in &keys {
        echo_ok(
            ssh_via(&w, &format!("--identity {}", k.display())),
            &k.display().to_string(),
        );
        let log = w.proxy.log_text();
        assert!(log.contains(&fingerprint(k)), "{log}");
    }
    assert!(!w.proxy.log_text().contains("authorization_denied"));
}

#[test]
fn an_rsa_4096_session_renews_its_certificate_with_the_user_key() {
    // RSA-4096 is the largest accepted key: its renewal signature goes in
    // the bare form to fit a RENEW record.
    let w = World::builder()
        .proxy_toml("challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 4\ninsecure_short_certs = true\n")
        .start();
    let rsa = keygen(w.dir.path(), "rsa4096", &["-t", "rsa", "-b", "4096"]);
    authorize(&w, &[&rsa]);
    let mut live = LiveSsh::start(ssh_via(&w, &format!("--identity {}", rsa.display())));
    live.send("before\n");
    wait_until(T, "two renewals", || {
        count(&w.proxy.log_text(), "event=\"cert_renewed\"") >= 2
    });
    live.send("after\n");
    let out = live.finish();
    assert_ok(&out, "RSA-4096 session");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    assert!(!w.proxy.log_text().contains("session_terminated"));
}

#[test]
fn agent_rsa_and_ecdsa_keys_sign_with_sha2_and_log_in() {
    let w = World::start();
    let d = w.dir.path();
    let rsa = keygen(d, "rsa", &["-t", "rsa", "-b", "3072"]);
    let p256 = keygen(d, "p256", &["-t", "ecdsa", "-b", "256"]);
    let p521 = keygen(d, "p521", &["-t", "ecdsa", "-b", "521"]);
    authorize(&w, &[&rsa, &p256, &p521]);
    for k in [&rsa, &p256, &p521] {
        // The agent holds this key alone; the sidecar signs through it (an
        // RSA key asked for rsa-sha2-512: SHA-1 would be refused).
        let agent = agent_with(&w, &[k]);
        let mut cmd = ssh_via(&w, "");
        // Nothing remembered: the key that worked last time has left this
        // agent, and the sidecar would offer no other unless asked.
        cmd.env("SSH_AUTH_SOCK", &agent.sock)
            .env("XDG_CACHE_HOME", "/dev/null");
        echo_ok(cmd, &k.display().to_string());
        assert!(w.proxy.log_text().contains(&fingerprint(k)));
        drop(agent);
        let _ = std::fs::remove_file(w.dir.path().join("agent.sock"));
    }
    // The public half names the agent's key, as ssh's IdentitiesOnly.
    let agent = agent_with(&w, &[&w.alice, &p256]);
    let mut cmd = ssh_via(&w, &format!("--identity {}.pub", p256.display()));
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    echo_ok(cmd, "p256 named by its .pub");
    assert!(!w.proxy.log_text().contains("authorization_denied"));
}

#[test]
fn the_agent_key_the_proxy_accepts_is_found_behind_refused_ones() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    // [an unauthorized Ed25519, an unauthorized ECDSA, the authorized Ed25519]
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    // Asked for: a first login offers the agent's first key alone.
    let mut cmd = ssh_via(&w, "-v --try-agent-keys");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    cmd.arg("echo ok");
    let out = run_bounded(&mut cmd, T);
    assert_ok(&out, "third agent key");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let err = stderr(&out);
    for k in [&mallory, &ecdsa] {
        assert!(
            err.contains(&format!("web1 refused key {}", fingerprint(k))),
            "{err}"
        );
    }
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"authorization_denied\""), 2, "{log}");
    assert_eq!(count(&log, "event=\"upstream_connected\""), 1, "{log}");
}

#[test]
fn logins_that_find_the_right_agent_key_third_never_lock_out_the_source() {
    // Each login costs two refused keys before the right one. Those keys
    // signed the handshake (the client holds them; they are just not
    // authorized): soft failures, which never add up to a lockout, however
    // many logins in a row.
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    for i in 1..=4 {
        let mut cmd = ssh_via(&w, "--try-agent-keys");
        // No cache for the key that worked (it cannot be written): every
        // login tries the agent's keys in order.
        cmd.env("SSH_AUTH_SOCK", &agent.sock)
            .env("XDG_CACHE_HOME", "/dev/null");
        echo_ok(cmd, &format!("login {i}, third agent key"));
    }
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"authorization_denied\""), 8, "{log}");
    assert_eq!(count(&log, "event=\"upstream_connected\""), 4, "{log}");
    assert!(!log.contains("event=\"source_penalised\""), "{log}");
}

#[test]
fn the_agent_key_that_worked_is_tried_first_next_time() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    let login = |flags: &str, what: &str| {
        let mut cmd = ssh_via(&w, flags);
        cmd.env("SSH_AUTH_SOCK", &agent.sock);
        echo_ok(cmd, what);
    };
    // The authorized key is the agent's third: found only when asked for.
    login("--try-agent-keys", "first login");
    let denied = |w: &World| count(&w.proxy.log_text(), "event=\"authorization_denied\"");
    assert_eq!(denied(&w), 2);
    let cache = d.join("cache/ztssh/agent-keys");
    let text = read_text(&cache);
    assert_eq!(
        text,
        format!(
            "alice server_id=web1 {fp}\nalice localhost:{} {fp}\n",
            w.proxy.port,
            fp = fingerprint(&w.alice)
        )
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache)
        .expect("cache")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The next logins go straight to the key that worked.
    login("", "second login");
    login("", "third login");
    assert_eq!(denied(&w), 2);
    assert_eq!(
        count(&w.proxy.log_text(), "event=\"upstream_connected\""),
        3
    );
}

#[test]
fn when_no_agent_key_is_accepted_every_key_tried_is_listed() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let weak = keygen(d, "weak", &["-t", "rsa", "-b", "1024"]);
    let agent = agent_with(&w, &[&mallory, &weak, &ecdsa]);
    let mut cmd = ssh_via(&w, "--try-agent-keys");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    cmd.arg("echo ok");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let (m, e, k) = (
        fingerprint(&mallory),
        fingerprint(&ecdsa),
        fingerprint(&weak),
    );
    let expected = format!(
        "ztssh: web1 refused every key tried for principal alice:\n  \
         {m} (ED25519, mallory): principal alice is not authorized with key {m} on web1\n  \
         {e} (ECDSA-P256, ecdsa): principal alice is not authorized with key {e} on web1\n  \
         skipped {k} (RSA-1024, weak): RSA key of 1024 bits refused: ztssh accepts RSA keys of 2048 to 4096 bits\n"
    );
    let err = stderr(&out);
    assert!(err.contains(&expected), "{err}\nexpected:\n{expected}");
}

#[test]
fn a_1024_bit_rsa_key_is_refused_with_the_exact_message() {
    let w = World::start();
    let weak = keygen(w.dir.path(), "weak", &["-t", "rsa", "-b", "1024"]);
    let mut cmd = ssh_via(&w, &format!("--identity {}", weak.display()));
    cmd.arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    // ssh's own words about the closed ProxyCommand follow the sidecar's.
    assert_eq!(
        first_line(&out),
        format!(
            "ztssh: cannot use identity {}: RSA key of 1024 bits refused: ztssh accepts RSA keys of 2048 to 4096 bits",
            weak.display()
        )
    );
    // Refused before any connection: the proxy saw nothing.
    assert!(!w.proxy.log_text().contains("connection_accepted"));
    // The same key held by the agent, alone.
    let agent = agent_with(&w, &[&weak]);
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    assert_eq!(
        first_line(&out),
        format!(
            "ztssh: ssh-agent holds no key ztssh can use ({} (RSA-1024, weak): RSA key of 1024 bits refused: \
             ztssh accepts RSA keys of 2048 to 4096 bits); run ssh-add, or pass --identity",
            fingerprint(&weak)
        )
    );
}

/// A sidecar.toml in the world's directory, and the sidecar flag naming it.
fn sidecar_toml(w: &World, name: &str, text: &str) -> String {
    let path = w.dir.path().join(name);
    std::fs::write(&path, text).expect("sidecar.toml");
    format!("--config {}", path.display())
}

fn accepted(w: &World) -> usize {
    count(&w.proxy.log_text(), "event=\"connection_accepted\"")
}

/// Waits until the proxy has logged `n` connections in all (its log
/// thread may write a line just after the client is done).
fn wait_accepted(w: &World, n: usize) {
    wait_until(T, &format!("{n} connections"), || accepted(w) >= n);
    assert_eq!(accepted(w), n);
}

#[test]
fn a_server_sees_only_the_keys_sidecar_toml_names_for_it() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    // The authorized key last: without a map, it is found third.
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    let others = [fingerprint(&mallory), fingerprint(&ecdsa)];
    // By agent fingerprint, the pattern in another case than %h, after a
    // block whose exclusion skips this host.
    let by_fp = sidecar_toml(
        &w,
        "by-fp.toml",
        &format!(
            "[[hosts]]\nhost = \"* !localhost\"\nagent_keys = [\"{}\"]\n\n\
             [[hosts]]\nhost = \"web1, LOCAL*\"\nagent_keys = [\"{}\"]\n",
            others[0],
            fingerprint(&w.alice)
        ),
    );
    // By key file (the .pub half: signed through the agent).
    let by_file = sidecar_toml(
        &w,
        "by-file.toml",
        &format!(
            "[[hosts]]\nhost = \"localhost\"\nidentity_files = [\"{}.pub\"]\n",
            w.alice.display()
        ),
    );
    for (i, flags) in [by_fp, by_file].iter().enumerate() {
        let mut cmd = ssh_via(&w, flags);
        // Nothing remembered: only the map chooses.
        cmd.env("SSH_AUTH_SOCK", &agent.sock)
            .env("XDG_CACHE_HOME", "/dev/null");
        echo_ok(cmd, &format!("mapped login {i}"));
        // One connection, one key.
        wait_accepted(&w, i + 1);
    }
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"authorization_denied\""), 0, "{log}");
    for fp in &others {
        assert!(!log.contains(fp.as_str()), "the proxy saw {fp}:\n{log}");
    }
    assert!(log.contains(&fingerprint(&w.alice)), "{log}");
}

#[test]
fn a_refused_mapped_or_remembered_key_is_not_followed_by_the_agents_others() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    // The map names the wrong key (mallory's) for this host: refused, and
    // the agent's others, the authorized one among them, stay unoffered.
    let wrong = sidecar_toml(
        &w,
        "wrong.toml",
        &format!(
            "[[hosts]]\nhost = \"localhost\"\nagent_keys = [\"{}\"]\n",
            fingerprint(&mallory)
        ),
    );
    let mut cmd = ssh_via(&w, &wrong);
    cmd.env("SSH_AUTH_SOCK", &agent.sock)
        .env("XDG_CACHE_HOME", "/dev/null")
        .arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "ssh-agent holds 2 other keys not offered to localhost:{}; to offer them, pass --try-agent-keys \
             (or set try_agent_keys = true in sidecar.toml)",
            w.proxy.port
        )),
        "{err}"
    );
    wait_accepted(&w, 1);
    let log = w.proxy.log_text();
    assert!(!log.contains(&fingerprint(&ecdsa)), "{log}");
    assert!(!log.contains(&fingerprint(&w.alice)), "{log}");
    // Asked for, the others follow.
    let mut cmd = ssh_via(&w, &format!("{wrong} --try-agent-keys"));
    cmd.env("SSH_AUTH_SOCK", &agent.sock)
        .env("XDG_CACHE_HOME", "/dev/null");
    echo_ok(cmd, "--try-agent-keys");
    // The mapped key, then the agent's others in order.
    wait_accepted(&w, 4);
    // Remembered: after a first login (every key, in order, as asked), the
    // key that worked alone. Once it has left the agent, nothing is offered.
    let mut cmd = ssh_via(&w, "--try-agent-keys");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    echo_ok(cmd, "first login");
    wait_accepted(&w, 7);
    drop(agent);
    let _ = std::fs::remove_file(w.dir.path().join("agent.sock"));
    let agent = agent_with(&w, &[&mallory, &ecdsa]);
    let before = 7;
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the ssh-agent key that last worked on localhost:{} ({}) is no longer in ssh-agent",
            w.proxy.port,
            fingerprint(&w.alice)
        )) && err.contains("--try-agent-keys"),
        "{err}"
    );
    assert_eq!(accepted(&w), before, "no connection was made");
    // The setting in sidecar.toml does what the flag does.
    let tryall = sidecar_toml(&w, "try.toml", "try_agent_keys = true\n");
    let mut cmd = ssh_via(&w, &tryall);
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    // Both keys offered.
    wait_accepted(&w, before + 2);
}

#[test]
fn a_first_login_offers_the_server_one_agent_key_and_says_how_to_map_another() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let ecdsa = keygen(d, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let agent = agent_with(&w, &[&mallory, &ecdsa, &w.alice]);
    let cache = d.join("cache/ztssh/agent-keys");
    // Nothing mapped, nothing remembered: the agent's first key alone.
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    let out = run_bounded(&mut cmd, T);
    assert!(!out.status.success());
    let err = stderr(&out);
    let port = w.proxy.port;
    assert!(
        err.contains(&format!(
            "ssh-agent holds 2 other keys not offered to localhost:{port}; to offer them, pass \
             --try-agent-keys (or set try_agent_keys = true in sidecar.toml); or name this server's \
             key in sidecar.toml: [[hosts]] host = \"localhost\" agent_keys = [\"SHA256:...\"]"
        )),
        "{err}"
    );
    wait_accepted(&w, 1);
    let log = w.proxy.log_text();
    assert!(log.contains(&fingerprint(&mallory)), "{log}");
    for k in [&ecdsa, &w.alice] {
        assert!(
            !log.contains(&fingerprint(k)),
            "the proxy saw {k:?}:\n{log}"
        );
    }
    // A refused key is not remembered.
    assert!(!cache.exists());
    // Around it: logging in again (a refusal teaches nothing), or with an
    // agent whose first key ztssh refuses (RSA-1024: the next usable one
    // stands in, still alone), never reaches a second key.
    let weak = keygen(d, "weak", &["-t", "rsa", "-b", "1024"]);
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    assert!(!run_bounded(&mut cmd, T).status.success());
    wait_accepted(&w, 2);
    drop(agent);
    let _ = std::fs::remove_file(d.join("agent.sock"));
    let agent = agent_with(&w, &[&weak, &mallory, &w.alice]);
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock).arg("true");
    assert!(!run_bounded(&mut cmd, T).status.success());
    wait_accepted(&w, 3);
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"authorization_denied\""), 3, "{log}");
    for k in [&ecdsa, &w.alice, &weak] {
        assert!(
            !log.contains(&fingerprint(k)),
            "the proxy saw {k:?}:\n{log}"
        );
    }
    assert!(!cache.exists());
}

#[test]
fn the_key_the_proxy_accepts_is_remembered_while_its_session_is_still_open() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let agent = agent_with(&w, &[&w.alice, &mallory]);
    let cache = d.join("cache/ztssh/agent-keys");
    let mut cmd = ssh_via(&w, "");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    let mut live = LiveSsh::start(cmd);
    live.send("echo up\n");
    // Remembered at acceptance, not at a clean end the session may never
    // reach (killed, revoked, the laptop closed): under the name typed and
    // under the server's id (its licence's), newest first.
    let want = format!(
        "alice server_id=web1 {fp}\nalice localhost:{} {fp}\n",
        w.proxy.port,
        fp = fingerprint(&w.alice)
    );
    wait_until(T, "the key remembered", || {
        std::fs::read_to_string(&cache).is_ok_and(|t| t == want)
    });
    let out = live.finish();
    assert_ok(&out, "session");
    assert_eq!(read_text(&cache), want);
}

/// Review (att23): the remembered key was kept by the name typed, so a
/// server with two names in its licence (`localhost` and `web1`) was
/// offered, under its second name, the agent's first key: one server
/// learned two of the user's keys. The first connection under a new name
/// now stops after the server's licence (its id), before any key is
/// sent, and the key remembered for that id is offered instead.
#[test]
fn a_server_reached_by_another_of_its_names_is_offered_only_the_key_that_worked_there() {
    let w = World::start();
    let d = w.dir.path();
    let mallory = user_key(d, "mallory");
    let agent = agent_with(&w, &[&mallory, &w.alice]);
    // As localhost, with the agent's other keys allowed: mallory refused,
    // alice accepted and remembered.
    let mut cmd = ssh_via(&w, "--try-agent-keys");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    echo_ok(cmd, "localhost, --try-agent-keys");
    wait_accepted(&w, 2);
    let seen = |k: &Path| count(&w.proxy.log_text(), &fingerprint(k));
    let mallory_seen = seen(&mallory);
    assert!(mallory_seen >= 1);
    // As web1, the same server: nothing is remembered under that name and
    // the agent's first key is mallory's.
    let mut web1 = Command::new("ssh");
    web1.args(w.direct_opts(&w.alice));
    web1.arg("-o").arg(format!(
        "ProxyCommand={} --root {} --principal alice --connect 127.0.0.1:{} --verbose %h %p",
        bin("ztssh-sidecar").display(),
        w.pki.root_pub().display(),
        w.proxy.port
    ));
    web1.arg("-p")
        .arg(w.proxy.port.to_string())
        .arg("root@web1");
    web1.env("XDG_CACHE_HOME", d.join("cache"));
    web1.env("SSH_AUTH_SOCK", &agent.sock);
    web1.arg("echo ok");
    let out = run_bounded(&mut web1, T);
    assert_ok(&out, "web1, the same server by another name");
    assert!(
        stderr(&out).contains("web1 is server web1, where key"),
        "{}",
        stderr(&out)
    );
    // Two more connections: the one stopped before any key, and alice's.
    wait_accepted(&w, 4);
    assert_eq!(
        seen(&mallory),
        mallory_seen,
        "web1 was offered mallory's key"
    );
}
