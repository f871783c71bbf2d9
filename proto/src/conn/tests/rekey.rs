//! Rekey on the in-memory pair: data both ways across many rekeys,
//! simultaneous starts, random rekey points and wire splits, and the
//! bounds that close a peer that does not rekey.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::conn::{
    MIN_REKEY_GAP_BYTES, MIN_REKEY_GAP_MS, REKEY_MAX_MS, REKEY_REPLY_MS, RekeyPolicy,
};
use crate::frame::MAX_RECORDS_PER_KEY;

fn rekeys_seen(n: &Net) -> (usize, usize) {
    let s = n
        .sev
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::Rekeyed { .. }))
        .count();
    let c = n
        .cev
        .iter()
        .filter(|(_, e)| matches!(e, ClientConnEvent::Rekeyed { .. }))
        .count();
    (s, c)
}

/// Turns off the refusal of an INIT that comes too soon, on both sides,
/// for tests that force rekeys at any point.
fn fast(n: &mut Net) {
    n.server.allow_fast_rekeys();
    n.client.allow_fast_rekeys();
}

/// The slow timing of the tests that wait minutes: no challenge or renewal
/// in that time.
const SLOW: Timing = Timing {
    interval_secs: 3600,
    deadline_secs: 10,
    cert_ttl_secs: 3600,
};

fn server_ended_with(n: &Net, kind: EndKind, why: &str) -> Option<u64> {
    n.sev.iter().find_map(|(t, e)| match e {
        ServerEvent::Terminated(ended) if ended.kind == kind && ended.reason.contains(why) => {
            Some(*t)
        }
        _ => None,
    })
}

fn no_kill(n: &Net) {
    assert!(
        !n.sev
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::Terminated(_) | ServerEvent::Closed)),
        "{:?}",
        n.sev
    );
    assert!(!n.client_ended, "{:?}", n.cev);
}

#[test]
fn a_session_survives_twenty_rekeys_or_more_with_data_both_ways() {
    let mut n = net();
    // Both sides rekey after 1 MiB (the smallest setting), so they often
    // start at once: the client's INIT wins.
    let policy = RekeyPolicy::new(3600, 1 << 20).expect("policy");
    n.server.set_rekey_policy(policy, n.now());
    n.client.set_rekey_policy(policy, n.cm());
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..64u64 {
        let a = bytes(100 + i, 200_000 + (i as usize * 37) % 5000);
        let b = bytes(900 + i, 200_000 + (i as usize * 53) % 7000);
        n.ssh_write(&a);
        n.sshd_write(&b);
        up.extend_from_slice(&a);
        down.extend_from_slice(&b);
        n.run_until(n.t + 100);
    }
    n.pump();
    no_kill(&n);
    assert_eq!(n.sshd.len(), up.len());
    assert!(n.sshd == up, "sshd got other bytes");
    assert!(n.ssh == down, "ssh got other bytes");
    let (s, c) = rekeys_seen(&n);
    // 25.6 MB of data, counted by each side in both directions, with
    // both sides on a 1 MiB policy: at least 20 rekeys, and at most one
    // per MiB of records (no side rekeys early).
    let records = (up.len() + down.len()).div_ceil(D) * F;
    assert!(s >= 20, "only {s} rekeys");
    assert!(s <= records >> 20, "{s} rekeys for {records} record bytes");
    assert_eq!(s, c, "both sides count every rekey");
    assert_eq!(n.server.rekeys(), s as u64);
    assert_eq!(n.client.rekeys(), c as u64);
}

#[test]
fn rekeys_by_age_keep_a_quiet_session_going_with_challenges() {
    let mut n = net();
    let policy = RekeyPolicy::new(1, 1 << 30).expect("policy");
    n.server.set_rekey_policy(policy, n.now());
    n.client.set_rekey_policy(policy, n.cm());
    for i in 0..30u64 {
        n.ssh_write(&bytes(i, 10));
        n.sshd_write(&bytes(i + 1000, 10));
        n.run_until(n.t + 1500);
    }
    no_kill(&n);
    let (s, _) = rekeys_seen(&n);
    assert!(s >= 20, "only {s} rekeys by age");
    // Identity proofs went on across the rekeys.
    assert!(
        n.sev
            .iter()
            .filter(|(_, e)| matches!(e, ServerEvent::ProofOk { .. }))
            .count()
            >= 1
    );
    assert_eq!(n.ssh.len(), 300);
}

#[test]
fn simultaneous_starts_resolve_to_one_rekey() {
    let mut n = net();
    fast(&mut n);
    n.ssh_write(b"before");
    // Both start before either sees the other's INIT.
    n.server.start_rekey(n.now());
    n.client.start_rekey(n.cm());
    n.ssh_write(b" after");
    n.sshd_write(b"down");
    n.pump();
    no_kill(&n);
    assert_eq!(rekeys_seen(&n), (1, 1));
    assert_eq!(n.sshd, b"before after");
    assert_eq!(n.ssh, b"down");
}

