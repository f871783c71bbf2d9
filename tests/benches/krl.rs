//! The user CA's KRL at scale: a KRL that revokes 100,000 random serials
//! (as `ssh-keygen -k -s CA` writes it: a serial list) and 100,000 keys by
//! SHA-256 hash; how long proto's reader takes to decode it, what the
//! decoded KRL holds in memory, and how long one lookup takes.
//!
//! `cargo bench -p ztssh-tests --bench krl` (`ZTSSH_BENCH_KRL_SERIALS` to
//! change the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_key::public::{Ed25519PublicKey, KeyData};
use ztssh_proto::krl::Krl;
use ztssh_proto::krl::write::{KrlWriter, sha256_of};
use ztssh_tests::bench::{self, Better};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(120);
const RUNS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_decode(bytes: &[u8]) -> (Duration, Krl) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let krl = Krl::decode(bytes).expect("decode");
        times.push(start.elapsed());
        last = Some(krl);
    }
    (median(times), last.unwrap())
}

fn main() {
    let n: u64 = std::env::var("ZTSSH_BENCH_KRL_SERIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", "ed25519", "-f"])
            .arg(&ca),
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Random 63-bit serials (splitmix64), as CAs that pick random serials write them.
    let mut state = 0x5eed_0021u64;
    let mut spec = String::with_capacity(30 * n as usize);
    for _ in 0..n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        writeln!(spec, "serial: {}", (z ^ (z >> 31)) >> 1 | 1).unwrap();
    }
    let spec_path = dir.path().join("spec");
    std::fs::write(&spec_path, spec).unwrap();
    let krl_path = dir.path().join("krl");
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-k", "-z", "1", "-f"])
            .arg(&krl_path)
            .arg("-s")
            .arg(ca.with_extension("pub"))
            .arg(&spec_path),
        T,
    );
    assert!(out.status.success(), "ssh-keygen -k: {}", stderr(&out));
    let serial_bytes = std::fs::read(&krl_path).unwrap();
    let (serial_time, serial_krl) = time_decode(&serial_bytes);
    assert_eq!(serial_krl.counts().1, n as usize);

    // The same count of keys by SHA-256 hash (the test writer: ssh-keygen
    // would need 100,000 key files).
    let hashes: Vec<[u8; 32]> = (0..n).map(|i| sha256_of(&i.to_be_bytes())).collect();
    let key_bytes = KrlWriter::new(1, 0, b"").sha256(&hashes).finish();
    let (key_time, key_krl) = time_decode(&key_bytes);

    // One lookup: a key that is not revoked (every hash compared by binary search).
    let probe = KeyData::Ed25519(Ed25519PublicKey([7; 32]));
    let start = Instant::now();
    for _ in 0..10_000 {
        assert!(key_krl.revokes_key(&probe).is_none());
    }
    let lookup = start.elapsed() / 10_000;

    println!(
        "KRL with {n} serials: {} bytes, decoded in {:.2} ms, holds {} KiB",
        serial_bytes.len(),
        serial_time.as_secs_f64() * 1e3,
        serial_krl.heap_bytes() / 1024
    );
    println!(
        "KRL with {n} SHA-256 hashes: {} bytes, decoded in {:.2} ms, holds {} KiB; one key lookup {:.2} µs",
        key_bytes.len(),
        key_time.as_secs_f64() * 1e3,
        key_krl.heap_bytes() / 1024,
        lookup.as_secs_f64() * 1e6
    );
    let k = |what: &str| format!("krl/entries={n}/{what}");
    bench::figure(
        &k("serials_decode"),
        serial_time.as_secs_f64() * 1e3,
        "ms",
        Better::Lower,
    );
    bench::figure(
        &k("serials_heap"),
        serial_krl.heap_bytes() as f64 / 1024.0,
        "KiB",
        Better::Lower,
    );
    bench::figure(
        &k("sha256_decode"),
        key_time.as_secs_f64() * 1e3,
        "ms",
        Better::Lower,
    );
    bench::figure(
        &k("sha256_heap"),
        key_krl.heap_bytes() as f64 / 1024.0,
        "KiB",
        Better::Lower,
    );
    bench::figure(
        &k("sha256_lookup"),
        lookup.as_secs_f64() * 1e6,
        "us",
        Better::Lower,
    );
}
