//! proto's KRL reader (`ztssh_proto::krl`) against OpenSSH itself:
//! `ssh-keygen -k` writes KRLs from a seeded random set of specifications
//! (serials, serial ranges, key ids, keys, SHA-1 and SHA-256 hashes,
//! fingerprints, certificates; with and without a CA), and `ssh-keygen -Q`
//! says which keys and certificates each revokes. The reader must agree on
//! every one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ztssh_proto::krl::Krl;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(30);
/// Cases per run; each is one `ssh-keygen -k` and one `ssh-keygen -Q`.
const CASES: u64 = 60;

fn must(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// splitmix64: the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
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
    path.with_extension("pub")
}

fn sign(dir: &Path, ca: &Path, key: &Path, id: &str, serial: u64) -> PathBuf {
    must(
        &run_bounded(
            Command::new("ssh-keygen")
                .arg("-q")
                .arg("-s")
                .arg(ca.with_extension(""))
                .args(["-I", id, "-n", "alice", "-z", &serial.to_string()])
                .arg(key),
            T,
        ),
        "ssh-keygen -s",
    );
    let name = key.file_stem().unwrap().to_string_lossy();
    let cert = dir.join(format!("{name}-cert.pub"));
    let kept = dir.join(format!("{name}-{id}-{serial}-cert.pub"));
    fs::rename(&cert, &kept).unwrap();
    kept
}

/// What the test holds: keys, CAs and certificates.
struct Fixture {
    dir: tempfile::TempDir,
    cas: Vec<PathBuf>,
    keys: Vec<PathBuf>,
    certs: Vec<PathBuf>,
}

const IDS: [&str; 4] = ["alice@laptop", "bob", "carol ci", ""];

fn fixture(rng: &mut Rng) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cas = vec![
        keygen(d, "ca1", &["-t", "ed25519"]),
        keygen(d, "ca2", &["-t", "ecdsa", "-b", "256"]),
    ];
    let mut keys = Vec::new();
    for i in 0..6 {
        keys.push(keygen(d, &format!("u{i}"), &["-t", "ed25519"]));
    }
    keys.push(keygen(d, "u6", &["-t", "ecdsa", "-b", "384"]));
    keys.push(keygen(d, "u7", &["-t", "rsa", "-b", "2048"]));
    let mut certs = Vec::new();
    for (n, key) in keys.iter().enumerate().take(6) {
        for _ in 0..2 {
            let ca = &cas[rng.below(2) as usize];
            let serial = if rng.chance(10) { 0 } else { 1 + rng.below(40) };
            let id = IDS[rng.below(IDS.len() as u64) as usize];
            let _ = n;
            certs.push(sign(d, ca, key, id, serial));
        }
    }
    Fixture {
        dir,
        cas,
        keys,
        certs,
    }
}

