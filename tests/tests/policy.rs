//! The access policy and the accept-time abuse limits, end to end: source
//! networks (IPv4, IPv6, IPv4-mapped), principal lists, per-principal rules,
//! reload on SIGHUP ending live sessions, penalties and rate limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client::LibClient;
use ztssh_proto::handshake::HELLO_LEN;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// A world whose proxy enforces `policy`, plus extra config lines.
fn world(policy: &str, extra: &str) -> World {
    world_with(policy, extra, &[])
}

fn world_with(policy: &str, extra: &str, args: &[&str]) -> World {
    World::builder()
        .file("policy.toml", policy)
        .proxy_toml(&format!("policy = \"{{dir}}/policy.toml\"\n{extra}"))
        .run_args(args)
        .start()
}

fn policy_path(w: &World) -> std::path::PathBuf {
    w.dir.path().join("policy.toml")
}

/// True when the proxy closes a fresh connection from `src` without a
/// single byte: refused before the handshake.
fn refused_before_handshake(src: &str, port: u16) -> bool {
    let Ok(mut s) = connect_from(src, port) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(&[0u8; 16]);
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

fn alice(w: &World) -> LibClient {
    LibClient::connect(w.proxy.port, w.pki.root_key(), &w.alice, "alice").expect("handshake")
}

/// A long-running ssh session (`sleep`), with its stderr in a file.
fn live_session(w: &World, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let err = w.dir.path().join(format!("{name}.err"));
    let child = w
        .ssh()
        .arg("echo started; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&err).expect("stderr"))
        .spawn()
        .expect("ssh");
    let mut g = child;
    let mut line = [0u8; 8];
    g.stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut line)
        .expect("session started");
    assert_eq!(&line, b"started\n");
    (g, err)
}

#[test]
fn denied_sources_are_refused_before_the_handshake_and_never_reach_sshd() {
    let w = world("[sources]\ndeny = [\"127.0.0.2\", \"127.0.9.0/24\"]\n", "");
    assert!(refused_before_handshake("127.0.0.2", w.proxy.port));
    assert!(refused_before_handshake("127.0.9.77", w.proxy.port));
    wait_until(Duration::from_secs(10), "refusals logged", || {
        count(&w.proxy.log_text(), "reason=\"policy_source\"") >= 2
    });
    let log = w.proxy.log_text();
    assert!(log.contains("source 127.0.0.2 is in sources.deny"), "{log}");
    assert!(
        log.contains("source 127.0.9.77 is in sources.deny"),
        "{log}"
    );
    // No handshake was even attempted for them.
    assert!(!log.contains("event=\"connection_accepted\""), "{log}");
    assert_ok(&run_bounded(w.ssh().arg("true"), T), "ssh from 127.0.0.1");
    assert!(!w.sshd.log_text().contains("127.0.0.2"));
}

#[test]
fn ipv4_mapped_peers_meet_ipv4_rules_on_a_dual_stack_listener() {
    // Listening on [::] the kernel reports IPv4 clients as ::ffff:a.b.c.d.
    let w = world_with(
        "[sources]\nallow = [\"127.0.0.1\", \"::1\"]\n",
        "",
        &["--listen", "[::]:{port}"],
    );
    // 127.0.0.1 arrives as ::ffff:127.0.0.1 and is allowed by the IPv4 rule.
    let mut c = alice(&w);
    c.establish()
        .expect("IPv4 client through the mapped address");
    // IPv6 loopback is allowed by its own rule.
    let s = TcpStream::connect(("::1", w.proxy.port)).expect("v6");
    let c6 = LibClient::handshake(s, w.pki.root_key(), &w.alice, "alice");
    c6.expect("v6 handshake").establish().expect("IPv6 client");
    // Another IPv4 source is not.
    assert!(refused_before_handshake("127.0.0.3", w.proxy.port));
    wait_until(Duration::from_secs(10), "refusal logged", || {
        w.proxy
            .log_text()
            .contains("source 127.0.0.3 is not in sources.allow")
    });
    // The session log names the peer as the kernel gave it.
    assert!(w.proxy.log_text().contains("peer=[::ffff:127.0.0.1]"));
}

#[test]
fn principal_rules_sessions_and_hours_are_enforced_at_the_handshake() {
    let hour = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 3600)
        % 24;
    // A window that is certainly not now.
    let (a, b) = ((hour + 2) % 24, (hour + 4) % 24);
    let w = world(
        &format!(
            "[principal.alice]\nsources = [\"127.0.0.0/8\"]\nmax_sessions = 1\n\n\
             [principal.bob]\nhours_utc = [\"{a:02}-{b:02}\"]\n"
        ),
        "",
    );
    // alice: the first session works, a second at the same time is refused.
    let _live = Guard(live_session(&w, "first").0);
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "ztssh: web1 refused the session: principal alice already has 1 session(s) on web1, the most the policy allows"
        ),
        "{}",
        stderr(&out)
    );
    // bob is outside his hours.
    let bob = user_key(w.dir.path(), "bob");
    fs::write(
        w.dir.path().join("principals"),
        format!(
            "alice {}bob {}",
            read_text(&w.alice.with_extension("pub")),
            read_text(&bob.with_extension("pub"))
        ),
    )
    .expect("principals");
    w.proxy.sighup();
    wait_until(Duration::from_secs(10), "reload", || {
        w.proxy
            .log_text()
            .contains("event=\"reload\" result=\"ok\"")
    });
    let err = LibClient::connect(w.proxy.port, w.pki.root_key(), &bob, "bob")
        .and_then(|mut c| c.establish())
        .expect_err("bob outside hours");
    assert!(
        err.to_string().contains("expected ACCEPT"),
        "bob must get TERMINATE: {err}"
    );
    // The proxy writes its log from a thread of its own: wait for the line.
    let want = format!("policy allows principal bob only during {a:02}:00-{b:02}:00 UTC");
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        w.proxy.log_text().contains(&want)
    });
    assert_eq!(count(&w.sshd.log_text(), "Accepted publickey"), 1);
}