#[test]
fn records_queued_on_both_sides_across_the_switch_arrive() {
    let mut n = net();
    fast(&mut n);
    n.s2c_blocked = true;
    n.c2s_blocked = true;
    n.sshd_write(&bytes(1, 50_000));
    n.server.start_rekey(n.now());
    n.sshd_write(&bytes(2, 50_000));
    n.ssh_write(&bytes(3, 70_000));
    n.s2c_blocked = false;
    n.c2s_blocked = false;
    n.pump();
    n.ssh_write(&bytes(4, 10_000));
    n.sshd_write(&bytes(5, 10_000));
    no_kill(&n);
    assert_eq!(rekeys_seen(&n), (1, 1));
    let down = [bytes(1, 50_000), bytes(2, 50_000), bytes(5, 10_000)].concat();
    let up = [bytes(3, 70_000), bytes(4, 10_000)].concat();
    assert!(n.ssh == down && n.sshd == up);
}

#[test]
fn a_peer_that_never_answers_a_rekey_is_closed() {
    let mut n = started(SLOW, 0);
    n.server.start_rekey(n.now());
    // The client reads, but the INIT never reaches it.
    let len = n.server.poll_transmit().len();
    n.server.transmitted(len, n.now());
    n.run_until(REKEY_REPLY_MS + 1000);
    let reason = "the peer made no progress on a rekey for 60s";
    assert!(
        n.sev
            .contains(&(REKEY_REPLY_MS, ended(EndKind::BadRecord, reason))),
        "{:?}",
        n.sev
    );
}

#[test]
fn our_sealer_stops_at_the_record_limit_and_a_rekey_resets_it() {
    let mut n = net();
    n.client.jump_nonces(&mut n.server, MAX_RECORDS_PER_KEY - 2);
    n.ssh_write(b"a");
    n.ssh_write(b"b");
    assert_eq!(n.sshd, b"ab");
    // The client's own sealer refuses the next record (the proxy would
    // refuse it too): the session ends.
    n.client.handle_local(b"c", n.cm());
    n.pump();
    assert_eq!(n.sshd, b"ab");
    assert!(n.client_ended);
    let mut m = net();
    fast(&mut m);
    m.client
        .jump_nonces(&mut m.server, MAX_RECORDS_PER_KEY - 10);
    m.ssh_write(b"a");
    // A rekey resets the count: 20 records more go through.
    m.client.start_rekey(m.cm());
    m.pump();
    m.ssh_write(&bytes(7, 20 * D));
    assert_eq!(m.sshd.len(), 1 + 20 * D);
    no_kill(&m);
}

#[test]
fn the_opener_refuses_a_record_past_the_limit() {
    let mut n = net();
    // The peer's sealer would refuse; a hostile one does not: the limit is
    // also checked on the receiving side.
    n.server.link_opener_jump(MAX_RECORDS_PER_KEY);
    n.ssh_write(b"x");
    assert!(n.sshd.is_empty());
    let kinds: Vec<_> = n.server_events();
    assert!(
        kinds
            .iter()
            .any(|e| matches!(e, ServerEvent::Terminated(ended)
            if ended.kind == EndKind::BadRecord && ended.reason.contains("without a rekey"))),
        "{kinds:?}"
    );
}

#[test]
fn rekey_messages_out_of_place_end_the_session() {
    // (record plaintext, what the proxy says)
    let cases: [(&[u8], &str); 4] = [
        (&[4, 0, 0, 1, 3], "unexpected REKEY FINISH"),
        (&[4, 0, 0, 1, 9], "unknown REKEY message"),
        (&[4, 0, 0, 0], "empty"),
        (&[4, 0, 0, 2, 2, 7], "unexpected REKEY REPLY"),
    ];
    for (plain, why) in cases {
        let mut n = net();
        n.client.queue_plaintext_raw(plain, n.cm());
        if why == "unexpected REKEY REPLY" {
            // A complete REPLY body, in records of 1003 bytes.
            let body = vec![7u8; crate::rekey::REPLY_LEN - 1];
            for chunk in body.chunks(D - 1) {
                let mut p = vec![4, 0];
                p.extend_from_slice(&((chunk.len() + 1) as u16).to_be_bytes());
                p.push(2);
                p.extend_from_slice(chunk);
                n.client.queue_plaintext_raw(&p, n.cm());
            }
        }
        n.pump();
        let events = n.server_events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Terminated(ended)
                if ended.kind == EndKind::BadRecord && ended.reason.contains(why))),
            "{why}: {events:?}"
        );
    }
}