fn text(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

fn fingerprint(path: &Path) -> String {
    let out = must(
        &run_bounded(Command::new("ssh-keygen").arg("-lf").arg(path), T),
        "ssh-keygen -l",
    );
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// One random specification, and the CA (if any) it is written under.
fn spec(rng: &mut Rng, f: &Fixture) -> (String, Option<PathBuf>) {
    let ca = rng.chance(70).then(|| f.cas[rng.below(2) as usize].clone());
    let mut s = String::new();
    let pick = |rng: &mut Rng, v: &[PathBuf]| v[rng.below(v.len() as u64) as usize].clone();
    for _ in 0..1 + rng.below(6) {
        match rng.below(9) {
            0 | 1 if ca.is_some() => {
                writeln!(s, "serial: {}", 1 + rng.below(40)).unwrap();
            }
            2 if ca.is_some() => {
                let lo = 1 + rng.below(40);
                // Short ranges become bitmaps; long ones stay ranges.
                let len = if rng.chance(50) {
                    1 + rng.below(12)
                } else {
                    1 << 20
                };
                writeln!(s, "serial: {lo}-{}", lo + len).unwrap();
            }
            3 if ca.is_some() => {
                let id = IDS[rng.below(IDS.len() as u64 - 1) as usize];
                writeln!(s, "id: {id}").unwrap();
            }
            4 => writeln!(s, "key: {}", text(&pick(rng, &f.keys))).unwrap(),
            5 => writeln!(s, "sha1: {}", text(&pick(rng, &f.keys))).unwrap(),
            6 => writeln!(s, "sha256: {}", text(&pick(rng, &f.keys))).unwrap(),
            7 => writeln!(s, "hash: {}", fingerprint(&pick(rng, &f.keys))).unwrap(),
            _ => writeln!(s, "key: {}", text(&pick(rng, &f.certs))).unwrap(),
        }
    }
    (s, ca)
}

/// What `ssh-keygen -Q` says of each file, in order: revoked or not.
fn oracle(krl: &Path, files: &[PathBuf]) -> Vec<bool> {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .args(files),
        T,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        files.len(),
        "ssh-keygen -Q: {stdout}{}",
        stderr(&out)
    );
    lines
        .iter()
        .map(|l| {
            assert!(l.ends_with(": REVOKED") || l.ends_with(": ok"), "{l}");
            l.ends_with(": REVOKED")
        })
        .collect()
}

fn ours(krl: &Krl, file: &Path) -> bool {
    let line = text(file);
    if line.contains("-cert-v01@openssh.com") {
        let c = ssh_key::Certificate::from_openssh(&line).unwrap();
        krl.revokes_cert(c.signature_key(), c.serial(), c.key_id(), c.public_key())
            .is_some()
    } else {
        let k = ssh_key::PublicKey::from_openssh(&line).unwrap();
        krl.revokes_key(k.key_data()).is_some()
    }
}

#[test]
fn the_reader_agrees_with_ssh_keygen_on_every_krl_it_writes() {
    let mut rng = Rng(0x5eed_0021);
    let f = fixture(&mut rng);
    let d = f.dir.path();
    let files: Vec<PathBuf> = f
        .keys
        .iter()
        .chain(&f.certs)
        .chain(&f.cas)
        .cloned()
        .collect();
    let (mut revoked, mut spared, mut kinds) = (0, 0, std::collections::BTreeSet::new());
    for case in 0..CASES {
        let (spec, ca) = spec(&mut rng, &f);
        let spec_path = d.join("spec");
        fs::write(&spec_path, &spec).unwrap();
        let krl_path = d.join("krl");
        let _ = fs::remove_file(&krl_path);
        let version = rng.below(1 << 40);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-k", "-f"]).arg(&krl_path);
        cmd.args(["-z", &version.to_string()]);
        if let Some(ca) = &ca {
            cmd.arg("-s").arg(ca);
        }
        must(
            &run_bounded(cmd.arg(&spec_path), T),
            &format!("case {case}: ssh-keygen -k\n{spec}"),
        );
        let bytes = fs::read(&krl_path).unwrap();
        let krl = Krl::decode(&bytes).unwrap_or_else(|e| panic!("case {case}: {e}\n{spec}"));
        assert_eq!(krl.krl_version, version);
        // Which section kinds ssh-keygen chose (a bitmap, a range, ...).
        kinds.extend(section_kinds(&bytes));
        let want = oracle(&krl_path, &files);
        for (file, want) in files.iter().zip(want) {
            assert_eq!(
                ours(&krl, file),
                want,
                "case {case}: {} (ssh-keygen says revoked: {want})\nspec (CA {ca:?}):\n{spec}",
                file.display()
            );
            if want {
                revoked += 1;
            } else {
                spared += 1;
            }
        }
    }
    println!("{revoked} revoked and {spared} spared verdicts agreed; sections seen: {kinds:?}");
    assert!(revoked > 100 && spared > 100, "{revoked} / {spared}");
    // Every section and certificate subsection ssh-keygen writes was read.
    for kind in [
        "certs", "keys", "sha1", "sha256", "list", "range", "bitmap", "key-id",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} section in any case: {kinds:?}"
        );
    }
}

