//! Rekey on an honest client and proxy pair: the fuzzer picks the data
//! each side sends, when sshd or ssh stop reading (their queues are small
//! here, so backpressure comes quickly), when each side (or both at once)
//! starts a rekey, how the wire is cut in each direction, when time
//! passes, and may slip in a
//! REKEY record of its own (fuzzed plaintext under the client's real keys).
//! Invariants: no panic; without a forged record, nothing ends, every byte
//! reaches the other side in order and both sides count the same rekeys;
//! with one, the proxy either ignores nothing (a REKEY record it cannot use
//! ends the session) or goes on, and once ended sshd gets nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::conn::{ClientConn, ClientConnEvent, ServerConn, ServerEvent};
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

/// The connections' queue limit here: two or three writes (or a stalled
/// reader) fill a queue, so the backpressure paths are reached without
/// moving half a megabyte (HIGH_WATER) per input.
const HIGH_WATER: usize = 16 * 1024;
/// The largest write.
const MAX_WRITE: usize = 255 * 29 + 1;

/// Bytes for the writes, made once: a write is a slice of them.
fn bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        (0..MAX_WRITE + 512)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
            .collect()
    })
}

/// `n` bytes for a write, picked by `arg`.
fn write(arg: u8, n: usize) -> &'static [u8] {
    let from = usize::from(arg) * 2;
    &bytes()[from..from + n]
}

/// sshd reads what the proxy has for it, which must be the next part of
/// what ssh wrote (`up`, of which it has `got`); returns how much.
fn deliver_up(server: &mut ServerConn, up: &[u8], got: usize, mono: u64) -> usize {
    let d = server.poll_local();
    let n = d.len();
    assert!(up.get(got..got + n) == Some(d), "sshd got other bytes");
    server.delivered(n, now(mono));
    n
}

/// ssh reads what the sidecar has for it, likewise.
fn deliver_down(client: &mut ClientConn, down: &[u8], got: usize, mono: u64) -> usize {
    let d = client.poll_local();
    let n = d.len();
    assert!(down.get(got..got + n) == Some(d), "ssh got other bytes");
    client.delivered(n, now(mono));
    n
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
    // rate limit on a peer's INIT allows (proto's conn::tests::rekey covers that limit).
    client.allow_fast_rekeys();
    server.allow_fast_rekeys();
    client.set_high_water(HIGH_WATER);
    server.set_high_water(HIGH_WATER);
    let wire = server.poll_transmit().to_vec();
    client.handle_peer(&wire, now(0));
    server.transmitted(wire.len(), now(0));
    assert!(client.accepted());

    let plain_len = FrameSize::default().get() - 16;
    // What ssh wrote and sshd wrote, and how much of it the other side got.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut sshd, mut ssh) = (0usize, 0usize);
    // Whether sshd and ssh read what reaches them (the fuzzer stalls them).
    let (mut sshd_reads, mut ssh_reads) = (true, true);
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
            // Writes of up to about 7 KB: several 1 KiB records, so writes
            // span records, and a few fill a queue.
            0 if alive && client.wants_local() => {
                let d = write(arg, usize::from(arg) * 23 + 1);
                client.handle_local(d, now(mono));
                up.extend_from_slice(d);
            }
            1 if alive && server.wants_local() => {
                let d = write(arg ^ 0x55, usize::from(arg) * 29 + 1);
                server.handle_local(d, now(mono));
                down.extend_from_slice(d);
            }
            // sshd or ssh stops reading, or starts again: its side's local
            // queue fills and the side stops reading its peer.
            8 => sshd_reads = !sshd_reads,
            9 => ssh_reads = !ssh_reads,
            2 if started < MAX_REKEYS => {
                started += 1;
                client.start_rekey(now(mono));
            }
            3 if started < MAX_REKEYS => {
                started += 1;
                server.start_rekey(now(mono));
            }
            7 if started < MAX_REKEYS => {
                // Both at once: the client's INIT wins.
                started += 1;
                client.start_rekey(now(mono));
                server.start_rekey(now(mono));
            }
            4 | 10 | 12 => {
                // The wire from the client, cut after `arg * 61` bytes.
                let n = client.poll_transmit().len().min(usize::from(arg) * 61 + 1);
                if n > 0 && server.wants_peer() {
                    let part = &client.poll_transmit()[..n];
                    server.handle_peer(part, &w.subca, &Allow, now(mono));
                    client.transmitted(n, now(mono));
                }
            }
            5 | 11 | 13 => {
                let n = server.poll_transmit().len().min(usize::from(arg) * 61 + 1);
                if n > 0 && client.wants_peer() {
                    let part = &server.poll_transmit()[..n];
                    client.handle_peer(part, now(mono));
                    server.transmitted(n, now(mono));
                }
            }
            6 | 14 => {
                // Time passes, but never past the sidecar's first write
                // bound (20 s), which an honest pair that the fuzzer stops
                // moving bytes for would reach.
                mono = (mono + u64::from(arg) * 100).min(MAX_MONO);
                server.handle_timeout(now(mono), [arg; 32]);
                client.handle_timeout(now(mono));
            }
            15 if !forged && alive => {
                // A REKEY record with fuzzed contents, under the real keys.
                forged = true;
                let take = input.len().min(plain_len - 1);
                let mut plain = vec![4u8];
                plain.extend_from_slice(&input[..take]);
                input = &input[take..];
                client.queue_plaintext_raw(&plain, now(mono));
            }
            _ => {}
        }
        // sshd and ssh read everything, unless stalled; what they get
        // is the next part of what the other side wrote.
        if sshd_reads {
            sshd += deliver_up(&mut server, &up, sshd, mono);
        }
        if ssh_reads {
            ssh += deliver_down(&mut client, &down, ssh, mono);
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Rekeyed { count } => {
                    server_rekeys += 1;
                    assert_eq!(count, server_rekeys);
                }
                ServerEvent::Terminated(e) => {
                    assert!(forged, "an honest pair was ended: {e:?}");
                    ended_at = Some(sshd);
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
            assert_eq!(sshd, at, "sshd got bytes after the kill");
        }
    }
    if forged {
        return;
    }
    // Let everything settle: both sides see the same rekeys and all data.
    // (Both read again; each pass moves at least a queue's worth.)
    for _ in 0..256 {
        let c = client.poll_transmit().len();
        if c > 0 && server.wants_peer() {
            server.handle_peer(client.poll_transmit(), &w.subca, &Allow, now(mono));
            client.transmitted(c, now(mono));
        }
        let s = server.poll_transmit().len();
        if s > 0 && client.wants_peer() {
            client.handle_peer(server.poll_transmit(), now(mono));
            server.transmitted(s, now(mono));
        }
        let (to_sshd, to_ssh) = (
            deliver_up(&mut server, &up, sshd, mono),
            deliver_down(&mut client, &down, ssh, mono),
        );
        sshd += to_sshd;
        ssh += to_ssh;
        if c == 0 && s == 0 && to_sshd == 0 && to_ssh == 0 {
            break;
        }
    }
    assert!(server.ended().is_none() && !client.is_done());
    assert_eq!(sshd, up.len());
    assert_eq!(ssh, down.len());
    assert_eq!(server.rekeys(), client.rekeys());
    assert!(server.rekeys() <= started as u64);
});
