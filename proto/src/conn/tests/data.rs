//! Data both ways, closes from either side, the write bound, backpressure
//! and any chunking of the wire, on the in-memory pair.

use super::*;

// ------------------------------------------------------------ data, close

#[test]
fn data_both_ways_across_any_split_then_half_closes_and_a_normal_close() {
    let cuts = Cuts {
        s2c: vec![1, 1023, 7, 1025, 3000, 2, 4096, 511],
        c2s: vec![5, 2048, 1, 999, 1024, 17, 6000],
        local: vec![1, 1004, 1005, 3, 70_000, 200],
    };
    for cuts in [None, Some(cuts)] {
        let mut n = net_with(TIMING, 0, cuts);
        n.pump();
        let up = bytes(1, 150_000);
        let down = bytes(2, 220_000);
        n.ssh_write(&up[..100_000]);
        n.sshd_write(&down[..120_000]);
        n.ssh_write(&up[100_000..]);
        assert_eq!(n.sshd, up);
        // The client half-closes; what it sent before reaches sshd first.
        n.sshd_blocked = true;
        n.ssh_write(b"last words");
        n.client.handle_local_eof(n.cm());
        n.pump();
        assert_eq!(n.sev, vec![(0, ServerEvent::PeerClosed)]);
        assert!(!n.server.local_finished(), "sshd still has data to get");
        n.sshd_blocked = false;
        n.pump();
        assert!(n.server.local_finished());
        assert_eq!(n.sshd[up.len()..], b"last words"[..]);
        // sshd's direction still works.
        n.sshd_write(&down[120_000..]);
        assert_eq!(n.ssh, down);
        // sshd closes: the tunnel closes once everything was written.
        n.ssh_blocked = true;
        n.sshd_write(b"bye");
        n.server.handle_local_eof(n.now());
        n.pump();
        assert_eq!(
            n.server_events(),
            vec![ServerEvent::PeerClosed, ServerEvent::Closed]
        );
        // The proxy closed TCP after its CLOSE: a normal end for the
        // client, and what ssh has not read yet is still delivered.
        assert_eq!(
            n.seen(),
            vec![
                (0, Seen::Other(ClientConnEvent::Accepted)),
                (
                    0,
                    Seen::Cert {
                        ttl_secs: 300,
                        renewed: false
                    }
                ),
                (0, Seen::Other(ClientConnEvent::PeerClosed)),
                (0, Seen::Other(ClientConnEvent::Ended(None))),
            ]
        );
        assert!(!n.client.local_finished());
        assert_eq!(n.client.poll_local(), b"bye");
        n.ssh_blocked = false;
        n.pump();
        assert!(n.client.local_finished());
        assert_eq!(n.ssh[down.len()..], b"bye"[..]);
        assert!(n.server.poll_transmit().is_empty());
        assert_eq!(n.server.poll_timeout(), None);
    }
}

#[test]
fn sshd_closing_first_then_the_client_closes() {
    let mut n = net();
    n.sshd_write(b"motd");
    n.server.handle_local_eof(n.now());
    n.pump();
    assert_eq!(n.ssh, b"motd");
    assert!(n.client.local_finished());
    // The client may still send before it closes its side.
    n.t = 500;
    n.ssh_write(b"exit\n");
    n.client.handle_local_eof(n.cm());
    n.pump();
    assert_eq!(n.sshd, b"exit\n");
    assert_eq!(
        n.sev,
        vec![(500, ServerEvent::PeerClosed), (500, ServerEvent::Closed)]
    );
    assert_eq!(
        n.seen(),
        vec![
            (0, Seen::Other(ClientConnEvent::PeerClosed)),
            (500, Seen::Other(ClientConnEvent::Ended(None))),
        ]
    );
}

