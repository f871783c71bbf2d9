//! Rekey on an honest client and proxy pair: the fuzzer picks the data
//! each side sends, when each side (or both at once) starts a rekey, how
//! the wire is cut in each direction, when time passes, and may slip in a
//! REKEY record of its own (fuzzed plaintext under the client's real keys).
//! Invariants: no panic; without a forged record, nothing ends, every byte
//! reaches the other side in order and both sides count the same rekeys;
//! with one, the proxy either ignores nothing (a REKEY record it cannot use
//! ends the session) or goes on, and once ended sshd gets nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::conn::{ClientConn, ClientConnEvent, ServerEvent};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::identity::{ClientIdentity, Timing};
use ztssh_proto_fuzz::{Allow, now};

const TIMING: Timing = Timing {
    interval_secs: 3600,
    deadline_secs: 60,
    cert_ttl_secs: 3600,
};

/// Rekeys started per input: each costs an ML-KEM-768 exchange.
const MAX_REKEYS: usize = 6;
/// Virtual time stays below every bound an idle honest pair would hit.
const MAX_MONO: u64 = 19_000;
/// Operations per input.
const MAX_OPS: usize = 64;

fn filler(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let (session, mut server) = ztssh_proto_fuzz::accepted(TIMING);
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        w.subca.public(),
    );
    let mut client = ClientConn::new(session.transport, identity);
    // The fuzzer starts rekeys at any moment, closer together than the
    // rate limit on a peer's INIT allows (rekey_tests covers that limit).
    client.allow_fast_rekeys();
    server.allow_fast_rekeys();
    let wire = server.poll_transmit().to_vec();
    client.handle_peer(&wire, 0);
    server.transmitted(wire.len(), now(0));
    assert!(client.accepted());

    let plain_len = FrameSize::default().get() - 16;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut sshd, mut ssh) = (Vec::new(), Vec::new());
    let (mut server_rekeys, mut client_rekeys) = (0u64, 0u64);
    let mut mono = 0u64;
    let mut forged = false;
    let mut started = 0;
    let mut ended_at: Option<usize> = None;
    let mut input = data;
    for _ in 0..MAX_OPS {
        let Some((&op, rest)) = input.split_first() else {
            break;
        };
        input = rest;
        let arg = input.first().copied().unwrap_or(0);
        input = input.get(1..).unwrap_or_default();
        let alive = server.ended().is_none() && !client.is_done();
        match op % 16 {
            // Up to about 6 KB a write: several 1 KiB records, so writes
            // still span records and fill the windows over a few ops,
            // without the copying of larger writes slowing every run.
            0 | 8 if alive && client.wants_local() => {
                let d = filler(arg, usize::from(arg) * 23 + 1);
                client.handle_local(&d, mono);
                up.extend_from_slice(&d);
            }
            1 | 9 if alive && server.wants_local() => {
                let d = filler(arg ^ 0x55, usize::from(arg) * 29 + 1);
                server.handle_local(&d, now(mono));
                down.extend_from_slice(&d);
            }
            2 if started < MAX_REKEYS => {
                started += 1;
                client.start_rekey(mono);
            }
            3 if started < MAX_REKEYS => {
                started += 1;
                server.start_rekey(now(mono));
            }
            7 if started < MAX_REKEYS => {
                // Both at once: the client's INIT wins.
                started += 1;
                client.start_rekey(mono);
                server.start_rekey(now(mono));
            }
            4 | 10 | 12 => {
                // The wire from the client, cut after `arg * 61` bytes.
                let n = client.poll_transmit().len().min(usize::from(arg) * 61 + 1);
                if n > 0 && server.wants_peer() {
                    let part = client.poll_transmit()[..n].to_vec();
                    server.handle_peer(&part, &w.subca, &Allow, now(mono));
                    client.transmitted(n, mono);
                }
            }
            5 | 11 | 13 => {
                let n = server.poll_transmit().len().min(usize::from(arg) * 61 + 1);
                if n > 0 && client.wants_peer() {
                    let part = server.poll_transmit()[..n].to_vec();
                    client.handle_peer(&part, mono);
                    server.transmitted(n, now(mono));
                }
            }
            6 | 14 => {
                // Time passes, but never past the sidecar's first write
                // bound (20 s), which an honest pair that the fuzzer stops
                // moving bytes for would reach.
                mono = (mono + u64::from(arg) * 100).min(MAX_MONO);
                server.handle_timeout(now(mono), [arg; 32]);
                client.handle_timeout(mono);
            }
            15 if !forged && alive => {
                // A REKEY record with fuzzed contents, under the real keys.
                forged = true;
                let take = input.len().min(plain_len - 1);
                let mut plain = vec![4u8];
                plain.extend_from_slice(&input[..take]);
                input = &input[take..];
                client.queue_plaintext_raw(&plain, mono);
            }
            _ => {}
        }
        // sshd and ssh read everything.
        let n = server.poll_local().len();
        sshd.extend_from_slice(server.poll_local());
        server.delivered(n, now(mono));
        let n = client.poll_local().len();
        ssh.extend_from_slice(client.poll_local());
        client.delivered(n, mono);
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Rekeyed { count } => {
                    server_rekeys += 1;
                    assert_eq!(count, server_rekeys);
                }
                ServerEvent::Terminated(e) => {
                    assert!(forged, "an honest pair was ended: {e:?}");
                    ended_at = Some(sshd.len());
                }
                _ => {}
            }
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientConnEvent::Rekeyed { count } => {
                    client_rekeys += 1;
                    assert_eq!(count, client_rekeys);
                }
                ClientConnEvent::Ended(e) => assert!(forged, "an honest client ended: {e:?}"),
                _ => {}
            }
        }
        if let Some(at) = ended_at {
            assert_eq!(sshd.len(), at, "sshd got bytes after the kill");
        }
        assert!(up.starts_with(&sshd), "sshd got other bytes");
        assert!(down.starts_with(&ssh), "ssh got other bytes");
    }
    if forged {
        return;
    }
    // Let everything settle: both sides see the same rekeys and all data.
    for _ in 0..64 {
        let c = client.poll_transmit().to_vec();
        if !c.is_empty() {
            server.handle_peer(&c, &w.subca, &Allow, now(mono));
            client.transmitted(c.len(), mono);
        }
        let s = server.poll_transmit().to_vec();
        if !s.is_empty() {
            client.handle_peer(&s, mono);
            server.transmitted(s.len(), now(mono));
        }
        let n = server.poll_local().len();
        sshd.extend_from_slice(server.poll_local());
        server.delivered(n, now(mono));
        let n = client.poll_local().len();
        ssh.extend_from_slice(client.poll_local());
        client.delivered(n, mono);
        if c.is_empty() && s.is_empty() {
            break;
        }
    }
    assert!(server.ended().is_none() && !client.is_done());
    assert_eq!(sshd, up);
    assert_eq!(ssh, down);
    assert_eq!(server.rekeys(), client.rekeys());
    assert!(server.rekeys() <= started as u64);
});