#[test]
fn data_between_the_fragments_of_a_rekey_message_is_refused() {
    let mut n = net();
    let mut p = vec![4, 0, 0, 11, 1];
    p.extend_from_slice(&[1; 10]);
    n.client.queue_plaintext_raw(&p, n.cm());
    n.client.queue_plaintext_raw(&[1, 0, 0, 1, b'x'], n.cm());
    n.pump();
    assert!(n.sshd.is_empty());
    assert!(
        n.server_events()
            .iter()
            .any(|e| matches!(e, ServerEvent::Terminated(ended)
        if ended.reason.contains("interrupted")))
    );
}

/// One step of the property test.
#[derive(Clone, Debug)]
enum RStep {
    Ssh(usize, u8),
    Sshd(usize, u8),
    ClientRekey,
    ServerRekey,
    BothRekey,
    Pump,
    Wait(u64),
}

fn rstep() -> impl Strategy<Value = RStep> {
    prop_oneof![
        4 => (1usize..40_000, any::<u8>()).prop_map(|(l, s)| RStep::Ssh(l, s)),
        4 => (1usize..40_000, any::<u8>()).prop_map(|(l, s)| RStep::Sshd(l, s)),
        2 => Just(RStep::ClientRekey),
        2 => Just(RStep::ServerRekey),
        1 => Just(RStep::BothRekey),
        2 => Just(RStep::Pump),
        1 => (0u64..5_000).prop_map(RStep::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random data both ways, rekeys started by either side (or both at
    /// once) at random points, the wire cut anywhere: every byte arrives
    /// in order, nothing is killed, and both sides count the same rekeys.
    #[test]
    fn any_rekey_points_and_wire_cuts_lose_nothing(
        steps in vec(rstep(), 1..40),
        s2c in vec(1usize..5000, 1..8),
        c2s in vec(1usize..5000, 1..8),
        local in vec(1usize..3000, 1..8),
    ) {
        let mut n = net_with(TIMING, 0, Some(Cuts { s2c, c2s, local }));
        fast(&mut n);
        n.pump();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut started = 0u64;
        for s in &steps {
            match s {
                RStep::Ssh(len, seed) => {
                    let d = bytes(u64::from(*seed), *len);
                    n.ssh_write(&d);
                    up.extend_from_slice(&d);
                }
                RStep::Sshd(len, seed) => {
                    let d = bytes(u64::from(*seed) + 256, *len);
                    n.sshd_write(&d);
                    down.extend_from_slice(&d);
                }
                RStep::ClientRekey => { n.client.start_rekey(n.cm()); started += 1; }
                RStep::ServerRekey => { n.server.start_rekey(n.now()); started += 1; }
                RStep::BothRekey => {
                    n.client.start_rekey(n.cm());
                    n.server.start_rekey(n.now());
                    started += 1;
                }
                RStep::Pump => n.pump(),
                RStep::Wait(ms) => n.run_until(n.t + ms),
            }
        }
        n.pump();
        prop_assert!(!n.sev.iter().any(|(_, e)| matches!(e, ServerEvent::Terminated(_))), "{:?}", n.sev);
        prop_assert!(!n.client_ended);
        prop_assert!(n.sshd == up);
        prop_assert!(n.ssh == down);
        let (s, c) = rekeys_seen(&n);
        prop_assert_eq!(s, c);
        prop_assert!(s as u64 <= started);
        prop_assert!(started == 0 || s >= 1);
    }
}

#[test]
fn rekey_settings_are_bounded() {
    assert!(RekeyPolicy::new(3600, 1 << 30).is_ok());
    assert!(RekeyPolicy::new(0, 1 << 30).is_err());
    assert!(RekeyPolicy::new(86_401, 1 << 30).is_err());
    assert!(RekeyPolicy::new(60, (1 << 20) - 1).is_err());
    let too_big = crate::frame::MAX_REKEY_AFTER_BYTES + 1;
    let e = RekeyPolicy::new(60, too_big).expect_err("over 16 GiB");
    assert!(e.contains("rekey_after_bytes"), "{e}");
    // The largest setting (record bytes, both directions) leaves 48 GiB of
    // records under the old key for the rekey's round trip, at the
    // smallest frame.
    let records = crate::frame::MAX_REKEY_AFTER_BYTES / F as u64;
    assert!(MAX_RECORDS_PER_KEY - records >= (48 << 30) / F as u64);
}

#[test]
fn a_peer_past_the_record_limit_is_closed() {
    let mut n = net();
    // The client plays a hostile peer whose sealer ignores the limit.
    n.client.jump_nonces(&mut n.server, MAX_RECORDS_PER_KEY - 1);
    n.client.lift_record_limit();
    n.ssh_write(b"a");
    assert_eq!(n.sshd, b"a", "the last record allowed under the key");
    n.ssh_write(b"b");
    assert_eq!(n.sshd, b"a", "nothing past the limit reaches sshd");
    assert!(
        server_ended_with(&n, EndKind::BadRecord, "more records under one key").is_some(),
        "{:?}",
        n.sev
    );
}

#[test]
fn a_rekey_queued_behind_a_slow_link_is_not_timed_out() {
    let mut n = started(SLOW, 0);
    n.s2c_blocked = true;
    let down = bytes(11, 500_000);
    n.sshd_write(&down);
    // The INIT queues behind 500 kB that the link takes at 4 KiB a second:
    // it leaves after about two minutes, twice the rekey bound.
    n.server.start_rekey(n.now());
    let mut steps = 0;
    while !n.server.poll_transmit().is_empty() && steps < 1000 {
        let k = n.server.poll_transmit().len().min(4096);
        let chunk = n.server.poll_transmit()[..k].to_vec();
        n.client.handle_peer(&chunk, n.cm());
        n.server.transmitted(k, n.now());
        n.pump();
        n.run_until(n.t + 1000);
        steps += 1;
    }
    assert!(
        n.t > 2 * REKEY_REPLY_MS,
        "the link was not slow: {} ms",
        n.t
    );
    n.s2c_blocked = false;
    n.pump();
    no_kill(&n);
    assert_eq!(rekeys_seen(&n), (1, 1));
    assert!(n.ssh == down);
}

#[test]
fn a_peer_that_reads_but_never_answers_a_rekey_is_closed_at_the_hard_bound() {
    let mut n = started(SLOW, 0);
    n.run_until(MIN_REKEY_GAP_MS);
    n.c2s_blocked = true;
    n.server.start_rekey(n.now());
    let sent = n.t;
    n.pump();
    // The client answered, but its REPLY is lost on the wire.
    let len = n.client.poll_transmit().len();
    assert!(len > crate::rekey::REPLY_LEN);
    n.client.transmitted(len, n.cm());
    n.c2s_blocked = false;
    // The client keeps reading what sshd sends: the link makes progress.
    let mut i = 0;
    while n.server.ended().is_none() && n.t < 2 * REKEY_MAX_MS {
        n.sshd_write(&bytes(i, 100));
        n.run_until(n.t + 10_000);
        i += 1;
    }
    assert_eq!(n.ssh.len() as u64, i * 100);
    let reason = format!(
        "the peer did not complete a rekey within {}s",
        REKEY_MAX_MS / 1000
    );
    assert_eq!(
        server_ended_with(&n, EndKind::BadRecord, &reason),
        Some(sent + REKEY_MAX_MS),
        "{:?}",
        n.sev
    );
}

#[test]
fn a_peer_init_too_soon_after_the_last_switch_is_refused() {
    let mut n = net();
    // Right after the session started: neither 512 KiB nor 0.5 s.
    n.client.start_rekey(n.cm());
    n.pump();
    assert!(
        server_ended_with(&n, EndKind::BadRecord, "REKEY INIT too soon").is_some(),
        "{:?}",
        n.sev
    );
    assert_eq!(n.server.rekeys(), 0);
}

#[test]
fn a_peer_init_after_the_gap_in_time_or_bytes_is_answered() {
    let mut n = net();
    n.run_until(MIN_REKEY_GAP_MS);
    n.client.start_rekey(n.cm());
    n.pump();
    assert_eq!(rekeys_seen(&n), (1, 1), "after the gap in time");
    n.ssh_write(&bytes(1, MIN_REKEY_GAP_BYTES as usize));
    n.client.start_rekey(n.cm());
    n.pump();
    no_kill(&n);
    assert_eq!(rekeys_seen(&n), (2, 2), "after the gap in bytes, at once");
    // The client refuses the server's INIT just as soon.
    n.server.start_rekey(n.now());
    n.pump();
    assert!(
        n.cev.iter().any(|(_, e)| matches!(e,
            ClientConnEvent::Ended(Some(ClientEnd::Integrity(why))) if why.contains("too soon"))),
        "{:?}",
        n.cev
    );
}

#[test]
fn a_half_closed_session_keeps_rekeying() {
    let mut n = net();
    let policy = RekeyPolicy::new(3600, 1 << 20).expect("policy");
    n.server.set_rekey_policy(policy, n.now());
    n.client.set_rekey_policy(policy, n.cm());
    // ssh's input ended (`ssh host cmd < /dev/null`); the download goes on.
    n.client.handle_local_eof(n.cm());
    n.pump();
    let mut down = Vec::new();
    for i in 0..16u64 {
        let d = bytes(300 + i, 200_000);
        n.sshd_write(&d);
        down.extend_from_slice(&d);
        n.run_until(n.t + 100);
    }
    no_kill(&n);
    assert!(n.ssh == down);
    let (s, c) = rekeys_seen(&n);
    assert!(s >= 2, "only {s} rekeys");
    assert_eq!(s, c);
}
