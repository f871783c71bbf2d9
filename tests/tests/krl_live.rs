//! The user SSH CA's KRL (issue 21 §2) against real sshd, ssh, ssh-keygen
//! and nginx: a KRL from `ssh-keygen -k` that revokes a live session's key
//! ends it, whether dropped into `user_ca_krl` or published to nginx for
//! `user_ca_krl_url`; a lower `krl_version` is refused and logged, and so
//! is one of the same version that un-revokes anything, while one that only
//! adds (`ssh-keygen -k -u`, which keeps the version) goes into force; a
//! plain http URL is refused without the opt-in.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ztssh_tests::nginx::{Nginx, WebRoot};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(30);
const REVOKED: &str = "was revoked by your SSH CA's KRL";

/// Writes a KRL with `ssh-keygen -k -z VERSION` revoking the keys in
/// `pubs` (none: a KRL that revokes nothing), and renames it over `to`.
fn write_krl(dir: &Path, version: u64, pubs: &[&Path], to: &Path) {
    let spec = dir.join(format!("spec-{version}"));
    let mut text = String::new();
    for p in pubs {
        text.push_str(&format!(
            "key: {}\n",
            std::fs::read_to_string(p).unwrap().trim()
        ));
    }
    std::fs::write(&spec, text).unwrap();
    let next = to.with_extension("new");
    let _ = std::fs::remove_file(&next);
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-k", "-z", &version.to_string(), "-f"])
            .arg(&next)
            .arg(&spec),
        T,
    );
    assert!(out.status.success(), "ssh-keygen -k: {}", stderr(&out));
    std::fs::rename(&next, to).unwrap();
}

fn pub_of(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

#[test]
fn a_krl_dropped_into_the_file_ends_the_live_session_of_the_key_it_revokes() {
    let w = World::builder()
        .proxy_toml("user_ca_krl = \"{dir}/user-ca.krl\"\n")
        .before_start(|_, dir| write_krl(dir, 1, &[], &dir.join("user-ca.krl")))
        .start();
    let krl = w.dir.path().join("user-ca.krl");
    let ssh = w.live_session();
    write_krl(w.dir.path(), 2, &[&pub_of(&w.alice)], &krl);
    let out = wait_bounded(ssh, T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
    w.proxy.wait_log("event=\"krl_loaded\"", T);

    // A lower version revoking nothing is refused, loudly: alice stays out.
    write_krl(w.dir.path(), 1, &[], &krl);
    w.proxy
        .wait_log("is older than the version in force (2); refused", T);
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}",
        stderr(&out)
    );
    // The same version revoking less is refused too.
    write_krl(w.dir.path(), 2, &[], &krl);
    w.proxy
        .wait_log("has the version in force (2) but would un-revoke", T);
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(!out.status.success(), "{}", stderr(&out));
    // A higher version that does not parse (serial 0, which makes sshd
    // refuse every key) is refused and the KRL in force stays.
    let mut bad = ztssh_proto::krl::write::KrlWriter::new(9, 0, b"");
    bad.certs(b"", &[ztssh_proto::krl::write::serial_list(&[0])]);
    let next = krl.with_extension("new");
    std::fs::write(&next, bad.finish()).unwrap();
    std::fs::rename(&next, &krl).unwrap();
    w.proxy.wait_log("it revokes serial 0", T);
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}",
        stderr(&out)
    );
}

/// `ssh-keygen -k -u -f KRL KEY.pub`, run on the file the proxy watches,
/// as operators update a KRL.
fn update_krl_in_place(krl: &Path, pubkey: &Path) {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-k", "-u", "-f"])
            .arg(krl)
            .arg(pubkey),
        T,
    );
    assert!(out.status.success(), "ssh-keygen -k -u: {}", stderr(&out));
}

