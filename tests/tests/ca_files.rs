//! The files the tools keep and read, against the real binaries: the CA's
//! version counter and revocation records, and the sidecar's identity
//! file (issue 13 item 4); the CA directory's lock, mode and owner, and a
//! counter that must never wrap (issue 23 items 10 and 11).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ztssh_keyfile as keyfile;
use ztssh_proto::crl::Crl;
use ztssh_proto::labels::pem;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn ca(args: &[&str], dir: &Path) -> Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args).current_dir(dir), T)
}

fn crl(dir: &Path) -> Output {
    ca(&["crl", "--dir", "ca", "--out", "crl.pem"], dir)
}

/// Writes a CA file by hand as an operator would, closed to others (the
/// CA reads its files as strictly as its key).
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Starts `ztssh-ca` once per argument list, all before any is waited
/// for, and collects every outcome.
fn ca_at_once(dir: &Path, runs: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<Child> = runs
        .iter()
        .map(|args| {
            Command::new(bin("ztssh-ca"))
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ztssh-ca")
        })
        .collect();
    children.into_iter().map(|c| wait_bounded(c, T)).collect()
}

fn list_version(dir: &Path, file: &Path) -> u64 {
    let root = keyfile::read_root_public(&dir.join("ca/root.pub")).expect("root.pub");
    let bytes = keyfile::read_pem(file, pem::CRL).expect("list");
    Crl::decode_verified(&bytes, &root)
        .expect("a list the root signed")
        .list_version
}

fn revoke_args(principal: &str) -> Vec<String> {
    ["revoke", "--dir", "ca", "--principal", principal]
        .map(str::to_owned)
        .to_vec()
}

fn crl_args(out: &str) -> Vec<String> {
    ["crl", "--dir", "ca", "--out", out]
        .map(str::to_owned)
        .to_vec()
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
    write_private(&version, "two\n");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("crl.version is corrupt"),
        "{}",
        stderr(&out)
    );
    // Put back by hand, the next list is version 3.
    write_private(&version, "2\n");
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

#[test]
fn concurrent_revokes_all_land_and_concurrent_lists_get_distinct_versions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let runs: Vec<_> = (0..20).map(|i| revoke_args(&format!("user{i}"))).collect();
    for out in ca_at_once(dir, &runs) {
        assert_ok(&out, "revoke");
    }
    let records = std::fs::read_to_string(dir.join("ca/revocations.txt")).expect("records");
    for i in 0..20 {
        assert!(
            records.lines().any(|l| l == format!("principal user{i}")),
            "user{i} lost:\n{records}"
        );
    }
    assert_eq!(records.lines().count(), 20, "{records}");

    let runs: Vec<_> = (0..6).map(|i| crl_args(&format!("crl-{i}.pem"))).collect();
    for out in ca_at_once(dir, &runs) {
        assert_ok(&out, "crl");
    }
    let mut versions: Vec<u64> = (0..6)
        .map(|i| list_version(dir, &dir.join(format!("crl-{i}.pem"))))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca/crl.version")).expect("version"),
        "6\n"
    );
}

