//! The proxy's side of an established tunnel, a `ServerConn` as the proxy
//! drives it, fed records that the client's real keys sealed around fuzzed
//! plaintexts, with the proxy's timers, sshd's reads, the client's reads and
//! revocation rechecks interleaved on virtual time chosen by the fuzzer.
//! Invariants: no panic; no ACK and no renewed certificate without a genuine
//! proof or renewal (which fuzzed bytes cannot carry); the principal and the
//! certificate never change; while the session lives, sshd gets exactly the
//! body of each DATA record and nothing from any other record; once it is
//! terminated, sshd gets nothing at all, whatever the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::conn::{ClientConn, ServerEvent};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::identity::{ClientIdentity, Timing};
use ztssh_proto_fuzz::{Allow, now};

const TIMING: Timing = Timing {
    interval_secs: 1,
    deadline_secs: 5,
    cert_ttl_secs: 300,
};

/// Records per input: each costs an AEAD seal and open.
const MAX_RECORDS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let (session, mut server) = ztssh_proto_fuzz::accepted(TIMING);
    // The client's record layer, to seal the fuzzed plaintexts with. It
    // reads ACCEPT and CERT like a real sidecar.
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        w.subca.public(),
    );
    let mut client = ClientConn::new(session.transport, identity, ztssh_proto_fuzz::rng(5));
    let wire = server.poll_transmit().to_vec();
    client.handle_peer(&wire, now(0));
    server.transmitted(wire.len(), now(0));
    assert!(client.accepted());

    let serial = server.identity().serial();
    let plain_len = FrameSize::default().get() - 16;
    let max_data = FrameSize::default().max_data();
    let mut mono = 0u64;
    let mut terminated = false;
    let mut records = 0;
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let arg = input.first().copied().unwrap_or(0);
        match op % 5 {
            0 => {
                // One record around the next fuzzed plaintext.
                if records == MAX_RECORDS {
                    break;
                }
                records += 1;
                let (plain, rest) = input.split_at(plain_len.min(input.len()));
                input = rest;
                let mut padded = plain.to_vec();
                padded.resize(plain_len, 0);
                client.queue_plaintext_raw(plain, now(mono));
                let wire = client.poll_transmit().to_vec();
                client.transmitted(wire.len(), now(mono));
                let before = server.poll_local().len();
                server.handle_peer(&wire, &w.subca, &Allow, now(mono));
                if server.ended().is_none() {
                    let got = &server.poll_local()[before..];
                    if padded[0] == 1 {
                        let len = usize::from(u16::from_be_bytes([padded[2], padded[3]]));
                        assert!(len <= max_data, "oversized DATA accepted");
                        assert_eq!(got, &padded[4..4 + len], "sshd got other bytes");
                    } else {
                        assert!(got.is_empty(), "sshd got bytes from a non-DATA record");
                    }
                }
            }
            1 => {
                // Time passes (0 to 5.1 s) and the proxy's timers run.
                mono += u64::from(arg) * 20;
                server.handle_timeout(now(mono), [arg; 32]);
            }
            2 => {
                // sshd reads some.
                let n = server.poll_local().len().min(usize::from(arg) * 64);
                server.delivered(n, now(mono));
            }
            3 => {
                // The client reads some (and ignores it: it would answer
                // challenges with genuine proofs).
                let n = server.poll_transmit().len().min(usize::from(arg) * 64);
                server.transmitted(n, now(mono));
            }
            _ => server.recheck(&Allow, now(mono)),
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::ProofOk { .. } => panic!("ACK for a fuzzed message"),
                ServerEvent::Renewed => panic!("certificate renewed by a fuzzed message"),
                // The session logged in with no user certificate: a fuzzed
                // USER_CERT ends it, never replaces one.
                ServerEvent::UserCertRenewed { .. } => {
                    panic!("a user certificate replaced by a fuzzed message")
                }
                ServerEvent::Terminated(_) => {
                    assert!(!terminated, "terminated twice");
                    terminated = true;
                }
                _ => {}
            }
        }
        if terminated {
            assert!(server.ended().is_some());
            assert!(
                server.poll_local().is_empty(),
                "sshd gets bytes after the kill"
            );
            assert!(!server.wants_peer() && !server.wants_local());
        }
        assert_eq!(server.identity().principal(), "alice");
        assert_eq!(server.identity().serial(), serial);
        assert_eq!(server.identity().proofs(), 0);
        assert_eq!(server.identity().renewals(), 0);
    }
});
