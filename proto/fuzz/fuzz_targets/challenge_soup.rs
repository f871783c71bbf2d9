//! The proxy's challenge state machine against a client that mixes genuine
//! proofs with replays, tampering, stale and foreign messages, on virtual
//! time chosen by the fuzzer. Invariant: an ACK is only ever given to a
//! genuine proof for the challenge outstanding at that moment, and once the
//! machine ends a session it never acknowledges anything again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::frame::Control;
use ztssh_proto::identity::{ClientEvent, ClientIdentity, ServerIdentity, Timing};
use ztssh_proto::keys::SigningKey;
use ztssh_proto_fuzz::Allow;

const TIMING: Timing = Timing {
    interval_secs: 2,
    deadline_secs: 3,
    cert_ttl_secs: 60,
};

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let h = [4u8; 32];
    let session = SigningKey::generate();
    let user = w.user.public_key().clone();
    let t0 = ztssh_proto_fuzz::NOW;
    let started = ServerIdentity::start(
        h,
        "alice",
        user,
        session.public(),
        &w.subca,
        &Allow,
        TIMING,
        t0,
        0,
    )
    .expect("start");
    let mut server = started.identity;
    let mut client = ClientIdentity::new(h, "alice", session, w.subca.public());
    client.handle(&started.cert, t0).expect("install");
    let mut mono = 0u64;
    let mut outstanding: Option<Control> = None;
    let mut last_proof: Option<Control> = None;
    let mut ended = false;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        // Time moves forward by 0..=2.55 s per step.
        mono += u64::from(arg) * 10;
        let now = t0 + mono / 1000;
        let (msg, genuine) = match op % 6 {
            0 => {
                match server.poll(now, mono, [arg; 32]) {
                    Ok(Some(ch)) => outstanding = Some(ch),
                    Ok(None) => {}
                    Err(_) => ended = true,
                }
                continue;
            }
            1 => {
                // A genuine proof for the latest challenge the client saw.
                let Some(ch) = outstanding.clone() else {
                    continue;
                };
                let Ok(ClientEvent::Reply(p)) = client.handle(&ch, now) else {
                    continue;
                };
                last_proof = Some(p.clone());
                (p, true)
            }
            2 => match last_proof.clone() {
                Some(p) => (p, false), // replay
                None => continue,
            },
            3 => match last_proof.clone() {
                Some(Control::Proof { seq, cert, mut sig }) => {
                    sig[usize::from(arg) % 64] ^= 1 << (arg % 8);
                    (Control::Proof { seq, cert, sig }, false)
                }
                _ => continue,
            },
            4 => match last_proof.clone() {
                Some(Control::Proof { seq, cert, sig }) => (
                    Control::Proof {
                        seq: seq.wrapping_add(u64::from(arg) + 1),
                        cert,
                        sig,
                    },
                    false,
                ),
                _ => continue,
            },
            _ => {
                let rest: Vec<u8> = bytes.by_ref().take(usize::from(arg)).collect();
                match Control::decode(&rest) {
                    Ok(m) => (m, false),
                    Err(_) => continue,
                }
            }
        };
        let current = match &outstanding {
            Some(Control::Challenge { seq, .. }) => Some(*seq),
            _ => None,
        };
        let sent_seq = match &msg {
            Control::Proof { seq, .. } => Some(*seq),
            _ => None,
        };
        match server.handle(msg, &w.subca, &Allow, now, mono) {
            Ok(Control::Ack { seq }) => {
                assert!(!ended, "ACK after the session ended");
                assert!(genuine, "ACK for a message that was not a genuine proof");
                assert_eq!(
                    Some(seq),
                    current,
                    "ACK for a challenge that was not outstanding"
                );
                assert_eq!(sent_seq, Some(seq));
                outstanding = None;
            }
            Ok(other) => panic!("unexpected reply {other:?}"),
            // The proxy closes the session here; keep feeding the machine
            // anyway to check that it never acknowledges anything again.
            Err(_) => ended = true,
        }
    }
});