/// Around the lock: revocations and lists racing each other (the
/// scheduled `crl` against an operator's `revoke && crl`), a lock held
/// by something else, and a lock file replaced by a symlink.
#[test]
fn the_ca_lock_holds_against_mixed_races_a_foreign_holder_and_a_symlink() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let runs: Vec<_> = (0..8)
        .flat_map(|i| {
            [
                revoke_args(&format!("mixed{i}")),
                crl_args(&format!("mixed-{i}.pem")),
            ]
        })
        .collect();
    for out in ca_at_once(dir, &runs) {
        assert_ok(&out, "revoke or crl");
    }
    let root = keyfile::read_root_public(&dir.join("ca/root.pub")).expect("root.pub");
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..8 {
        let bytes = keyfile::read_pem(&dir.join(format!("mixed-{i}.pem")), pem::CRL).expect("list");
        let list = Crl::decode_verified(&bytes, &root).expect("list");
        // One version, one content: never two lists under one version.
        let principals: std::collections::BTreeSet<String> =
            list.revoked.principals.iter().cloned().collect();
        assert!(
            seen.insert(list.list_version, principals).is_none(),
            "two lists carry version {}",
            list.list_version
        );
    }
    // Each list holds everything recorded before it: contents only grow
    // with the version.
    let contents: Vec<_> = seen.values().collect();
    for pair in contents.windows(2) {
        assert!(pair[0].is_subset(pair[1]), "{pair:?}");
    }
    assert_ok(&crl(dir), "a final list");
    assert_eq!(list_version(dir, &dir.join("crl.pem")), 9);
    let records = std::fs::read_to_string(dir.join("ca/revocations.txt")).expect("records");
    assert_eq!(records.lines().count(), 8, "{records}");

    // Something else holds the lock: the command waits, names the holder,
    // and goes on once it is released.
    let lock_path = dir.join("ca/lock");
    let mut lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .expect("the lock file exists");
    use std::io::Write;
    writeln!(lock_file, "ztssh-ca crl (pid 4242)").expect("write");
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("lock");
    let err_path = dir.join("waiting.err");
    let waiting = Command::new(bin("ztssh-ca"))
        .args(revoke_args("late"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    wait_until(T, "the waiting message", || {
        read_text(&err_path).contains("waiting for")
    });
    let err = read_text(&err_path);
    assert!(
        err.contains(
            "ztssh-ca: waiting for `ztssh-ca crl (pid 4242)` to finish with CA directory ca"
        ),
        "{err}"
    );
    // It has not read the records yet, so it cannot lose what another
    // command writes meanwhile.
    let records_path = dir.join("ca/revocations.txt");
    let mut text = std::fs::read_to_string(&records_path).expect("records");
    text.push_str("principal meanwhile\n");
    std::fs::write(&records_path, &text).expect("write while locked");
    drop(held);
    let out = wait_bounded(waiting, T);
    assert_ok(&out, "revoke after the lock was released");
    let records = std::fs::read_to_string(&records_path).expect("records");
    assert!(
        records.contains("principal meanwhile\nprincipal late\n"),
        "{records}"
    );

    // A lock file replaced by a symlink (to a file nobody locks) is refused.
    std::fs::remove_file(&lock_path).expect("rm lock");
    std::os::unix::fs::symlink(dir.join("elsewhere"), &lock_path).expect("symlink");
    let out = ca(&["revoke", "--dir", "ca", "--principal", "linked"], dir);
    assert!(!out.status.success(), "locked through a symlink");
    assert!(
        stderr(&out).contains("cannot open the CA's lock file"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("elsewhere").exists());
}

#[test]
fn the_list_version_never_wraps() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let version = dir.join("ca/crl.version");
    let refused = |text: &str, want: &str| {
        write_private(&version, text);
        let _ = std::fs::remove_file(dir.join("crl.pem"));
        let out = crl(dir);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(stderr(&out).contains(want), "{text:?}: {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&version).expect("kept"), text);
        assert!(
            !dir.join("crl.pem").exists(),
            "{text:?}: a list was written"
        );
    };
    // The reproduction: from 18446744073709551614 the second list
    // was version 0. No list at all is issued from there.
    let implausible = "no list can follow it (the highest version a CA issues is 9007199254740992)";
    refused("18446744073709551614\n", implausible);
    refused(&format!("{}\n", u64::MAX), implausible);
    refused("9007199254740992\n", implausible);
    // Past u64, signs, hex: not a version number.
    for text in ["18446744073709551616\n", "+5\n", "-1\n", "0x10\n"] {
        refused(text, "crl.version is corrupt");
    }
    // Right below the ceiling, from a CA whose last list was version 0:
    // an implausible jump, refused (it used to issue 2^53 and lock the CA).
    refused("9007199254740991\n", "a jump of more than 1000000 versions");
    // The counter and the record of the last list both written by hand
    // (deliberately, see OPERATOR.md): one more list, then no more.
    write_private(&dir.join("ca/crl.last"), "9007199254740991\n");
    write_private(&version, "9007199254740991\n");
    assert_ok(&crl(dir), "the last list");
    assert_eq!(
        list_version(dir, &dir.join("crl.pem")),
        9_007_199_254_740_992
    );
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(implausible), "{}", stderr(&out));
    assert_eq!(
        list_version(dir, &dir.join("crl.pem")),
        9_007_199_254_740_992,
        "the list in place was replaced"
    );

    // The KRL's counter neither.
    let krl_version = dir.join("ca/krl.version");
    write_private(&krl_version, &format!("{}\n", u64::MAX));
    let out = ca(&["krl", "--dir", "ca", "--out", "revoked.krl"], dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(implausible), "{}", stderr(&out));
    assert!(!dir.join("revoked.krl").exists());
}

/// A counter more than a million ahead of the last list issued (a digit
/// too many typed back by hand) is refused, and so are the ways around it:
/// a missing record of the last list, jumps just past the bound, and
/// counting on in small steps still works.
#[test]
fn an_implausible_jump_of_the_list_version_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    ca_init(dir);
    let version = dir.join("ca/crl.version");
    let last = dir.join("ca/crl.last");
    assert_eq!(
        std::fs::read_to_string(&last).expect("init writes it"),
        "0\n"
    );
    for _ in 0..3 {
        assert_ok(&crl(dir), "a list");
    }
    assert_eq!(
        std::fs::read_to_string(&last).expect("crl writes it"),
        "3\n"
    );
    let refused = |text: &str| {
        write_private(&version, text);
        let out = crl(dir);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(
            stderr(&out).contains("the last list this CA issued is version 3")
                && stderr(&out).contains("a jump of more than 1000000 versions"),
            "{text:?}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_to_string(&last).expect("kept"), "3\n");
        assert_eq!(list_version(dir, &dir.join("crl.pem")), 3);
    };
    // The typo: 30000000 for 3. And the bound exactly: 3 + 1,000,000 is the
    // most the next list may be, so a counter of 1,000,003 is refused.
    refused("30000000\n");
    refused("1000003\n");
    // Just inside the bound: issued.
    write_private(&version, "1000002\n");
    assert_ok(&crl(dir), "a jump within the bound");
    assert_eq!(list_version(dir, &dir.join("crl.pem")), 1_000_003);
    assert_eq!(std::fs::read_to_string(&last).expect("last"), "1000003\n");
    // Deleting the record of the last list does not lift the check: it is
    // then taken as 0 (a CA directory from before the record existed).
    std::fs::remove_file(&last).expect("rm");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("crl.last is missing: 0"),
        "{}",
        stderr(&out)
    );
    // Nor does a symlink in its place, or junk in it.
    std::os::unix::fs::symlink(&version, &last).expect("symlink");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    std::fs::remove_file(&last).expect("rm");
    write_private(&last, "lots\n");
    let out = crl(dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("crl.last is corrupt"),
        "{}",
        stderr(&out)
    );
    // A legacy directory at a plausible version goes on, and records it.
    std::fs::remove_file(&last).expect("rm");
    write_private(&version, "7\n");
    assert_ok(&crl(dir), "a legacy CA directory");
    assert_eq!(std::fs::read_to_string(&last).expect("last"), "8\n");
}

