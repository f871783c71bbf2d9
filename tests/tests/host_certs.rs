//! Host keys certified by the root: `ztssh-ca sign-host` certifies the
//! private sshd's host key, sshd presents it (`HostCertificate`), and the
//! real ssh, through ztssh-sidecar, with a known_hosts holding only the
//! line `ztssh-ca known-hosts` prints and `StrictHostKeyChecking=yes`,
//! trusts it with no prompt, and refuses anything else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(30);
const CERT: &str = "ssh_host_ed25519_key-cert.pub";

fn ca_tool(args: &[&str], dir: &Path) -> Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args).current_dir(dir), T)
}

/// `ztssh-ca sign-host` by the CA in `ca` for sshd's key in `dir`.
fn sign_host(ca: &Path, dir: &Path, names: &[&str], ttl: &str) -> Output {
    let ca = ca.display().to_string();
    let mut args = vec!["sign-host", "--dir", &ca];
    args.extend(["--host-key", "ssh_host_ed25519_key.pub", "--out", CERT]);
    args.extend(["--ttl", ttl]);
    for n in names {
        args.extend(["--hostname", n]);
    }
    ca_tool(&args, dir)
}

fn known_hosts_line(ca: &Path, pattern: &str) -> String {
    let ca = ca.display().to_string();
    let out = ca_tool(
        &["known-hosts", "--dir", &ca, "--pattern", pattern],
        Path::new("."),
    );
    assert_ok(&out, "ztssh-ca known-hosts");
    String::from_utf8(out.stdout).unwrap()
}

/// A world whose sshd presents the certificate `certify(pki, dir)` wrote
/// as `dir/CERT` for its host key (or none, when `certify` writes none).
fn world(certify: &dyn Fn(&Pki, &Path)) -> World {
    World::builder()
        .sshd_config(&format!("HostCertificate {{dir}}/{CERT}\n"))
        .before_start(|pki, dir| {
            sshd_host_key(dir);
            certify(pki, dir);
        })
        .start()
}

fn certified_for(names: &'static [&'static str], ttl: &'static str) -> impl Fn(&Pki, &Path) {
    move |pki, dir| assert_ok(&sign_host(&pki.ca, dir, names, ttl), "sign-host")
}

/// The real ssh through the sidecar, trusting only `known_hosts` (strict,
/// no prompt possible), running `echo`; `opts` come first and so win.
fn strict_ssh(w: &World, known_hosts: &str, opts: &[&str]) -> Output {
    let kh = w.dir.path().join("known_hosts_ca_only");
    fs::write(&kh, known_hosts).unwrap();
    let mut c = Command::new("ssh");
    for o in opts {
        c.arg("-o").arg(o);
    }
    c.args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=DEBUG1"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(w.client_opts(&w.alice, ""))
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .args(["root@localhost", "echo", "certified-host"]);
    let out = run_bounded(&mut c, T);
    assert_eq!(
        read_text(&kh),
        known_hosts,
        "ssh must not touch known_hosts"
    );
    out
}

fn assert_refused(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: ssh succeeded:\n{err}");
    assert!(out.stdout.is_empty(), "{what}: the command ran");
    assert!(
        err.contains("Host key verification failed"),
        "{what}: not refused for the host key:\n{err}"
    );
}

#[test]
fn certified_host_key_is_trusted_with_no_prompt() {
    let w = world(&certified_for(&["localhost", "web1"], "30d"));
    let dir = w.dir.path();
    let line = known_hosts_line(&w.pki.ca, "*");
    assert!(line.starts_with("@cert-authority * ssh-ed25519 "), "{line}");

    let out = strict_ssh(&w, &line, &[]);
    assert_ok(&out, "ssh with only the @cert-authority line");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "certified-host\n");
    let err = stderr(&out);
    assert!(
        err.contains("Server host certificate: ssh-ed25519-cert-v01@openssh.com"),
        "{err}"
    );
    assert!(err.contains("ID \"ztssh host localhost,web1\""), "{err}");
    assert!(
        err.contains("matches the ED25519-CERT host certificate"),
        "{err}"
    );

    // ssh checks the name HostKeyAlias gives when set: web1 is in the
    // certificate, web9 is not.
    assert_ok(&strict_ssh(&w, &line, &["HostKeyAlias=web1"]), "alias web1");
    assert_refused(&strict_ssh(&w, &line, &["HostKeyAlias=web9"]), "alias web9");

    // The pattern is matched against the host name, with or without the
    // port (ssh 9.2 tries `[localhost]:PORT`, then `localhost`); a pattern
    // that covers neither gives the host no trust.
    for pattern in ["localhost", "[localhost]:*"] {
        let covering = known_hosts_line(&w.pki.ca, pattern);
        assert_ok(&strict_ssh(&w, &covering, &[]), pattern);
    }
    let other = known_hosts_line(&w.pki.ca, "*.example.com");
    assert_refused(&strict_ssh(&w, &other, &[]), "*.example.com");

    // ssh-keygen, the oracle, reads the certificate as we meant it.
    let listing = run_bounded(Command::new("ssh-keygen").arg("-Lf").arg(dir.join(CERT)), T);
    assert_ok(&listing, "ssh-keygen -L");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("ssh-ed25519-cert-v01@openssh.com host certificate"),
        "{listing}"
    );
    assert!(
        listing.contains("Key ID: \"ztssh host localhost,web1\""),
        "{listing}"
    );
    assert!(
        listing.contains("localhost\n                web1\n"),
        "{listing}"
    );
    let ca_key = line.split_whitespace().nth(3).unwrap();
    let ca_file = dir.join("host-ca.pub");
    fs::write(&ca_file, format!("ssh-ed25519 {ca_key}\n")).unwrap();
    let fp = run_bounded(Command::new("ssh-keygen").arg("-lf").arg(&ca_file), T);
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.split_whitespace().nth(1).unwrap();
    assert!(
        listing.contains(&format!("Signing CA: ED25519 {fp}")),
        "{listing}"
    );
    let mode = fs::metadata(dir.join(CERT)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
}

