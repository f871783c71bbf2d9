//! The proxy's challenge loop, a `ServerConn` as the proxy drives it,
//! against a client that mixes genuine proofs with replays, tampering, stale
//! and foreign messages, on virtual time chosen by the fuzzer. The client
//! reads everything the proxy sends at once, so it always knows the latest
//! challenge. Invariants: a proof is accepted (ProofOk, and an ACK on the
//! wire) only for a genuine proof for the challenge outstanding at that
//! moment; nothing renews; once the proxy ends a session it never accepts
//! anything again and sends nothing after its TERMINATE.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::conn::{RekeyPolicy, ServerConn, ServerEvent};
use ztssh_proto::frame::{Control, Event, Opener};
use ztssh_proto::identity::{ClientEvent, ClientIdentity, Timing};
use ztssh_proto_fuzz::{Allow, now};

const TIMING: Timing = Timing {
    interval_secs: 2,
    deadline_secs: 3,
    cert_ttl_secs: 60,
};

/// The client reads everything the proxy sent: its control messages.
fn read(server: &mut ServerConn, opener: &mut Opener, mono: u64) -> Vec<Control> {
    let wire = server.poll_transmit().to_vec();
    server.transmitted(wire.len(), now(mono));
    let (mut data, mut events) = (Vec::new(), Vec::new());
    let used = opener
        .open_all(&wire, &mut data, &mut events)
        .expect("the proxy's records open");
    assert!(data.is_empty(), "the proxy sent DATA with no sshd data");
    let mut out = Vec::new();
    for ev in events {
        match ev {
            Event::Control(c) => out.push(c),
            Event::Close => panic!("CLOSE while sshd is open"),
            // Its policy is a day; the soup's virtual time stays far below.
            Event::Rekey(_) => panic!("the proxy started a rekey within the soup"),
        }
    }
    // Nothing is queued after a TERMINATE.
    assert_eq!(used, wire.len(), "bytes after the TERMINATE");
    if let Some(i) = out
        .iter()
        .position(|c| matches!(c, Control::Terminate { .. }))
    {
        assert_eq!(i + 1, out.len(), "something after the TERMINATE: {out:?}");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let (session, mut server) = ztssh_proto_fuzz::accepted(TIMING);
    // At most 2.55 s per 2-byte step: a day is out of reach of any input
    // libFuzzer makes here, so the proxy never starts a rekey the soup's
    // client would have to answer.
    let a_day =
        RekeyPolicy::new(86_400, ztssh_proto::frame::MAX_REKEY_AFTER_BYTES).expect("policy");
    server.set_rekey_policy(a_day, now(0));
    let mut sealer = session.transport.sealer;
    let mut opener = session.transport.opener;
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        w.subca.public(),
    );
    let first = read(&mut server, &mut opener, 0);
    assert!(matches!(first[0], Control::Accept { .. }));
    assert!(matches!(
        client.handle(&first[1], 0),
        Ok(ClientEvent::CertInstalled { .. })
    ));
    let mut mono = 0u64;
    let mut outstanding: Option<Control> = None;
    let mut last_proof: Option<Control> = None;
    let mut accepted: Vec<u64> = Vec::new();
    let mut acked: Vec<u64> = Vec::new();
    let mut ended = false;
    let mut terminate_seen = false;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        // Time moves forward by 0..=2.55 s per step.
        mono += u64::from(arg) * 10;
        let (msg, genuine) = match op % 6 {
            0 => {
                server.handle_timeout(now(mono), [arg; 32]);
                (None, false)
            }
            1 => {
                // A genuine proof for the latest challenge the client saw.
                let Some(ch) = outstanding.clone() else {
                    continue;
                };
                let Ok(ClientEvent::Reply(p)) = client.handle(&ch, mono) else {
                    continue;
                };
                last_proof = Some(p.clone());
                (Some(p), true)
            }
            2 => match last_proof.clone() {
                Some(p) => (Some(p), false), // replay
                None => continue,
            },
            3 => match last_proof.clone() {
                Some(Control::Proof { seq, cert, mut sig }) => {
                    sig[usize::from(arg) % 64] ^= 1 << (arg % 8);
                    (Some(Control::Proof { seq, cert, sig }), false)
                }
                _ => continue,
            },
            4 => match last_proof.clone() {
                Some(Control::Proof { seq, cert, sig }) => (
                    Some(Control::Proof {
                        seq: seq.wrapping_add(u64::from(arg) + 1),
                        cert,
                        sig,
                    }),
                    false,
                ),
                _ => continue,
            },
            _ => {
                let rest: Vec<u8> = bytes.by_ref().take(usize::from(arg)).collect();
                match Control::decode(&rest) {
                    Ok(m) => (Some(m), false),
                    Err(_) => continue,
                }
            }
        };
        let current = match &outstanding {
            Some(Control::Challenge { seq, .. }) => Some(*seq),
            _ => None,
        };
        let sent_seq = match &msg {
            Some(Control::Proof { seq, .. }) => Some(*seq),
            _ => None,
        };
        if let Some(msg) = msg {
            let mut wire = Vec::new();
            sealer.seal_control(&msg, &mut wire).expect("seal");
            // The proxy closes the session on a failure; keep feeding it
            // anyway to check that it never accepts anything again.
            server.handle_peer(&wire, &w.subca, &Allow, now(mono));
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::ProofOk { seq } => {
                    assert!(!ended, "a proof accepted after the session ended");
                    assert!(genuine, "a proof accepted that was not genuine");
                    assert_eq!(
                        Some(seq),
                        current,
                        "a proof accepted for a challenge that was not outstanding"
                    );
                    assert_eq!(sent_seq, Some(seq));
                    accepted.push(seq);
                    outstanding = None;
                }
                ServerEvent::Renewed => panic!("renewed by the soup"),
                ServerEvent::Terminated(_) | ServerEvent::Closed => ended = true,
                _ => {}
            }
        }
        if !terminate_seen {
            for c in read(&mut server, &mut opener, mono) {
                match c {
                    Control::Challenge { .. } => {
                        assert!(!ended, "a challenge after the session ended");
                        outstanding = Some(c);
                    }
                    Control::Ack { seq } => acked.push(seq),
                    Control::Terminate { .. } => {
                        assert!(ended);
                        terminate_seen = true;
                    }
                    other => panic!("unexpected {other:?} from the proxy"),
                }
            }
        } else {
            assert!(server.poll_transmit().is_empty(), "bytes after TERMINATE");
        }
        // Every ACK on the wire is for a proof the proxy accepted, in order.
        assert_eq!(acked, accepted);
        assert_eq!(server.identity().proofs(), accepted.len() as u64);
    }
});