/// Deleting the lock file while a command holds the lock does not let a
/// second command in: the directory itself is locked too. (The test
/// holds the locks a running `ztssh-ca` holds: the directory and the
/// file.)
#[test]
fn deleting_the_held_lock_file_does_not_defeat_the_lock() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca_dir = ca_init(dir);
    let lock_path = ca_dir.join("lock");
    let lock = |f: std::fs::File| {
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("lock")
    };
    let dir_held = lock(std::fs::File::open(&ca_dir).expect("open dir"));
    let file_held = lock(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .expect("the lock file exists"),
    );
    std::fs::remove_file(&lock_path).expect("delete the held lock file");
    let err_path = dir.join("waiting.err");
    let waiting = Command::new(bin("ztssh-ca"))
        .args(revoke_args("second"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    wait_until(T, "the waiting message", || {
        read_text(&err_path).contains("waiting for")
    });
    // Still waiting: it has not recorded anything.
    let records = read_text(&ca_dir.join("revocations.txt"));
    assert!(!records.contains("second"), "{records}");
    drop(file_held);
    drop(dir_held);
    let out = wait_bounded(waiting, T);
    assert_ok(&out, "revoke once the lock is released");
    assert!(read_text(&ca_dir.join("revocations.txt")).contains("principal second"));
    // Without a holder, a deleted lock file is simply made again.
    std::fs::remove_file(&lock_path).expect("rm");
    assert_ok(&crl(dir), "a list with the lock file gone");
    assert!(lock_path.exists());
}

/// `show` checks a licence against the CA's root when given one, says
/// plainly when it did not, and reads no more than the proxy would.
#[test]
fn show_checks_a_licence_signature_or_says_it_did_not() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let pki = Pki::create(dir, &["web1.example"]);
    let lic = pki.licence.clone();
    let show = |args: &[&str]| {
        let mut all = vec!["show"];
        all.extend_from_slice(args);
        ca(&all, dir)
    };
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let lic_s = lic.to_str().expect("utf8");
    let out = show(&[lic_s]);
    assert_ok(&out, "show");
    assert!(
        text(&out).contains("signature NOT checked"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("status:     valid"), "{}", text(&out));
    let out = show(&["--dir", "ca", lic_s]);
    assert_ok(&out, "show --dir");
    assert!(
        text(&out).contains("status:     valid (signature checked against root"),
        "{}",
        text(&out)
    );
    // Forged: one signature byte flipped. Before, this printed "valid".
    let bytes = keyfile::read_pem(&lic, pem::LICENCE).expect("licence");
    let mut forged = bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged_path = dir.join("forged.licence");
    std::fs::write(
        &forged_path,
        ztssh_proto::armor::encode(pem::LICENCE, &forged).expect("armour"),
    )
    .expect("w");
    let f = forged_path.to_str().expect("utf8");
    let out = show(&["--dir", "ca", f]);
    assert!(text(&out).contains("INVALID"), "{}", text(&out));
    assert!(!text(&out).contains("valid ("), "{}", text(&out));
    // Another root's licence, checked against this one: INVALID too.
    let other = tempfile::tempdir().expect("tmp");
    ca_init(other.path());
    let other_root = other.path().join("ca/root.pub");
    let out = show(&["--root", other_root.to_str().expect("utf8"), lic_s]);
    assert!(text(&out).contains("INVALID: issued by"), "{}", text(&out));
    // A list from the other CA, shown against this one: INVALID; without
    // a root, its self-named issuer is not passed off as checked.
    let other_list = other.path().join("other-crl.pem");
    assert_ok(
        &ca(
            &[
                "crl",
                "--dir",
                "ca",
                "--out",
                other_list.to_str().expect("utf8"),
            ],
            other.path(),
        ),
        "the other CA's list",
    );
    let out = show(&["--dir", "ca", other_list.to_str().expect("utf8")]);
    assert!(text(&out).contains("INVALID: signed by"), "{}", text(&out));
    let out = show(&[other_list.to_str().expect("utf8")]);
    assert!(
        text(&out).contains("root itself NOT checked"),
        "{}",
        text(&out)
    );
    // Without a root, the forged one is not called valid either.
    let out = show(&[f]);
    assert!(
        text(&out).contains("signature NOT checked"),
        "{}",
        text(&out)
    );
    // No size cap before: /dev/zero would be read without end. Now only
    // regular files of at most 32 MiB are read.
    let out = show(&["/dev/zero"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let big = dir.join("big.pem");
    std::fs::File::create(&big)
        .expect("create")
        .set_len(33 * 1024 * 1024)
        .expect("sparse");
    let out = show(&[big.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("more than the"), "{}", stderr(&out));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("meta").mode() & 0o7777
}

#[test]
fn the_ca_directory_is_private_and_its_files_are_read_like_its_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca_dir = ca_init(dir);
    assert_eq!(mode(&ca_dir), 0o700, "init creates the CA directory 0700");
    // A parent it creates is made as usual; the CA directory is 0700.
    let nested = dir.join("parent/ca");
    assert_ok(
        &ca(&["init", "--dir", "parent/ca"], dir),
        "init in a new parent",
    );
    assert_eq!(mode(&nested), 0o700);
    assert_ok(&crl(dir), "first list");

    let every = |what: &str, want: &str| {
        let commands: [&[&str]; 5] = [
            &["crl", "--dir", "ca", "--out", "crl.pem"],
            &["revoke", "--dir", "ca", "--principal", "mallory"],
            &["krl", "--dir", "ca", "--out", "revoked.krl"],
            &["known-hosts", "--dir", "ca"],
            &["init", "--dir", "ca"],
        ];
        for args in commands {
            let out = ca(args, dir);
            assert!(!out.status.success(), "{what}: {args:?} ran");
            assert!(
                stderr(&out).contains(want),
                "{what}: {args:?}: {}",
                stderr(&out)
            );
        }
        assert!(!dir.join("ca/revocations.txt").exists(), "{what}: recorded");
        assert_eq!(list_version(dir, &dir.join("crl.pem")), 1, "{what}");
    };
    // Writable by its group or by everyone (sticky or not), or owned by
    // another user: refused, by every command.
    for (m, who) in [
        (0o770, "can be written by its group (mode 770)"),
        (0o720, "can be written by its group (mode 720)"),
        (0o707, "can be written by every user (mode 707)"),
        (0o1777, "can be written by every user (mode 1777)"),
    ] {
        std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(m)).expect("chmod");
        every(&format!("mode {m:o}"), who);
    }
    std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    nix::unistd::chown(&ca_dir, Some(nix::unistd::Uid::from_raw(65534)), None)
        .expect("chown (the suite runs as root)");
    every("foreign owner", "is owned by uid 65534");
    nix::unistd::chown(&ca_dir, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown");
    // Readable by others but written by nobody else (a CA made by an older
    // init, 0755) still works.
    std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_ok(&crl(dir), "a 0755 CA directory");
    std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_ok(
        &ca(&["revoke", "--dir", "ca", "--principal", "mallory"], dir),
        "revoke",
    );

    // Its files: open to others, another owner's, or a symlink: refused.
    let records = ca_dir.join("revocations.txt");
    let version = ca_dir.join("crl.version");
    let refused = |args: &[&str], want: &str| {
        let out = ca(args, dir);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    };
    let crl_args: &[&str] = &["crl", "--dir", "ca", "--out", "crl.pem"];
    for file in [&records, &version] {
        for m in [0o644, 0o620, 0o602] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(m)).expect("chmod");
            refused(
                crl_args,
                &format!("is open to other users (mode {m:o}); run: chmod 600"),
            );
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        nix::unistd::chown(
            file.as_path(),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .expect("chown");
        refused(crl_args, "is owned by uid 65534");
        nix::unistd::chown(file.as_path(), Some(nix::unistd::Uid::from_raw(0)), None)
            .expect("chown");
        // A symlink to a file that passes every check itself.
        let real: PathBuf = dir.join(format!(
            "real-{}",
            file.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        std::fs::copy(file, &real).expect("copy");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let saved = std::fs::read(file).expect("save");
        std::fs::remove_file(file).expect("rm");
        std::os::unix::fs::symlink(&real, file).expect("symlink");
        refused(crl_args, "is a symbolic link");
        std::fs::remove_file(file).expect("rm link");
        std::fs::write(file, saved).expect("restore");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // revoke reads the records as strictly before it adds to them.
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    refused(
        &["revoke", "--dir", "ca", "--principal", "eve"],
        "is open to other users (mode 666)",
    );
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_ok(&crl(dir), "all put back");
    assert_eq!(list_version(dir, &dir.join("crl.pem")), 3);
}

/// Holds the CA directory's locks as a running `ztssh-ca` does, starts
/// `revoke --principal NAME --dir CA_DIR` (absolute) and returns it (and the file its stderr goes to) once it says
/// it is waiting.
fn revoke_while_locked(
    dir: &Path,
    ca_dir: &Path,
    name: &str,
) -> (Child, [nix::fcntl::Flock<std::fs::File>; 2], PathBuf) {
    let lock = |f: std::fs::File| {
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("lock")
    };
    let held = [
        lock(std::fs::File::open(ca_dir).expect("open dir")),
        lock(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(ca_dir.join("lock"))
                .expect("the lock file exists"),
        ),
    ];
    let err_path = dir.join(format!("{name}.err"));
    let child = Command::new(bin("ztssh-ca"))
        .args(["revoke", "--principal", name, "--dir"])
        .arg(ca_dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    wait_until(T, "the waiting message", || {
        read_text(&err_path).contains("waiting for")
    });
    (child, held, err_path)
}

/// A CA directory moved while a command waits for its lock, and another
/// put at its path: the command used to lock the moved one and write the
/// new one (issue 23). It now refuses and changes neither; a symlink
/// swapped in, or a parent moved away, is refused the same way.
#[test]
fn a_ca_directory_moved_under_a_waiting_command_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca_dir = ca_init(dir);
    let records = |d: &Path| read_text(&d.join("revocations.txt"));
    let moved_msg = "was moved or replaced while this command waited";

    // Renamed, and a copy of it put at the old path.
    let (child, held, err) = revoke_while_locked(dir, &ca_dir, "renamed");
    let moved = dir.join("ca.moved");
    std::fs::rename(&ca_dir, &moved).expect("rename");
    let copied = run_bounded(Command::new("cp").arg("-a").arg(&moved).arg(&ca_dir), T);
    assert_ok(&copied, "cp -a");
    drop(held);
    let out = wait_bounded(child, T);
    assert!(
        !out.status.success(),
        "ran across a rename: {}",
        read_text(&err)
    );
    assert!(read_text(&err).contains(moved_msg), "{}", read_text(&err));
    assert!(
        !records(&ca_dir).contains("renamed"),
        "{}",
        records(&ca_dir)
    );
    assert!(!records(&moved).contains("renamed"), "{}", records(&moved));
    std::fs::remove_dir_all(&moved).expect("rm");

    // Swapped for a symlink to another CA directory.
    let other = ca_init(&dir.join("other")).canonicalize().expect("other");
    let (child, held, err) = revoke_while_locked(dir, &ca_dir, "swapped");
    let aside = dir.join("ca.aside");
    std::fs::rename(&ca_dir, &aside).expect("rename");
    std::os::unix::fs::symlink(&other, &ca_dir).expect("symlink");
    drop(held);
    let out = wait_bounded(child, T);
    assert!(!out.status.success(), "ran across a symlink swap");
    assert!(read_text(&err).contains(moved_msg), "{}", read_text(&err));
    assert!(!records(&other).contains("swapped"), "{}", records(&other));
    assert!(!records(&aside).contains("swapped"), "{}", records(&aside));
    // A symlink given as the CA directory is refused outright.
    let out = ca(&["revoke", "--dir", "ca", "--principal", "link"], dir);
    assert!(!out.status.success(), "locked through a symlink");
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    std::fs::remove_file(&ca_dir).expect("rm link");
    std::fs::rename(&aside, &ca_dir).expect("back");

    // A parent moved away: the path names nothing, and is refused.
    let nested = ca_init(&dir.join("p/q"));
    let (child, held, err) = revoke_while_locked(dir, &nested, "parent");
    std::fs::rename(dir.join("p"), dir.join("p2")).expect("rename parent");
    drop(held);
    let out = wait_bounded(child, T);
    assert!(!out.status.success(), "ran across a moved parent");
    assert!(read_text(&err).contains(moved_msg), "{}", read_text(&err));
    assert!(!records(&dir.join("p2/q/ca")).contains("parent"));

    // Unmoved, the same command still works, through its descriptor.
    let (child, held, _) = revoke_while_locked(dir, &ca_dir, "stays");
    drop(held);
    let out = wait_bounded(child, T);
    assert_ok(&out, "revoke with the directory in place");
    assert!(records(&ca_dir).contains("principal stays"));
    assert_ok(&crl(dir), "a list after it");
}
