//! `ztssh-ca krl`, checked against OpenSSH itself: `ssh-keygen -Q` is the
//! oracle for which keys the KRL revokes, `ssh-keygen -k` writes the same
//! section for the same keys, and a real sshd with `RevokedKeys` refuses a
//! revoked key (and picks up a replaced KRL at the next authentication);
//! the root-signed ztssh list carries the same revocation to the proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(20);

fn must(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(dir: &Path, name: &str, kind: &[&str]) -> PathBuf {
    let path = dir.join(name);
    must(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", name])
                .args(kind)
                .arg("-f")
                .arg(&path),
            T,
        ),
        "ssh-keygen",
    );
    path
}

fn pub_of(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

fn revoke_key(ca: &Path, key: &Path) -> String {
    must(
        &run_bounded(
            Command::new(bin("ztssh-ca"))
                .args(["revoke", "--dir"])
                .arg(ca)
                .arg("--key")
                .arg(pub_of(key)),
            T,
        ),
        "ztssh-ca revoke --key",
    )
}

fn write_krl(ca: &Path, out: &Path) -> String {
    must(
        &run_bounded(
            Command::new(bin("ztssh-ca"))
                .args(["krl", "--dir"])
                .arg(ca)
                .arg("--out")
                .arg(out),
            T,
        ),
        "ztssh-ca krl",
    )
}

/// `ssh-keygen -Q`: true if the KRL revokes the key, false if not; panics
/// on anything else (an unreadable KRL, say).
fn revoked_per_ssh_keygen(krl: &Path, key: &Path) -> bool {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(pub_of(key)),
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) if text.contains(": ok") => false,
        Some(1) if text.contains("REVOKED") => true,
        _ => panic!("ssh-keygen -Q: {:?} {text} {}", out.status, stderr(&out)),
    }
}

/// The KRL's fields after the 8-byte magic: (format version and flags,
/// the bytes after the comment). `krl_version`, `generated_date` and the
/// comment are left out, the only fields the two writers choose freely.
fn fixed_parts(krl: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert!(krl.starts_with(b"SSHKRL\n\0"), "magic");
    let u32_at = |at: usize| u32::from_be_bytes(krl[at..at + 4].try_into().unwrap()) as usize;
    let mut fixed = krl[8..12].to_vec(); // format version
    fixed.extend_from_slice(&krl[28..36]); // flags
    let reserved = u32_at(36);
    fixed.extend_from_slice(&krl[36..40 + reserved]);
    let comment_at = 40 + reserved;
    let sections = comment_at + 4 + u32_at(comment_at);
    (fixed, krl[sections..].to_vec())
}

#[test]
fn ssh_keygen_agrees_with_the_krl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_init(dir.path());
    let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
    let ec = keygen(dir.path(), "ec", &["-t", "ecdsa", "-b", "256"]);
    let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
    let kept = keygen(dir.path(), "kept", &["-t", "ed25519"]);
    let krl = dir.path().join("revoked.krl");

    // No revoked keys yet: a valid KRL that revokes nothing.
    assert!(write_krl(&ca, &krl).contains("0 revoked user keys"));
    for key in [&ed, &ec, &rsa, &kept] {
        assert!(!revoked_per_ssh_keygen(&krl, key), "{}", key.display());
    }

    for key in [&ed, &ec, &rsa] {
        assert!(revoke_key(&ca, key).contains("recorded: key SHA256:"));
    }
    assert!(revoke_key(&ca, &ed).contains("already revoked"));
    assert!(write_krl(&ca, &krl).contains("3 revoked user keys"));
    for key in [&ed, &ec, &rsa] {
        assert!(revoked_per_ssh_keygen(&krl, key), "{}", key.display());
    }
    assert!(!revoked_per_ssh_keygen(&krl, &kept));

    // ssh-keygen -k, given the same keys to revoke by SHA-256, writes the
    // same header fields and byte-for-byte the same sections.
    let spec = dir.path().join("spec");
    let mut lines = String::new();
    for key in [&rsa, &ed, &ec] {
        lines.push_str(&format!("sha256: {}", read_text(&pub_of(key))));
    }
    fs::write(&spec, lines).unwrap();
    let reference = dir.path().join("reference.krl");
    must(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-k", "-z", "2", "-f"])
                .arg(&reference)
                .arg(&spec),
            T,
        ),
        "ssh-keygen -k",
    );
    let ours = fs::read(&krl).unwrap();
    let theirs = fs::read(&reference).unwrap();
    assert_eq!(fixed_parts(&ours), fixed_parts(&theirs));
    // Both carry krl_version 2 (ours: the second `ztssh-ca krl`).
    assert_eq!(ours[12..20], theirs[12..20]);

    // The file is replaced whole, never edited in place.
    let before = fs::metadata(&krl).unwrap();
    write_krl(&ca, &krl);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(fs::metadata(&krl).unwrap().ino(), before.ino());
}

