//! Workload token verification CPU (issue 22's figure): what a platform
//! token adds to a handshake and to a renewal at the proxy, for RS256
//! (GitHub Actions, GitLab) and ES256 (Kubernetes on most clusters).
//!
//! Tokens come from the tests' issuer (`ztssh_tests::oidc`: keys made by
//! openssl, signed by jsonwebtoken), with GitHub's documented claims; the
//! proxy side is proto's verifier as the identity machine calls it:
//! - handshake: `verify` (header, the key by kid, the signature, then the
//!   claims, the audience, the times and the rules) and the replay
//!   record's `first_use`;
//! - renewal, the token in force sent again (a projected token between
//!   kubelet refreshes): `TokenVerified::check` alone (the identity machine
//!   knows the bytes by their digest and verifies nothing again);
//! - renewal, a fresh token: `verify`, `continues` and `first_use`.
//!
//! `cargo bench -p ztssh-tests --bench workload` (2,000 tokens per row;
//! `ZTSSH_BENCH_TOKENS`; `ZTSSH_BENCH_SHORT=1` for the 50 the suite runs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ztssh_proto::trust::workload::{
    self, Alg, Issuer, Issuers, KeySet, KeysInForce, ReplayCache, Rule,
};
use ztssh_tests::bench::{self, Better};
use ztssh_tests::oidc::{TestAlg, TestIssuer, github_claims};

const AUDIENCE: &str = "ztssh:web1";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn issuers(jwks: &str, now: u64) -> Issuers {
    Issuers::new(vec![Issuer {
        name: "github".into(),
        issuer: GITHUB.into(),
        audience: AUDIENCE.into(),
        algorithms: vec![Alg::Rs256, Alg::Es256],
        max_lifetime_secs: 3_600,
        skew_secs: 60,
        keys: Some(KeysInForce {
            set: Arc::new(KeySet::from_json(jwks.as_bytes()).expect("jwks")),
            fetched: now,
            max_age_secs: Some(86_400),
        }),
        rules: vec![Rule {
            principal: "deploy".into(),
            accounts: vec!["deploy".into()],
            claims: vec![
                ("repository".into(), "acme/app".into()),
                ("ref".into(), "refs/heads/main".into()),
                ("environment".into(), "prod".into()),
            ],
        }],
        tenant_claims: Vec::new(),
    }])
    .expect("issuers")
}

/// Microseconds per call of `f` over `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let short = std::env::var("ZTSSH_BENCH_SHORT").is_ok();
    let n: usize = std::env::var("ZTSSH_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if short { 50 } else { 2_000 });
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = TestIssuer::new(dir.path(), GITHUB);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let issuers = issuers(&issuer.jwks_json(), now);
    println!("workload token verification at the proxy, {n} tokens per row (µs per token)");
    println!(
        "{:<6} {:>10} {:>10} {:>12} {:>8}",
        "alg", "handshake", "same_token", "fresh_token", "bytes"
    );
    for alg in TestAlg::ALL {
        // Distinct tokens (each its own jti), minted before the clock runs.
        let tokens: Vec<String> = (0..n)
            .map(|_| {
                let c: Value = github_claims(
                    "acme/app",
                    "refs/heads/main",
                    Some("prod"),
                    AUDIENCE,
                    now,
                    now + 300,
                );
                issuer.mint(alg, &c)
            })
            .collect();
        let bytes = tokens[0].len();
        let mut replay = ReplayCache::new(4 * n + 16);
        let handshake = per_call(n, |i| {
            let t =
                workload::verify(&issuers, tokens[i].as_bytes(), "deploy", now).expect("verify");
            replay
                .first_use(t.id(), [7; 32], [8; 32], t.expires(), now)
                .expect("first use");
            black_box(t);
        });
        let first =
            workload::verify(&issuers, tokens[0].as_bytes(), "deploy", now).expect("verify");
        let same = per_call(n, |_| {
            first.check(&issuers, now).expect("check");
        });
        let fresh: Vec<String> = (0..n)
            .map(|_| {
                let c = github_claims(
                    "acme/app",
                    "refs/heads/main",
                    Some("prod"),
                    AUDIENCE,
                    now,
                    now + 300,
                );
                issuer.mint(alg, &c)
            })
            .collect();
        let renewal = per_call(n, |i| {
            let t = workload::verify(&issuers, fresh[i].as_bytes(), "deploy", now).expect("verify");
            first.continues(&t).expect("continues");
            replay
                .first_use(t.id(), [7; 32], [8; 32], t.expires(), now)
                .expect("first use");
            black_box(t);
        });
        let name = alg.name();
        println!("{name:<6} {handshake:>10.1} {same:>10.2} {renewal:>12.1} {bytes:>8}");
        let key = name.to_ascii_lowercase();
        bench::figure(
            &format!("workload/{key}/handshake_us"),
            handshake,
            "µs",
            Better::Lower,
        );
        bench::figure(
            &format!("workload/{key}/renewal_same_token_us"),
            same,
            "µs",
            Better::Lower,
        );
        bench::figure(
            &format!("workload/{key}/renewal_fresh_token_us"),
            renewal,
            "µs",
            Better::Lower,
        );
    }
}
