//! Harness for end-to-end tests: a private real OpenSSH `sshd` on a free
//! loopback port with its own config and host key, a temporary CA, the real
//! `ztssh-proxy` binary, and the real `ssh`, `scp`, `sftp` and `rsync`
//! clients with `ProxyCommand ztssh-sidecar %h %p`.
//!
//! Every wait is bounded; every process started here is stopped by PID on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::Path;
use std::time::Duration;

pub use tempfile::TempDir;

pub mod agent;
pub mod bench;
mod builder;
mod burst;
pub mod listserver;
mod net;
pub mod netns;
pub mod nginx;
pub mod oidc;
mod pki;
mod process;
mod proxy;
pub mod skagent;
mod sshd;
mod wait;
mod world;
pub mod zsk;

pub use builder::*;
pub use burst::*;
pub use net::*;
pub use pki::*;
pub use process::*;
pub use proxy::*;
pub use sshd::*;
pub use wait::*;
pub use world::*;

/// The `p` quantile (0.0 to 1.0) of durations sorted ascending (nearest
/// rank); `sorted` must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The loopback source of the benches' session `i`, `per_source` sessions
/// to each address of 127.20.0.0/16 (250 addresses per /24, from .1).
pub fn bench_source(i: usize, per_source: usize) -> String {
    let s = i / per_source;
    format!("127.20.{}.{}", s / 250, s % 250 + 1)
}

/// Deterministic pseudo-random bytes (xorshift), for large test files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
