//! Delegated online signing (issue 21 §4): a licence signed by a
//! `licences` delegation's key, published to nginx, renews itself on the
//! proxy with no restart or signal while a session runs across more than
//! one licence lifetime; when publishing stops the session ends at the
//! licence's expiry. Licences and lists from undelegated, expired, revoked
//! or wrong-purpose delegations are refused.
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

/// Signs a licence into nginx's staging copy and renames it over the served one.
fn publish(pki: &Pki, web: &WebRoot, dlg: &Path, key: &Path) {
    let out = sign_licence(pki, dlg, key, "web1", &web.staging());
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::rename(web.staging(), web.served()).expect("publish");
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
            let (key, dlg) = delegate(&pki.ca, &kdir, "lic", "licences", &["--servers", "web*"]);
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
    // A key delegated for web* cannot license db1.
    let (key, dlg) = delegate(&pki.ca, &kdir, "web", "licences", &["--servers", "web*"]);
    let out = sign_licence(pki, &dlg, &key, "db1", &lic);
    assert!(
        !out.status.success() && stderr(&out).contains("not db1"),
        "{}",
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
    let staged = pki.licence.with_extension("new");
    std::fs::copy(&lic, &staged).expect("copy");
    std::fs::rename(&staged, &pki.licence).expect("swap");
    w.proxy.wait_log("event=\"licence_refused\"", T);
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
