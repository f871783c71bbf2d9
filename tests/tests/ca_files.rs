//! The files the tools keep and read, against the real binaries: the CA's
//! version counter and revocation records, and the sidecar's identity
//! file (issue 13 item 4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn ca(args: &[&str], dir: &Path) -> Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args).current_dir(dir), T)
}

fn crl(dir: &Path) -> Output {
    ca(&["crl", "--dir", "ca", "--out", "crl.pem"], dir)
}

#[test]
fn the_ca_refuses_to_restart_its_list_versions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let version = dir.join("ca/crl.version");
    assert_eq!(
        std::fs::read_to_string(&version).expect("init writes it"),
        "0\n"
    );
    assert_ok(&crl(dir), "first list");
    assert_ok(&crl(dir), "second list");
    assert_eq!(std::fs::read_to_string(&version).expect("v2"), "2\n");

    // Lost: refused, not restarted at 1 (every proxy holds version 2).
    std::fs::remove_file(&version).expect("rm");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("crl.version is missing")
            && stderr(&out).contains("ztssh-ca show crl.pem prints it"),
        "{}",
        stderr(&out)
    );
    assert!(!version.exists(), "a refused run wrote a version");
    // Unreadable (a directory in its place) or corrupt: refused too.
    std::fs::create_dir(&version).expect("dir");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to guess the next version"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir(&version).expect("rmdir");
    std::fs::write(&version, "two\n").expect("write");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("crl.version is corrupt"),
        "{}",
        stderr(&out)
    );
    // Put back by hand, the next list is version 3.
    std::fs::write(&version, "2\n").expect("write");
    assert_ok(&crl(dir), "third list");
    assert_eq!(std::fs::read_to_string(&version).expect("v3"), "3\n");
}

#[test]
fn a_hand_edited_revocations_file_is_checked_line_by_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    assert_ok(
        &ca(&["revoke", "--dir", "ca", "--principal", "mallory"], dir),
        "revoke",
    );
    let records = dir.join("ca/revocations.txt");
    let mut text = std::fs::read_to_string(&records).expect("records");
    text.push_str("# a comment\n\nprincipal bob smith\n");
    std::fs::write(&records, &text).expect("edit");
    let out = crl(dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    // FILE:LINE as given (--dir ca), then what is wrong.
    let want = "ztssh-ca: ca/revocations.txt:4: principal \"bob smith\": principal: only letters";
    assert!(err.contains(want), "{err}");
    // revoke checks the whole file before adding to it, and leaves it be.
    let out = ca(&["revoke", "--dir", "ca", "--principal", "eve"], dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&records).expect("records"), text);
    // A file that is not text is never taken for an empty one.
    std::fs::write(&records, b"principal mallory\n\xff\xfe\n").expect("binary");
    let out = ca(&["revoke", "--dir", "ca", "--principal", "eve"], dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&records).expect("records"),
        b"principal mallory\n\xff\xfe\n"
    );
}

#[test]
fn the_sidecar_warns_about_an_identity_others_can_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let key = user_key(dir, "alice");
    let closed = free_port();
    let run = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut c = Command::new(bin("ztssh-sidecar"));
        c.arg("--root")
            .arg(dir.join("ca/root.pub"))
            .arg("--identity")
            .arg(&key)
            .arg("--principal")
            .arg("alice")
            .arg("--connect")
            .arg(format!("127.0.0.1:{closed}"))
            .args(["web1", "22"])
            .stdin(Stdio::null());
        stderr(&run_bounded(&mut c, T))
    };
    let err = run(0o640);
    assert!(
        err.contains(&format!(
            "ztssh: warning: identity {} can be read by its group (mode 640)",
            key.display()
        )) && err.contains("chmod 600"),
        "{err}"
    );
    let err = run(0o604);
    assert!(
        err.contains("can be read by every user (mode 604)"),
        "{err}"
    );
    // 0600: no warning, only the connection failure.
    let err = run(0o600);
    assert!(!err.contains("warning"), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}