fn read_krl(path: &Path) -> ztssh_proto::krl::Krl {
    ztssh_proto::krl::Krl::decode(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_krl_ssh_keygen_updates_in_place_ends_the_session_and_one_that_drops_an_entry_is_refused() {
    let w = World::builder()
        .proxy_toml("user_ca_krl = \"{dir}/user-ca.krl\"\n")
        .before_start(|_, dir| {
            let out = run_bounded(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "mallory", "-f"])
                    .arg(dir.join("mallory")),
                T,
            );
            assert!(out.status.success(), "{}", stderr(&out));
            write_krl(
                dir,
                3,
                &[&dir.join("mallory.pub")],
                &dir.join("user-ca.krl"),
            );
        })
        .start();
    let krl = w.dir.path().join("user-ca.krl");
    let mallory = w.dir.path().join("mallory.pub");
    let ssh = w.live_session();
    // What ssh-keygen -k -u really does: it adds, and keeps the version.
    let before = read_krl(&krl);
    update_krl_in_place(&krl, &pub_of(&w.alice));
    let after = read_krl(&krl);
    assert_eq!((before.krl_version, after.krl_version), (3, 3));
    assert!(after.unrevokes(&before).is_none() && before.unrevokes(&after).is_some());
    let out = wait_bounded(ssh, T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
    w.proxy.wait_log(
        "user CA KRL version 3 loaded (same version, more revoked)",
        T,
    );

    // The same version revoking alice but no longer mallory is refused,
    // and says what it would un-revoke and what to do.
    let fp = ssh_key::PublicKey::read_openssh_file(&mallory)
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256);
    write_krl(w.dir.path(), 3, &[&pub_of(&w.alice)], &krl);
    let log = w.proxy.wait_log("but would un-revoke the key", T);
    let line = log.lines().find(|l| l.contains("would un-revoke")).unwrap();
    assert!(line.contains(&fp.to_string()), "{line}");
    assert!(line.contains("ssh-keygen -k -z 4"), "{line}");
    // The KRL in force stays: alice is still out.
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_krl_published_to_nginx_ends_the_live_session_within_the_poll_interval() {
    let web = WebRoot::new();
    let served = web.served();
    let staging = web.staging();
    // Started empty: its readiness probe reads the body as text.
    let nginx = Nginx::start_empty(&web);
    write_krl(web.path(), 1, &[], &served);
    let cfg = format!(
        "user_ca_krl_url = \"http://127.0.0.1:{}/crl.pem\"\nuser_ca_krl_allow_http = true\n\
         user_ca_krl_poll_secs = 1\nuser_ca_krl_cache = \"{{dir}}/krl-cache\"\n",
        nginx.port
    );
    let w = World::builder().proxy_toml(&cfg).start();
    w.proxy.wait_log("event=\"krl_loaded\"", T);
    let ssh = w.live_session();
    // Published atomically: written beside the served tree, renamed over it.
    write_krl(web.path(), 2, &[&pub_of(&w.alice)], &staging);
    std::fs::rename(&staging, &served).unwrap();
    let out = wait_bounded(ssh, T);
    assert!(
        !out.status.success() && stderr(&out).contains(REVOKED),
        "{}\n{}",
        stderr(&out),
        w.proxy.log_text()
    );
    // The fetched KRL is kept for the next start.
    let cache = w.dir.path().join("krl-cache");
    wait_until(T, "the KRL kept in the cache", || {
        std::fs::read(&cache).ok() == std::fs::read(&served).ok()
    });
    // A rollback on the server is refused and logged.
    write_krl(web.path(), 1, &[], &staging);
    std::fs::rename(&staging, &served).unwrap();
    w.proxy
        .wait_log("is older than the version in force (2); refused", T);
    let out = run_bounded(w.ssh().arg("true"), T);
    assert!(stderr(&out).contains(REVOKED), "{}", stderr(&out));
}

#[test]
fn a_plain_http_krl_url_is_refused_at_config_check_without_the_opt_in() {
    let w = World::start();
    let base = std::fs::read_to_string(&w.proxy.config).unwrap();
    let cases = [
        (
            "user_ca_krl_url",
            "user_ca_krl_url = \"http://127.0.0.1:1/user-ca.krl\"\n",
            "user_ca_krl_url = \"http://127.0.0.1:1/user-ca.krl\" is plain http",
        ),
        (
            "user_ca_krl_allow_http",
            "user_ca_krl_allow_http = true\n",
            "user_ca_krl_allow_http is set but user_ca_krl_url is not",
        ),
        (
            "user_ca_krl_poll_secs",
            "user_ca_krl_url = \"https://127.0.0.1:1/k\"\nuser_ca_krl_poll_secs = 0\n",
            "user_ca_krl_poll_secs must be between 1 and 3600",
        ),
    ];
    for (i, (key, lines, want)) in cases.iter().enumerate() {
        let path = w.dir.path().join(format!("bad{i}.toml"));
        let text = format!("{base}{lines}");
        std::fs::write(&path, &text).unwrap();
        let line = 1 + text.lines().position(|l| l.starts_with(key)).unwrap();
        let out = run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(&path),
            T,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{lines}: {err}");
        assert!(err.contains(want), "{lines}: {err}");
        let at = format!("{}:{line}: ", path.display());
        assert!(err.contains(&at), "no {at} in {err}");
    }
    // With the opt-in, the same URL passes the check.
    let path = w.dir.path().join("ok.toml");
    std::fs::write(
        &path,
        format!(
            "{base}user_ca_krl_url = \"http://127.0.0.1:1/k\"\nuser_ca_krl_allow_http = true\n"
        ),
    )
    .unwrap();
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(&path),
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
