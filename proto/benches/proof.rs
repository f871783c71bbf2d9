//! CPU cost of verifying one identity proof at the proxy (the whole
//! `ServerIdentity::handle` for a PROOF: certificate decode and comparison
//! with the one issued, session-key signature, authority check).
//!
//! `cargo bench -p ztssh-proto --bench proof` (20,000 proofs;
//! `ZTSSH_BENCH_PROOFS` to change, `ZTSSH_BENCH_SHORT=1` for the 2,000 the
//! test suite runs)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use ssh_key::HashAlg;
use ztssh_proto::cert::{LicenceBody, Serial};
use ztssh_proto::control::Control;
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{self, ClientConfig};
use ztssh_proto::identity::{
    Authority, Checkpoint, ClientEvent, ClientIdentity, Ended, Handled, ServerIdentity, Subject,
    Timing,
};
use ztssh_proto::keys::{NoiseKeypair, SigningKey, random_bytes};
use ztssh_proto::labels::SSHSIG_NAMESPACE_HANDSHAKE;
use ztssh_proto::time::UnixTime;

struct AllowAll;

impl Authority for AllowAll {
    fn check(&self, _: &Subject<'_>, _: Checkpoint<'_>, _: UnixTime) -> Result<(), Ended> {
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
        .unwrap_or(if std::env::var_os("ZTSSH_BENCH_SHORT").is_some() {
            2_000
        } else {
            20_000
        });
    let now = 1_800_000_000;
    let user = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[9; 32]));
    // A seeded random source: the run repeats exactly.
    let mut rng = chacha20::ChaCha20Rng::seed_from_u64(1);
    // A real handshake: only an authorized client gets a session.
    let root = SigningKey::generate(&mut rng);
    let noise = NoiseKeypair::generate(&mut rng);
    let subca = SigningKey::generate(&mut rng);
    let licence = LicenceBody {
        serial: Serial::random(&mut rng),
        server_id: "web1".into(),
        hostnames: vec!["web1".into()],
        subca_key: subca.public(),
        noise_key: noise.public(),
        not_before: now - 10,
        not_after: now + 86_400,
        issuer: root.public(),
    }
    .sign(&root)
    .expect("licence")
    .verify(&root.public().into(), now)
    .expect("verified");
    let server =
        handshake::server_start(&noise, &licence, FrameSize::default(), &mut rng).expect("server");
    let (client, msg1) = handshake::client_start(
        ClientConfig {
            root: root.public().into(),
            host: "web1".into(),
            frame_size: FrameSize::default(),
        },
        &mut rng,
    )
    .expect("client");
    let (server, msg2) = server.handle_client_hello(&msg1, &mut rng).expect("msg2");
    let verified = client
        .handle_server_hello(&msg2, now, &mut rng)
        .expect("verified");
    let sig = user
        .sign(
            SSHSIG_NAMESPACE_HANDSHAKE,
            HashAlg::Sha512,
            &verified.user_signed_data(),
        )
        .expect("sign");
    let (session, msg3) = verified
        .into_client_auth("alice", user.public_key(), &sig)
        .expect("msg3");
    let authorized = server
        .handle_client_auth(&msg3)
        .ok()
        .and_then(handshake::ClientAuth::authenticated)
        .expect("authenticated")
        .authorize(&AllowAll, now)
        .expect("authorized");

    // Challenges back to back, so the virtual clock stands still and the
    // certificate never expires however many rounds run.
    let timing = Timing {
        interval_secs: 0,
        deadline_secs: 10,
        cert_ttl_secs: 3600,
    };
    let started = ServerIdentity::start(authorized, &subca, &AllowAll, timing, now, 0, &mut rng)
        .expect("start");
    let mut server = started.identity;
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        subca.public(),
    );
    client.handle(&started.cert, 0).expect("cert");
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let mono = server.next_wakeup();
        let ch = server
            .poll(now, mono, random_bytes(&mut rng))
            .expect("poll")
            .expect("challenge");
        let ClientEvent::Reply(proof) = client.handle(&ch, mono).expect("answer") else {
            panic!("no proof")
        };
        let t = Instant::now();
        let ack = server.handle(proof, &subca, &AllowAll, now, mono, &mut rng);
        spent += t.elapsed();
        assert!(matches!(ack, Ok(Handled::Proved(Control::Ack { .. }))));
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
    // The machine-readable line of docs/BENCHMARKS.md's record (the format
    // of `ztssh_tests::bench`, which this crate cannot depend on).
    println!(
        "BENCH proof/proofs={rounds}/per_proof {:.1} µs lower",
        per.as_secs_f64() * 1e6
    );
}