fn ztssh_ca(args: &[&str], ca: &Path, more: &[&Path]) -> Output {
    run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(args)
            .arg("--dir")
            .arg(ca)
            .args(more),
        T,
    )
}

/// A host certificate for `key` from `sign-host`; returns its path and serial.
fn sign_host(ca: &Path, key: &Path) -> (PathBuf, u64) {
    let cert = key.with_file_name(format!(
        "{}-cert.pub",
        key.file_name().unwrap().to_string_lossy()
    ));
    let out = run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(["sign-host", "--dir"])
            .arg(ca)
            .arg("--host-key")
            .arg(pub_of(key))
            .args(["--hostname", "web1", "--out"])
            .arg(&cert),
        T,
    );
    let text = must(&out, "sign-host");
    let serial = text
        .split("serial ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("serial in sign-host's output");
    (cert, serial)
}

/// Host certificates revoked by serial, under the host CA key, beside a
/// revoked user key: ssh-keygen -Q agrees for the certificate files, and
/// ssh-keygen -k writes the same sections for the same entries.
#[test]
fn ssh_keygen_agrees_on_revoked_host_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_init(dir.path());
    let hosts: Vec<PathBuf> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| keygen(dir.path(), n, &["-t", "ed25519"]))
        .collect();
    let certs: Vec<(PathBuf, u64)> = hosts.iter().map(|h| sign_host(&ca, h)).collect();
    let user = keygen(dir.path(), "user", &["-t", "ed25519"]);
    revoke_key(&ca, &user);
    for (cert, _) in &certs[..2] {
        let out = ztssh_ca(&["revoke"], &ca, &[Path::new("--host-cert"), cert]);
        assert!(must(&out, "revoke --host-cert").contains("recorded: host-serial "));
    }
    let again = ztssh_ca(&["revoke"], &ca, &[Path::new("--host-cert"), &certs[0].0]);
    assert!(must(&again, "revoke again").contains("already revoked"));
    let krl = dir.path().join("revoked.krl");
    assert!(write_krl(&ca, &krl).contains("1 revoked user keys, 2 revoked host certificates"));

    // ssh-keygen -Q on the certificate files: the two revoked ones only.
    for (i, (cert, _)) in certs.iter().enumerate() {
        let out = run_bounded(
            Command::new("ssh-keygen")
                .arg("-Q")
                .arg("-f")
                .arg(&krl)
                .arg(cert),
            T,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if i < 2 {
            assert!(
                out.status.code() == Some(1) && text.contains("REVOKED"),
                "{i}: {text}"
            );
        } else {
            assert!(out.status.success() && text.contains(": ok"), "{i}: {text}");
        }
    }
    // The plain host key of a revoked certificate is not revoked itself.
    assert!(!revoked_per_ssh_keygen(&krl, &hosts[0]));
    assert!(revoked_per_ssh_keygen(&krl, &user));

    // ssh-keygen -k with the host CA key and the same entries.
    let line = must(&ztssh_ca(&["known-hosts"], &ca, &[]), "known-hosts");
    let ca_pub = dir.path().join("host_ca.pub");
    let key: Vec<&str> = line.split_whitespace().skip(2).take(2).collect();
    fs::write(&ca_pub, format!("{}\n", key.join(" "))).unwrap();
    let spec = dir.path().join("spec");
    fs::write(
        &spec,
        format!(
            "serial: {}\nserial: {}\nsha256: {}",
            certs[1].1,
            certs[0].1,
            read_text(&pub_of(&user))
        ),
    )
    .unwrap();
    let reference = dir.path().join("reference.krl");
    must(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-k", "-s"])
                .arg(&ca_pub)
                .arg("-f")
                .arg(&reference)
                .arg(&spec),
            T,
        ),
        "ssh-keygen -k -s",
    );
    assert_eq!(
        fixed_parts(&fs::read(&krl).unwrap()),
        fixed_parts(&fs::read(&reference).unwrap())
    );

    // Only certificates this CA's host key signed are accepted.
    let other = tempfile::tempdir().unwrap();
    let other_ca = ca_init(other.path());
    let out = ztssh_ca(
        &["revoke"],
        &other_ca,
        &[Path::new("--host-cert"), &certs[2].0],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not signed by this CA's host CA key"),
        "{}",
        stderr(&out)
    );
    let out = ztssh_ca(
        &["revoke"],
        &ca,
        &[Path::new("--host-cert"), &pub_of(&user)],
    );
    assert!(
        stderr(&out).contains("is not an OpenSSH certificate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn revoke_key_refuses_what_is_not_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_init(dir.path());
    let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
    // The private key file, by mistake.
    let out = run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(["revoke", "--dir"])
            .arg(&ca)
            .arg("--key")
            .arg(&ed),
        T,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not one OpenSSH public key"),
        "{}",
        stderr(&out)
    );
    assert!(!ca.join("revocations.txt").exists());
}