#[test]
fn uncertified_host_key_is_refused() {
    // sshd offers a bare host key: no HostCertificate line.
    let w = World::start();
    let line = known_hosts_line(&w.pki.ca, "*");
    assert_refused(&strict_ssh(&w, &line, &[]), "uncertified host key");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let w = world(&|_pki, dir| {
        let other = dir.join("other-ca");
        let o = other.display().to_string();
        assert_ok(&ca_tool(&["init", "--dir", &o], dir), "init other CA");
        assert_ok(&sign_host(&other, dir, &["localhost"], "1d"), "sign-host");
    });
    let line = known_hosts_line(&w.pki.ca, "*");
    let out = strict_ssh(&w, &line, &[]);
    assert_refused(&out, "certificate by another CA");
    // ...while that CA's own line would have been trusted.
    let theirs = known_hosts_line(&w.dir.path().join("other-ca"), "*");
    assert_ok(&strict_ssh(&w, &theirs, &[]), "the other CA's line");
}

#[test]
fn certificate_for_another_host_is_refused() {
    let w = world(&certified_for(&["web9"], "1d"));
    let line = known_hosts_line(&w.pki.ca, "*");
    let out = strict_ssh(&w, &line, &[]);
    assert_refused(&out, "certificate for web9");
    assert!(
        stderr(&out).contains("not a listed principal"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expired_certificate_is_refused() {
    let w = world(&certified_for(&["localhost"], "1s"));
    std::thread::sleep(Duration::from_secs(2));
    let line = known_hosts_line(&w.pki.ca, "*");
    let out = strict_ssh(&w, &line, &[]);
    assert_refused(&out, "expired certificate");
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
}

#[test]
fn sign_host_refuses_clearly() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let ca = d.join("ca");
    let c = ca.display().to_string();
    assert_ok(&ca_tool(&["init", "--dir", &c], d), "init");
    sshd_host_key(d);
    let no_names = ca_tool(
        &[
            "sign-host",
            "--dir",
            &c,
            "--host-key",
            "ssh_host_ed25519_key.pub",
            "--out",
            CERT,
        ],
        d,
    );
    assert!(!no_names.status.success());
    assert!(
        stderr(&no_names).contains("--hostname"),
        "{}",
        stderr(&no_names)
    );
    for (names, ttl, want) in [
        (&["web1"][..], "91d", "longer than the 90d maximum"),
        (&["web1"], "0", "not a duration"),
        (&["Web1"], "1d", "use lower case"),
        (&["*.example.com"], "1d", "no wildcards"),
        (&[""], "1d", "1 to 253 characters"),
    ] {
        let out = sign_host(&ca, d, names, ttl);
        assert!(!out.status.success(), "{names:?} {ttl}");
        assert!(
            stderr(&out).contains(want),
            "{names:?} {ttl}: {}",
            stderr(&out)
        );
    }
    // The private key, or a file that is no key, is refused by name.
    let out = ca_tool(
        &[
            "sign-host",
            "--dir",
            &c,
            "--host-key",
            "ssh_host_ed25519_key",
            "--hostname",
            "h",
            "--out",
            CERT,
        ],
        d,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an OpenSSH public key"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join(CERT).exists(), "nothing written on refusal");
    // A bad pattern is refused.
    let out = ca_tool(&["known-hosts", "--dir", &c, "--pattern", "a b"], d);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("one known_hosts field"),
        "{}",
        stderr(&out)
    );
}
