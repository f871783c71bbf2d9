//! CPU cost of verifying one identity proof at the proxy (the whole
//! `ServerIdentity::handle` for a PROOF: certificate decode and signature,
//! session-key signature, authority check).
//!
//! `cargo bench -p ztssh-proto --bench proof`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use ztssh_proto::cert::Serial;
use ztssh_proto::control::Control;
use ztssh_proto::identity::{
    Authority, ClientEvent, ClientIdentity, Ended, ServerIdentity, Timing,
};
use ztssh_proto::keys::{SigningKey, random_bytes};
use ztssh_proto::time::UnixTime;

struct AllowAll;

impl Authority for AllowAll {
    fn check(&self, _: &str, _: &ssh_key::PublicKey, _: &Serial, _: UnixTime) -> Result<(), Ended> {
        Ok(())
    }
    fn may_issue(&self, _: UnixTime) -> Result<(), Ended> {
        Ok(())
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: u32 = std::env::var("ZTSSH_BENCH_PROOFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let subca = SigningKey::generate();
    let session = SigningKey::generate();
    let user = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[9; 32]));
    let timing = Timing {
        interval_secs: 1,
        deadline_secs: 10,
        cert_ttl_secs: 3600,
    };
    let now = 1_800_000_000;
    let h = [7; 32];
    let started = ServerIdentity::start(
        h,
        "alice",
        user.public_key().clone(),
        session.public(),
        &subca,
        &AllowAll,
        timing,
        now,
        0,
    )
    .expect("start");
    let mut server = started.identity;
    let mut client = ClientIdentity::new(h, "alice", session, subca.public());
    client.handle(&started.cert, now).expect("cert");
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let mono = server.next_wakeup();
        let ch = server
            .poll(now, mono, random_bytes())
            .expect("poll")
            .expect("challenge");
        let ClientEvent::Reply(proof) = client.handle(&ch, now).expect("answer") else {
            panic!("no proof")
        };
        let t = Instant::now();
        let ack = server.handle(proof, &subca, &AllowAll, now, mono);
        spent += t.elapsed();
        assert!(matches!(ack, Ok(Control::Ack { .. })));
    }
    let per = spent / rounds;
    println!(
        "proof verification at the proxy: {:.1} µs per proof (mean of {rounds}, one core)",
        per.as_secs_f64() * 1e6
    );
    println!(
        "= {:.0} proofs/s per core; at one challenge per 30 s that is {:.0} sessions per core",
        1.0 / per.as_secs_f64(),
        30.0 / per.as_secs_f64()
    );
}