#[test]
fn sshd_with_revoked_keys_refuses_the_revoked_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_init(dir.path());
    let bad = keygen(dir.path(), "bad", &["-t", "ed25519"]);
    let good = keygen(dir.path(), "good", &["-t", "ed25519"]);
    let krl = dir.path().join("revoked.krl");
    revoke_key(&ca, &bad);
    write_krl(&ca, &krl);

    let ak = dir.path().join("authorized_keys");
    fs::write(
        &ak,
        format!("{}{}", read_text(&pub_of(&bad)), read_text(&pub_of(&good))),
    )
    .unwrap();
    let port = free_port();
    let sshd = Sshd::start(
        dir.path(),
        port,
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nAuthorizedKeysFile {}\nRevokedKeys {}\n",
            ak.display(),
            krl.display()
        ),
    );
    let login = |key: &Path| {
        run_bounded(
            Command::new("ssh")
                .args(["-F", "/dev/null", "-i"])
                .arg(key)
                .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
                .args(["-o", "StrictHostKeyChecking=no", "-o"])
                .arg(format!(
                    "UserKnownHostsFile={}",
                    dir.path().join("known_hosts").display()
                ))
                .args(["-p", &port.to_string(), "root@127.0.0.1", "echo", "in"]),
            T,
        )
    };
    let out = login(&good);
    assert_eq!(must(&out, "login with the good key").trim(), "in");
    let out = login(&bad);
    assert!(!out.status.success(), "the revoked key logged in");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    wait_until(T, "sshd to log the revoked key", || {
        sshd.log_text().contains("revoked by file")
    });

    // sshd re-reads the KRL at each authentication: revoking the good key
    // too and replacing the file locks it out with no reload.
    revoke_key(&ca, &good);
    write_krl(&ca, &krl);
    let out = login(&good);
    assert!(!out.status.success(), "the newly revoked key logged in");
}

/// The same revocation in the root-signed ztssh list: the proxy ends the
/// live session that key opened as soon as the list lands, and refuses
/// the key at the next handshake.
#[test]
fn the_proxy_refuses_a_revoked_user_key() {
    let w = World::start();
    let live = w.live_session();

    revoke_key(&w.pki.ca, &w.alice);
    w.pki.publish_crl();
    let out = wait_bounded(live, T);
    assert!(!out.status.success(), "the live session went on");
    wait_until(T, "the proxy to end it", || {
        w.proxy.log_text().contains("user_key_revoked")
    });

    let out = run_bounded(w.ssh().arg("echo in"), T);
    assert!(!out.status.success(), "a revoked key opened a session");
    // ssh may exit on the TERMINATE a moment before the proxy's line is
    // written: waited for, not read at once (a CI run caught it).
    wait_until(T, "the handshake refusal logged", || {
        w.proxy.log_text().matches("user_key_revoked").count() >= 2
    });
}