/// The kinds of section (and certificate subsection) in a KRL written by
/// ssh-keygen (the header is 8 + 4 + 8 + 8 + 8 bytes and two strings).
fn section_kinds(bytes: &[u8]) -> Vec<&'static str> {
    fn string(b: &[u8], at: usize) -> (usize, usize) {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        (at + 4, at + 4 + len)
    }
    let mut out = Vec::new();
    let mut at = 36;
    at = string(bytes, at).1;
    at = string(bytes, at).1;
    while at < bytes.len() {
        let kind = bytes[at];
        let (start, end) = string(bytes, at + 1);
        match kind {
            1 => {
                out.push("certs");
                let mut sub = string(bytes, start).1;
                sub = string(bytes, sub).1;
                while sub < end {
                    out.push(match bytes[sub] {
                        0x20 => "list",
                        0x21 => "range",
                        0x22 => "bitmap",
                        0x23 => "key-id",
                        _ => "other",
                    });
                    sub = string(bytes, sub + 1).1;
                }
            }
            2 => out.push("keys"),
            3 => out.push("sha1"),
            5 => out.push("sha256"),
            _ => out.push("other"),
        }
        at = end;
    }
    out
}

/// Whether `ssh-keygen -Q` reads the KRL at all (it exits 255 with no
/// verdicts when it refuses one).
fn oracle_reads(krl: &Path, file: &Path) -> bool {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(file),
        T,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    said.contains(": ok") || said.contains(": REVOKED")
}

#[test]
fn krls_ssh_keygen_cannot_write_are_read_as_ssh_keygen_reads_them() {
    use ztssh_proto::krl::write::{self, KrlWriter};
    let mut rng = Rng(0x5eed_0022);
    let f = fixture(&mut rng);
    let d = f.dir.path();
    let krl_path = d.join("krl");
    let files: Vec<PathBuf> = f.keys.iter().chain(&f.certs).cloned().collect();
    let blob = |p: &Path| {
        let k = ssh_key::PublicKey::from_openssh(&text(p)).unwrap();
        ssh_key::encoding::Encode::encode_vec(k.key_data()).unwrap()
    };
    // Key ids and serials under any CA (ssh-keygen -k needs -s for these),
    // several sections for one CA, and a CA revoked as a plain key.
    let cases: Vec<Vec<u8>> = vec![
        KrlWriter::new(1, 0, b"")
            .certs(b"", &[write::key_ids(&[b"bob", b"carol ci"])])
            .finish(),
        KrlWriter::new(2, 0, b"")
            .certs(
                b"",
                &[
                    write::serial_list(&[3, 7, 11, 19, 23]),
                    write::serial_range(30, 34),
                ],
            )
            .finish(),
        KrlWriter::new(3, 0, b"")
            .certs(
                &blob(&f.cas[0]),
                &[write::serial_bitmap(1, &[0, 4, 8, 12, 30])],
            )
            .certs(&blob(&f.cas[0]), &[write::key_ids(&[b"alice@laptop"])])
            .certs(b"", &[write::serial_list(&[2, 4, 6])])
            .finish(),
        KrlWriter::new(4, 0, b"").keys(&[blob(&f.cas[1])]).finish(),
    ];
    for (n, bytes) in cases.iter().enumerate() {
        fs::write(&krl_path, bytes).unwrap();
        let krl = Krl::decode(bytes).unwrap();
        let want = oracle(&krl_path, &files);
        for (file, want) in files.iter().zip(want) {
            assert_eq!(ours(&krl, file), want, "case {n}: {}", file.display());
        }
    }
    // What OpenSSH refuses, ztssh refuses (sshd would refuse every key).
    let ca = blob(&f.cas[0]);
    let refused: Vec<Vec<u8>> = vec![
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[write::serial_list(&[5, 0])])
            .finish(),
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[write::serial_range(9, 8)])
            .finish(),
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[write::serial_bitmap(0, &[0, 3])])
            .finish(),
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[write::serial_bitmap(u64::MAX - 2, &[0, 5])])
            .finish(),
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[(0x24, vec![])])
            .finish(),
        KrlWriter::new(1, 0, b"")
            .section(3, &[0, 0, 0, 2, 1, 2])
            .finish(),
        KrlWriter::new(1, 0, b"").section(9, b"").finish(),
        KrlWriter::new(1, 0, b"")
            .certs(&ca, &[write::key_ids(&[b"a\0b"])])
            .finish(),
    ];
    for (n, bytes) in refused.iter().enumerate() {
        fs::write(&krl_path, bytes).unwrap();
        assert!(
            !oracle_reads(&krl_path, &f.keys[0]),
            "case {n}: ssh-keygen reads it"
        );
        assert!(Krl::decode(bytes).is_err(), "case {n}: ztssh reads it");
    }
}