#[test]
fn sshd_closing_before_its_first_byte_is_a_refusal_the_user_hears() {
    // sshd's MaxStartups drops a new connection at accept, without its
    // banner: the user is told that sshd refused a burst of logins, not
    // that a connection was reset or closed.
    for error in [None, Some("Connection reset by peer (os error 104)")] {
        let mut n = net();
        n.ssh_write(b"SSH-2.0-OpenSSH_9.2\r\n");
        match error {
            None => n.server.handle_local_eof(n.now()),
            Some(e) => n.server.handle_local_error(e, n.now()),
        }
        n.pump();
        let (_, end) = n.terminated().expect("a refusal, not a normal close");
        assert_eq!(end.kind, EndKind::UpstreamRefused);
        assert!(end.reason.contains("MaxStartups"), "{}", end.reason);
        assert!(
            end.reason.contains("try again in a few seconds"),
            "{}",
            end.reason
        );
        assert!(!end.reason.contains("reset"), "{}", end.reason);
        assert!(end.reason.len() <= crate::control::MAX_REASON);
        let told = n.cev.iter().find_map(|(_, e)| match e {
            ClientConnEvent::Ended(Some(ClientEnd::Terminated(t))) => Some(t.clone()),
            _ => None,
        });
        let told = told.expect("the client hears it");
        assert_eq!(told.code, TerminateCode::UpstreamUnavailable);
        assert_eq!(told.reason, end.reason);
    }
    // Once sshd has said a word, its close is a normal end.
    let mut n = net();
    n.sshd_write(b"SSH-2.0-OpenSSH_9.2\r\n");
    n.server.handle_local_eof(n.now());
    n.pump();
    assert!(n.terminated().is_none(), "{:?}", n.sev);
}

#[test]
fn close_grace_starts_once_everything_before_the_close_was_written() {
    // sshd writes a lot and closes; the client reads slowly (but all of
    // it within the write bound) and never sends its own CLOSE.
    let mut n = net();
    n.s2c_blocked = true;
    let down = bytes(3, 200_000);
    n.t = 1000;
    n.sshd_write(&down);
    n.server.handle_local_eof(n.now());
    let mut t = 1000;
    while !n.server.poll_transmit().is_empty() {
        t += 500;
        n.run_until(t);
        let len = n.server.poll_transmit().len().min(20_000);
        let chunk = n.server.poll_transmit()[..len].to_vec();
        n.client.handle_peer(&chunk, n.cm());
        n.server.transmitted(len, n.now());
        n.pump();
    }
    assert!(t > 1000 + CLOSE_GRACE_MS, "the flush outlasts the grace");
    assert_eq!(n.ssh, down, "nothing queued before the CLOSE is dropped");
    assert!(n.client.local_finished());
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    // The grace runs from the moment the CLOSE was written.
    n.s2c_blocked = false;
    n.run_until(t + CLOSE_GRACE_MS - 1);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(t + CLOSE_GRACE_MS);
    assert_eq!(n.sev, vec![(t + CLOSE_GRACE_MS, ServerEvent::Closed)]);
    assert_eq!(
        n.cev.last(),
        Some(&(t + CLOSE_GRACE_MS, ClientConnEvent::Ended(None)))
    );
}

#[test]
fn after_sshd_closes_a_client_reading_a_trickle_ends_at_the_flush_bound() {
    // 200 KB left for the client when sshd closes; it reads 1 KB every
    // 500 ms (progress, so never a stalled queue), which would take 100 s.
    // No challenge falls due meanwhile (one would queue behind the 200 KB
    // and end the session as proof_late first).
    let timing = Timing {
        interval_secs: 3600,
        deadline_secs: 10,
        cert_ttl_secs: 3600,
    };
    let mut n = started(timing, 0);
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(12, 200_000));
    n.server.handle_local_eof(n.now());
    assert_eq!(n.server.poll_timeout(), Some(11_000), "the stall check");
    trickle(&mut n, 1000, 500, 200);
    let reason =
        "client did not read sshd's last output within 60s of sshd closing; connection closed";
    assert_eq!(
        n.sev,
        vec![
            (61_000, ended(EndKind::ClientStalled, reason)),
            (61_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev.last(),
        Some(&(61_000, ClientConnEvent::Ended(Some(ClientEnd::Lost))))
    );
}

#[test]
fn after_sshd_closes_a_slow_steady_client_gets_the_whole_tail() {
    // The same 200 KB read at 1 KB every 60 ms (about 17 KB/s, a poor
    // mobile link): 12 s, past the 10 s write bound but within the flush
    // bound, so the client gets everything and the session ends normally.
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(12, 200_000));
    n.server.handle_local_eof(n.now());
    trickle(&mut n, 1000, 60, 1000);
    assert!(
        !n.sev
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::Terminated(_))),
        "{:?}",
        n.sev
    );
    assert!(
        n.cev.iter().any(|(_, e)| *e == ClientConnEvent::PeerClosed),
        "the client read the CLOSE: {:?}",
        n.cev
    );
}