/// `certificate` with its serial replaced by `serial` and the CA's
/// signature left as it was: a forgery.
fn forge_serial(cert: &Path, serial: u64, out: &Path) {
    let c = ssh_key::Certificate::from_openssh(read_text(cert).trim()).unwrap();
    let mut bytes = c.to_bytes().unwrap();
    // type, nonce, public key: three strings of 4 + 32 bytes for ed25519.
    let at = 3 * 36;
    assert_eq!(bytes[at..at + 8], c.serial().to_be_bytes());
    bytes[at..at + 8].copy_from_slice(&serial.to_be_bytes());
    let forged = ssh_key::Certificate::from_bytes(&bytes).unwrap();
    assert_eq!(forged.serial(), serial);
    fs::write(out, format!("{}\n", forged.to_openssh().unwrap())).unwrap();
}

/// OpenSSH rejects a KRL that revokes serial 0, and sshd then refuses every
/// key: `ztssh-ca` never records, publishes or issues serial 0, and never
/// takes a serial from a certificate whose signature does not verify.
#[test]
fn serial_zero_and_forged_host_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_init(dir.path());

    // The oracle: ssh-keygen itself will not write serial 0 into a KRL.
    let line = must(&ztssh_ca(&["known-hosts"], &ca, &[]), "known-hosts");
    let ca_pub = dir.path().join("host_ca.pub");
    let key: Vec<&str> = line.split_whitespace().skip(2).take(2).collect();
    fs::write(&ca_pub, format!("{}\n", key.join(" "))).unwrap();
    let spec = dir.path().join("spec");
    fs::write(&spec, "serial: 0\n").unwrap();
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-k", "-s"])
            .arg(&ca_pub)
            .arg("-f")
            .arg(dir.path().join("zero.krl"))
            .arg(&spec),
        T,
    );
    assert!(!out.status.success(), "ssh-keygen wrote serial 0");

    // A forged certificate: a real one with its serial changed.
    let host = keygen(dir.path(), "h1", &["-t", "ed25519"]);
    let (cert, _) = sign_host(&ca, &host);
    for serial in [0, 4242] {
        let forged = dir.path().join(format!("forged-{serial}-cert.pub"));
        forge_serial(&cert, serial, &forged);
        let out = ztssh_ca(&["revoke"], &ca, &[Path::new("--host-cert"), &forged]);
        assert!(!out.status.success(), "forged serial {serial} recorded");
        assert!(
            stderr(&out).contains("signature does not verify"),
            "{}",
            stderr(&out)
        );
    }
    let records = ca.join("revocations.txt");
    assert!(
        !fs::read_to_string(&records)
            .unwrap_or_default()
            .contains("host-serial")
    );

    // A hand-written `host-serial 0` is reported where it is, and no KRL
    // is written.
    fs::write(&records, "# hand edit\nhost-serial 0\n").unwrap();
    // Closed to others, as the CA reads its files.
    fs::set_permissions(
        &records,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let krl = dir.path().join("revoked.krl");
    let out = ztssh_ca(&["krl"], &ca, &[Path::new("--out"), &krl]);
    assert!(!out.status.success(), "a KRL with serial 0 was written");
    let err = stderr(&out);
    assert!(
        err.contains("revocations.txt:2") && err.contains("serial 0"),
        "{err}"
    );
    assert!(!krl.exists());
    let user = keygen(dir.path(), "user", &["-t", "ed25519"]);
    let out = ztssh_ca(&["revoke"], &ca, &[Path::new("--key"), &pub_of(&user)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("revocations.txt:2"),
        "{}",
        stderr(&out)
    );
}