#[test]
fn reload_that_removes_access_ends_live_sessions_and_a_broken_policy_is_refused() {
    let w = world("[principals]\nallow = [\"alice\"]\n", "");
    let (mut live, err) = live_session(&w, "live");
    let path = policy_path(&w);

    // A broken policy: the reload fails, naming file, line and reason, and
    // the previous policy stays in force (the session lives, new ones work).
    fs::write(
        &path,
        "[principals]\nallow = [\"alice\"]\n[sources]\ndeny = [\"10.0.0.0/33\"]\n",
    )
    .expect("write");
    w.proxy.sighup();
    wait_until(Duration::from_secs(10), "failed reload", || {
        w.proxy.log_text().contains("result=\"failed\"")
    });
    let log = w.proxy.log_text();
    let want = format!(
        "{}:4: sources.deny: \"10.0.0.0/33\" is not a network: prefix length 33 is longer than 32",
        path.display()
    );
    assert!(log.contains(&want), "want {want} in\n{log}");
    assert!(live.try_wait().expect("wait").is_none(), "session survived");
    assert_ok(
        &run_bounded(w.ssh().arg("true"), T),
        "previous policy still admits",
    );

    // Now deny alice: the live session ends at once with the reason.
    fs::write(&path, "[principals]\ndeny = [\"alice\"]\n").expect("write");
    w.proxy.sighup();
    let out = wait_bounded(live, T);
    assert!(!out.status.success());
    let text = read_text(&err);
    assert!(
        text.contains("ztssh: session terminated by web1: principal alice is denied by policy"),
        "{text}"
    );
    // The log is written by a thread of its own: the line may land just
    // after the client read its TERMINATE.
    w.proxy
        .wait_log("reason=\"policy_denied\"", Duration::from_secs(10));
    // And new sessions are refused with the same reason.
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        stderr(&out)
            .contains("ztssh: web1 refused the session: principal alice is denied by policy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_reports_a_bad_policy_with_file_line_and_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let w = World::start();
    let policy = dir.path().join("policy.toml");
    let config = dir.path().join("proxy.toml");
    let base = fs::read_to_string(&w.proxy.config).expect("config");
    fs::write(
        &config,
        format!("{base}policy = \"{}\"\n", policy.display()),
    )
    .expect("config");
    // `check` (or `run`) with no policy text runs against whatever is (or
    // is not) there.
    let proxy = |cmd: &str, text: Option<&str>| {
        if let Some(text) = text {
            fs::write(&policy, text).expect("policy");
        }
        let out = run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg(cmd)
                .arg("--config")
                .arg(&config),
            T,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let check = |text: Option<&str>| proxy("check", text);
    let p = policy.display();
    for (text, want) in [
        (
            "[principal.alice]\nsources = [\"10.0.0.0/8\"]\nhours_utc = [\"9-5pm\"]\n",
            format!(
                "ztssh-proxy: config error: {p}:3: principal.alice.hours_utc: \"9-5pm\" is not an hour range"
            ),
        ),
        (
            "[sources]\nalow = []\n",
            format!("ztssh-proxy: config error: {p}:2: sources.alow: unknown field"),
        ),
        (
            "[principals]\nallow = [\"alice\"\n",
            format!("ztssh-proxy: config error: {p}:"),
        ),
        // The key is in both tables; the line is that of the wrong one.
        (
            "[principal.a]\nmax_sessions = 1\n[principal.b]\nmax_sessions = 0\n",
            format!(
                "ztssh-proxy: config error: {p}:4: principal.b.max_sessions = 0 would lock b out"
            ),
        ),
    ] {
        let (code, _, err) = check(Some(text));
        assert_eq!(code, Some(64), "{err}");
        assert!(err.starts_with(&want), "got {err}\nwant {want}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        // `run` refuses with the same line, before binding anything.
        assert_eq!(proxy("run", None), (Some(64), String::new(), err));
    }
    fs::remove_file(&policy).expect("rm");
    let (code, _, err) = check(None);
    assert_eq!(code, Some(64));
    assert!(err.contains(&format!("cannot read policy {p}")), "{err}");
    let (code, out, _) = check(Some("[principals]\ndeny = [\"mallory\"]\n"));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("policy: principals any allowed / 1 denied"),
        "{out}"
    );
}

#[test]
fn repeated_failures_earn_a_penalty_for_that_source_only() {
    let metrics = free_port();
    let w = world(
        "",
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n\
             [penalties]\nbad_handshake_secs = 3\nthreshold_secs = 5\nmax_secs = 30\n\
             timeout_secs = 4\nevicted_secs = 1\n"
        ),
    );
    // Two garbage handshakes from 127.0.0.5 (3 s each) pass the threshold.
    for i in 0..2 {
        let mut s = connect_from("127.0.0.5", w.proxy.port).expect("connect");
        s.write_all(&pseudo_random(HELLO_LEN, i)).expect("write");
        let mut buf = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    wait_until(Duration::from_secs(10), "penalty", || {
        w.proxy.log_text().contains("event=\"source_penalised\"")
    });
    let log = w.proxy.log_text();
    assert!(
        log.contains("source refused for the next 6s after repeated failures event=\"source_penalised\" source=127.0.0.5 secs=6"),
        "{log}"
    );
    // The third connection is closed before the handshake: the proxy does
    // not even log it as accepted.
    let accepted = count(&log, "event=\"connection_accepted\"");
    assert!(refused_before_handshake("127.0.0.5", w.proxy.port));
    // Counted at accept time, before the socket is closed: once counted,
    // that connection can never be logged as accepted.
    wait_metric(
        metrics,
        "ztssh_connections_refused_total{reason=\"penalised\"}",
        1.0,
    );
    assert_eq!(
        count(&w.proxy.log_text(), "event=\"connection_accepted\""),
        accepted
    );
    // Everyone else is served.
    assert_ok(&run_bounded(w.ssh().arg("true"), T), "ssh from 127.0.0.1");
}

#[test]
fn per_source_rate_limit_refuses_the_excess_and_spares_other_sources() {
    let metrics = free_port();
    let w = world(
        "",
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n[limits]\nrate_per_minute = 1\nrate_burst = 3\n"
        ),
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        let s = connect_from("127.0.0.6", w.proxy.port).expect("connect");
        open.push(s);
    }
    wait_until(Duration::from_secs(10), "three accepted", || {
        count(&w.proxy.log_text(), "event=\"connection_accepted\"") >= 3
    });
    // The fourth within the minute is closed at once, with nothing read.
    assert!(refused_before_handshake("127.0.0.6", w.proxy.port));
    wait_metric(
        metrics,
        "ztssh_connections_refused_total{reason=\"rate_limited\"}",
        1.0,
    );
    assert_eq!(
        count(&w.proxy.log_text(), "event=\"connection_accepted\""),
        3
    );
    assert_ok(&run_bounded(w.ssh().arg("true"), T), "ssh from 127.0.0.1");
    drop(open);
}

/// Issue 23 item 6: no principal holds sessions without limit. Without a
/// `max_sessions` rule the proxy's `max_sessions_per_principal` (default
/// 64) caps it; a rule replaces it for that principal; and the cap cannot
/// be switched off.
#[test]
fn a_principal_without_a_rule_is_capped_by_the_proxy_default() {
    let w = world("", "max_sessions_per_principal = 1\n");
    let check = |config: &std::path::Path| {
        run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(config),
            T,
        )
    };
    // The default, as `check` reports it.
    let cfg = fs::read_to_string(&w.proxy.config).expect("config");
    let without = cfg.replace("max_sessions_per_principal = 1\n", "");
    let default_cfg = w.dir.path().join("default.toml");
    fs::write(&default_cfg, &without).expect("write");
    let out = check(&default_cfg);
    assert_ok(&out, "check");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("at most 64 session(s) per principal where the policy sets no max_sessions"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Switching the cap off is refused, in the file or the environment.
    let zero = w.dir.path().join("zero.toml");
    fs::write(&zero, format!("{without}max_sessions_per_principal = 0\n")).expect("write");
    let out = check(&zero);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_sessions_per_principal = 0 would lock every principal out"),
        "{}",
        stderr(&out)
    );
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(&default_cfg)
            .env("ZTSSH_MAX_SESSIONS_PER_PRINCIPAL", "0"),
        T,
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));

    // With the proxy's cap at 1 and no rule, a second session is refused,
    // naming the setting.
    let (mut first, _) = live_session(&w, "first");
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "principal alice already has 1 session(s) on web1, the most the proxy (max_sessions_per_principal) allows"
        ),
        "{}",
        stderr(&out)
    );
    // A rule for alice replaces the default for her.
    fs::write(policy_path(&w), "[principal.alice]\nmax_sessions = 2\n").expect("policy");
    w.proxy.sighup();
    wait_until(Duration::from_secs(10), "reload", || {
        w.proxy
            .log_text()
            .contains("event=\"reload\" result=\"ok\"")
    });
    let (mut second, _) = live_session(&w, "second");
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        stderr(&out).contains(
            "principal alice already has 2 session(s) on web1, the most the policy allows"
        ),
        "{}",
        stderr(&out)
    );
    let _ = first.kill();
    let _ = second.kill();
    let _ = first.wait();
    let _ = second.wait();
}