// ------------------------------------------------------------ write bound

#[test]
fn a_client_that_reads_nothing_ends_at_the_write_bound() {
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(7, 5000));
    assert_eq!(n.server.poll_timeout(), Some(11_000));
    // Some progress at 4 s restarts the bound.
    n.t = 4000;
    let part = n.server.poll_transmit()[..100].to_vec();
    n.client.handle_peer(&part, n.cm());
    n.server.transmitted(100, n.now());
    assert_eq!(n.server.poll_timeout(), Some(14_000));
    n.run_until(13_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(14_000);
    assert_eq!(
        n.sev,
        vec![
            (
                14_000,
                ended(
                    EndKind::ClientStalled,
                    "client read nothing for 10s; connection closed"
                )
            ),
            (14_000, ServerEvent::Closed),
        ]
    );
    // No TERMINATE for a client that does not read.
    assert!(n.server.poll_transmit().is_empty());
    assert_eq!(
        n.cev,
        vec![(14_000, ClientConnEvent::Ended(Some(ClientEnd::Lost)))]
    );
}

#[test]
fn sshd_reading_nothing_ends_at_the_write_bound() {
    let mut n = net();
    n.sshd_blocked = true;
    n.t = 2000;
    n.ssh_write(&bytes(8, 3000));
    assert_eq!(n.server.poll_timeout(), Some(12_000));
    n.t = 5000;
    n.sshd.extend_from_slice(&n.server.poll_local()[..1000]);
    n.server.delivered(1000, n.now());
    assert_eq!(n.server.poll_timeout(), Some(15_000));
    n.run_until(14_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(15_000);
    let reason = "sshd read nothing for 10s; connection closed";
    assert_eq!(
        n.sev,
        vec![
            (15_000, ended(EndKind::UpstreamStalled, reason)),
            (15_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev,
        vec![(
            15_000,
            ClientConnEvent::Ended(Some(ClientEnd::Terminated(Termination::new(
                TerminateCode::UpstreamUnavailable,
                reason
            ))))
        )]
    );
    assert_eq!(n.sshd, bytes(8, 3000)[..1000]);
}

#[test]
fn ssh_not_reading_neither_ends_the_session_nor_spins_the_sidecar() {
    // ssh suspended (~^Z) while a little output arrives: the session goes
    // on, and the sidecar's timers do not fire in a loop.
    let mut n = net();
    n.ssh_blocked = true;
    n.sshd_write(b"output while ssh is stopped");
    n.run_until(120_000);
    assert!(n.terminated().is_none(), "{:?}", n.sev);
    assert!(
        n.sev
            .iter()
            .any(|(_, e)| *e == ServerEvent::ProofOk { seq: 3 })
    );
    assert_eq!(n.client.poll_local(), b"output while ssh is stopped");
    n.ssh_blocked = false;
    n.pump();
    assert_eq!(n.ssh, b"output while ssh is stopped");
}

// ----------------------------------------------------------- backpressure

#[test]
fn backpressure_stops_reading_the_side_that_fills_a_queue() {
    let mut n = net();
    // The client's own transmit queue: ssh is read only below HIGH_WATER.
    n.c2s_blocked = true;
    n.sshd_blocked = true;
    let up = bytes(9, HIGH_WATER + 100_000);
    n.client.handle_local(&up, n.cm());
    assert!(!n.client.wants_local());
    // The proxy reads the client until sshd's queue passes HIGH_WATER.
    let mut fed = 0;
    while n.server.wants_peer() {
        let len = n.client.poll_transmit().len().min(50 * F);
        assert!(len > 0, "the client ran out before the proxy stopped");
        let chunk = n.client.poll_transmit()[..len].to_vec();
        n.server.handle_peer(&chunk, &n.subca, &n.policy, n.now());
        n.client.transmitted(len, n.cm());
        fed += len;
    }
    let queued = n.server.poll_local().len();
    assert!(
        (HIGH_WATER..HIGH_WATER + 50 * D).contains(&queued),
        "{queued}"
    );
    assert_eq!(queued, fed / F * D);
    assert!(
        n.client.wants_local(),
        "the client's queue drained below HIGH_WATER"
    );
    // sshd reads a little: below HIGH_WATER the proxy reads again.
    n.server.delivered(queued - HIGH_WATER, n.now());
    assert!(!n.server.wants_peer(), "exactly HIGH_WATER is still full");
    n.server.delivered(1, n.now());
    assert!(n.server.wants_peer());
    // And everything arrives in order.
    n.sshd_blocked = false;
    n.c2s_blocked = false;
    n.sshd.extend_from_slice(&up[..queued - HIGH_WATER + 1]);
    n.pump();
    assert_eq!(n.sshd, up);

    // The proxy's transmit queue: sshd is read only below HIGH_WATER.
    n.s2c_blocked = true;
    n.server.handle_local(&bytes(10, HIGH_WATER), n.now());
    assert!(!n.server.wants_local());
    let len = n.server.poll_transmit().len() - HIGH_WATER + 1;
    let chunk = n.server.poll_transmit()[..len].to_vec();
    n.client.handle_peer(&chunk, n.cm());
    n.server.transmitted(len, n.now());
    assert!(n.server.wants_local());
}

// ------------------------------------------------------------- proptest

/// One step of a session, as a test sees it.
#[derive(Clone, Debug)]
enum Step {
    Ssh(Vec<u8>),
    Sshd(Vec<u8>),
    /// Time passes (ms), with every timer on the way.
    Wait(u64),
    SshEof,
    SshdEof,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => vec(any::<u8>(), 1..6000).prop_map(Step::Ssh),
        4 => vec(any::<u8>(), 1..6000).prop_map(Step::Sshd),
        4 => (0u64..150_000).prop_map(Step::Wait),
        1 => Just(Step::SshEof),
        1 => Just(Step::SshdEof),
    ]
}

type Outcome = (Vec<u8>, Vec<u8>, Vec<(u64, ServerEvent)>, Vec<(u64, Seen)>);

/// Plays `steps` on a fresh pair; returns what sshd and ssh received and
/// every event, plus what was written each way.
fn play(steps: &[Step], cuts: Option<Cuts>) -> (Outcome, Vec<u8>, Vec<u8>) {
    let mut n = net_with(TIMING, 0, cuts);
    n.pump();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut ssh_eof, mut sshd_eof) = (false, false);
    for s in steps {
        if n.server_closed || n.client_ended {
            break;
        }
        match s {
            Step::Ssh(d) if !ssh_eof => {
                n.ssh_write(d);
                up.extend_from_slice(d);
            }
            Step::Sshd(d) if !sshd_eof => {
                n.sshd_write(d);
                down.extend_from_slice(d);
            }
            Step::Wait(ms) => n.run_until(n.t + ms),
            Step::SshEof if !ssh_eof => {
                ssh_eof = true;
                n.client.handle_local_eof(n.cm());
                n.pump();
            }
            // sshd always speaks first (its banner): a close before that
            // is a refusal, not a normal end (see
            // `sshd_closing_before_its_first_byte_is_a_refusal_the_user_hears`).
            Step::SshdEof if !sshd_eof && !down.is_empty() => {
                sshd_eof = true;
                n.server.handle_local_eof(n.now());
                n.pump();
            }
            _ => {}
        }
    }
    let seen = n.seen();
    ((n.sshd, n.ssh, n.sev, seen), up, down)
}

proptest! {
    // Each case runs two real handshakes: few cases.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_the_wire_gives_the_same_plaintext_and_events(
        steps in vec(step(), 1..20),
        s2c in vec(1usize..5000, 1..12),
        c2s in vec(1usize..5000, 1..12),
        local in vec(1usize..3000, 1..12),
    ) {
        let (whole, up, down) = play(&steps, None);
        let (split, up2, down2) = play(&steps, Some(Cuts { s2c, c2s, local }));
        prop_assert_eq!(&up, &up2);
        prop_assert_eq!(&down, &down2);
        prop_assert_eq!(&split, &whole);
        let (sshd, ssh, sev, _) = &whole;
        // Nothing was lost or made up, and no session was killed.
        prop_assert!(!sev.iter().any(|(_, e)| matches!(e, ServerEvent::Terminated(_))), "{:?}", sev);
        prop_assert!(up.starts_with(sshd));
        prop_assert!(down.starts_with(ssh));
        if !sev.iter().any(|(_, e)| *e == ServerEvent::Closed) {
            prop_assert_eq!(sshd, &up);
            prop_assert_eq!(ssh, &down);
        }
    }
}
