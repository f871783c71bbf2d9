//! Kills on the in-memory pair: the decision at once, nothing more for
//! sshd whatever the client sends, and the TERMINATE's grace.

use super::*;

// ------------------------------------------------------------------ kills

/// Kills a session whose client stopped reading after `written` bytes of
/// `sshd_bytes` from sshd (after ACCEPT and CERT), and checks the proxy's
/// side: the decision at once, nothing more for sshd whatever the client
/// sends, and at most the rest of the record being written plus exactly
/// one TERMINATE in the transmit queue.
fn kill_a_client_that_reads_nothing(written: usize, sshd_bytes: usize) -> Net {
    let mut n = net();
    let written_before = 2 * F; // ACCEPT and CERT
    // Data from the client that sshd has not read yet.
    n.sshd_blocked = true;
    n.ssh_write(&bytes(4, 3000));
    assert_eq!(n.server.poll_local().len(), 3000);
    // The client stops reading; sshd keeps writing.
    n.s2c_blocked = true;
    n.t = 2000;
    n.sshd_write(&bytes(5, sshd_bytes));
    assert_eq!(n.server.poll_transmit().len(), sshd_bytes.div_ceil(D) * F);
    let part = n.server.poll_transmit()[..written].to_vec();
    n.client.handle_peer(&part, n.cm());
    n.server.transmitted(written, n.now());

    n.t = 2500;
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    let kill = ended(EndKind::PrincipalBanned, "principal alice banned");
    assert_eq!(n.server.poll_event(), Some(kill));
    assert_eq!(n.server.poll_event(), None);
    assert_eq!(
        n.server.ended().map(|e| e.kind),
        Some(EndKind::PrincipalBanned)
    );
    assert!(n.server.poll_local().is_empty());
    // Every record already sealed stays (its nonce is spent), then one
    // TERMINATE; nothing for sshd.
    let sealed = written_before + sshd_bytes.div_ceil(D) * F;
    assert_eq!(
        n.server.poll_transmit().len(),
        sealed - written_before - written + F,
        "written {written}"
    );
    assert!(!n.server.wants_peer() && !n.server.wants_local());

    // The client keeps sending DATA records: none reaches sshd.
    for i in 0..5 {
        n.client.handle_local(&bytes(6 + i, 5000), n.cm());
        let wire = n.client.poll_transmit().to_vec();
        n.server.handle_peer(&wire, &n.subca, &n.policy, n.now());
        n.client.transmitted(wire.len(), n.cm());
        n.server.delivered(0, n.now());
        assert!(n.server.poll_local().is_empty());
    }
    n.server.handle_timeout(n.now(), [1; 32]);
    assert!(n.server.poll_local().is_empty());
    assert_eq!(n.server.poll_event(), None);
    assert!(n.sshd.is_empty());
    n
}

/// The client reads again: it gets the rest of the record it was in the
/// middle of, then the TERMINATE, and nothing reaches ssh.
fn the_client_reads_the_terminate(mut n: Net) {
    let wire = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&wire, n.cm());
    n.server.transmitted(wire.len(), n.now());
    assert_eq!(n.server.poll_event(), Some(ServerEvent::Closed));
    assert_eq!(n.server.poll_timeout(), None);
    let mut evs = Vec::new();
    while let Some(e) = n.client.poll_event() {
        evs.push(e);
    }
    assert_eq!(
        evs,
        vec![ClientConnEvent::Ended(Some(ClientEnd::Terminated(
            "principal alice banned".into()
        )))]
    );
    assert!(n.client.poll_local().is_empty());
    assert!(n.ssh.is_empty());
}

#[test]
fn a_ban_ends_a_session_whose_client_reads_nothing_at_once() {
    // Bytes of the proxy's transmit queue written before the ban: none,
    // whole records, and records plus part of one.
    for written in [0, 3 * F, 3 * F + 500, 1, 7 * F - 1] {
        kill_a_client_that_reads_nothing(written, 100_000);
    }
}

#[test]
fn the_client_opens_the_terminate_behind_a_partly_written_record() {
    // Nothing but the record being written was queued.
    for (written, sshd_bytes) in [(300, 500), (F - 1, 500), (0, 0), (F + 7, 2 * D)] {
        let n = kill_a_client_that_reads_nothing(written, sshd_bytes);
        the_client_reads_the_terminate(n);
    }
}

#[test]
fn the_client_opens_the_terminate_after_unwritten_records_were_dropped() {
    for written in [0, 3 * F, 3 * F + 500, 1, 7 * F - 1] {
        let n = kill_a_client_that_reads_nothing(written, 100_000);
        the_client_reads_the_terminate(n);
    }
}

#[test]
fn a_kill_after_the_grace_drops_the_terminate_and_closes() {
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    assert_eq!(n.server.poll_transmit().len(), F);
    // The TERMINATE gets a second to leave, then the tunnel closes.
    assert_eq!(n.server.poll_timeout(), Some(2000));
    n.run_until(2000);
    assert_eq!(
        n.server_events(),
        vec![
            ended(EndKind::PrincipalBanned, "principal alice banned"),
            ServerEvent::Closed
        ]
    );
    assert_eq!(n.sev[1].0, 2000);
    assert!(n.server.poll_transmit().is_empty());
}

#[test]
fn a_kills_grace_runs_from_the_decision_however_the_client_reads() {
    // A backlog for a client that stopped reading, then a ban: the client
    // reads 100 bytes every 200 ms, progress that never reaches the
    // TERMINATE. The connection still closes one grace after the ban.
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(11, 100_000));
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    n.pump();
    assert_eq!(n.server.poll_timeout(), Some(1000 + TERMINATE_GRACE_MS));
    trickle(&mut n, 100, 200, 100);
    let close = 1000 + TERMINATE_GRACE_MS;
    assert_eq!(
        n.sev,
        vec![
            (
                1000,
                ended(EndKind::PrincipalBanned, "principal alice banned")
            ),
            (close, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev,
        vec![(close, ClientConnEvent::Ended(Some(ClientEnd::Lost)))]
    );
    assert!(n.sshd.is_empty());
}

#[test]
fn a_test_client_in_manual_mode_ends_at_terminate_and_takes_no_more() {
    let mut n = net_with(TIMING, 0, None);
    n.client.set_manual(true);
    let wire = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&wire, n.cm());
    n.server.transmitted(wire.len(), n.now());
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    let terminate = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&terminate, n.cm());
    // The TERMINATE is handed to the test, and the session is over: the
    // client opens nothing after it.
    let evs: Vec<ClientConnEvent> = std::iter::from_fn(|| n.client.poll_event()).collect();
    assert!(
        matches!(
            evs.as_slice(),
            [
                ClientConnEvent::Control(Control::Accept { .. }),
                ClientConnEvent::Control(Control::Cert { .. }),
                ClientConnEvent::Control(Control::Terminate { .. }),
                ClientConnEvent::Ended(Some(ClientEnd::Terminated(reason))),
            ] if reason == "principal alice banned"
        ),
        "{evs:?}"
    );
    assert!(n.client.is_done() && !n.client.wants_peer());
    // More bytes than its receive buffer holds come back at once, unread.
    n.client
        .handle_peer(&vec![0u8; 4 * crate::conn::MAX_BATCH], n.cm());
    assert_eq!(n.client.poll_event(), None);
}

/// A proxy and a hand-driven client (its own sealer, opener and identity),
/// so that the client can send what an honest sidecar never would.
struct RawClient {
    server: ServerConn,
    transport: Transport,
    identity: ClientIdentity,
    subca: SigningKey,
    policy: Policy,
}

impl RawClient {
    fn new() -> Self {
        let pki = pki();
        let alice = user(1);
        let (session, authed) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let policy = Policy::default();
        let subca = SigningKey::generate();
        let now = Now {
            unix: T0,
            mono_ms: 0,
        };
        let authorized = authed.authorize(&policy, T0).expect("authorized");
        let server =
            ServerConn::accept(authorized, "web1", &subca, &policy, TIMING, now).expect("accept");
        let identity = ClientIdentity::new(
            session.handshake_hash,
            "alice",
            session.session_key,
            subca.public(),
        );
        let mut me = Self {
            server,
            transport: session.transport,
            identity,
            subca,
            policy,
        };
        let evs = me.read(0);
        assert!(matches!(evs[0], Event::Control(Control::Accept { .. })));
        let Event::Control(cert) = &evs[1] else {
            panic!("{evs:?}")
        };
        assert!(matches!(
            me.identity.handle(cert, 0),
            Ok(ClientEvent::CertInstalled { .. })
        ));
        me
    }

    fn now(mono_ms: u64) -> Now {
        Now {
            unix: T0 + mono_ms / 1000,
            mono_ms,
        }
    }

    /// Everything the proxy sent, opened.
    fn read(&mut self, mono_ms: u64) -> Vec<Event> {
        let wire = self.server.poll_transmit().to_vec();
        self.server.transmitted(wire.len(), Self::now(mono_ms));
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let used = self
            .transport
            .opener
            .open_all(&wire, &mut data, &mut events)
            .expect("open");
        assert_eq!(used, wire.len());
        events
    }

    /// Runs to the first challenge and returns the genuine proof.
    fn challenge(&mut self) -> (u64, Control) {
        let at = self.server.poll_timeout().expect("a timer");
        assert_eq!(at, TIMING.interval_secs * 1000);
        self.server.handle_timeout(Self::now(at), [3; 32]);
        assert_eq!(
            self.server.poll_event(),
            Some(ServerEvent::Challenged { seq: 1 })
        );
        let evs = self.read(at);
        let Some(Event::Control(ch)) = evs.first() else {
            panic!("{evs:?}")
        };
        let Ok(ClientEvent::Reply(proof)) = self.identity.handle(ch, at) else {
            panic!("no proof")
        };
        (at, proof)
    }

    /// Seals `batch` and hands it to the proxy in one read.
    fn send(&mut self, batch: &[Rec], at: u64) {
        let mut wire = Vec::new();
        for rec in batch {
            let sealer = &mut self.transport.sealer;
            match rec {
                Rec::Data(d) => sealer.seal_data(d, &mut wire),
                Rec::Ctl(m) => sealer.seal_control(m, &mut wire),
            }
            .expect("seal");
        }
        self.server
            .handle_peer(&wire, &self.subca, &self.policy, Self::now(at));
    }
}

/// A record a hand-driven client sends.
enum Rec {
    Data(&'static [u8]),
    Ctl(Control),
}

#[test]
fn data_in_the_batch_of_a_forged_proof_or_after_it_never_reaches_sshd() {
    let mut c = RawClient::new();
    let (at, proof) = c.challenge();
    let Control::Proof { seq, cert, mut sig } = proof else {
        panic!()
    };
    sig[17] ^= 4;
    let forged = Control::Proof { seq, cert, sig };
    c.send(
        &[Rec::Data(b"before"), Rec::Ctl(forged), Rec::Data(b"after")],
        at + 5,
    );
    assert_eq!(
        c.server.poll_event(),
        Some(ended(
            EndKind::ProofBadSignature,
            "proof signature invalid (relayed from another connection?)"
        ))
    );
    assert_eq!(c.server.poll_event(), None);
    assert!(c.server.poll_local().is_empty());
    c.send(&[Rec::Data(b"later")], at + 6);
    assert!(c.server.poll_local().is_empty());
    assert_eq!(c.server.poll_event(), None);
    // What was sent: one TERMINATE with the reason.
    let evs = c.read(at + 6);
    assert_eq!(
        evs,
        vec![Event::Control(Control::Terminate {
            code: crate::control::TerminateCode::IdentityRevoked,
            reason: "proof signature invalid (relayed from another connection?)".into()
        })]
    );
    assert_eq!(c.server.poll_event(), Some(ServerEvent::Closed));

    // The same batch with the genuine proof delivers all of its data.
    let mut c = RawClient::new();
    let (at, proof) = c.challenge();
    c.send(
        &[Rec::Data(b"before"), Rec::Ctl(proof), Rec::Data(b"after")],
        at + 5,
    );
    assert_eq!(c.server.poll_event(), Some(ServerEvent::ProofOk { seq: 1 }));
    assert_eq!(c.server.poll_local(), b"beforeafter");
}

#[test]
fn data_in_the_batch_of_a_late_or_revoked_proof_never_reaches_sshd() {
    for revoked in [false, true] {
        let mut n = net();
        n.c2s_blocked = true;
        n.t = 29_000;
        n.ssh_write(b"before");
        if revoked {
            let serial = n.server.identity().serial();
            n.policy.revoked.borrow_mut().push(serial);
        }
        // The challenge goes out at 30 s and is answered at once, but the
        // proxy reads the answer only after the deadline (or not at all
        // in time to matter: the serial was revoked meanwhile).
        n.run_until(30_000);
        assert_eq!(n.sev, vec![(30_000, ServerEvent::Challenged { seq: 1 })]);
        n.ssh_write(b"after");
        assert_eq!(n.client.poll_transmit().len(), 3 * F);
        n.t = if revoked { 31_000 } else { 40_000 };
        n.c2s_blocked = false;
        n.sshd_blocked = true;
        n.move_c2s();
        let want = if revoked {
            ended(EndKind::SerialRevoked, "certificate revoked")
        } else {
            ended(
                EndKind::ProofLate,
                "proof for challenge 1 arrived after the deadline",
            )
        };
        assert_eq!(n.server.poll_event(), Some(want));
        assert!(n.server.poll_local().is_empty());
        n.sshd_blocked = false;
        n.ssh_write(b"later");
        n.pump();
        assert!(n.sshd.is_empty(), "{:?}", n.sshd);
        assert!(matches!(
            n.cev.last(),
            Some((_, ClientConnEvent::Ended(Some(ClientEnd::Terminated(_)))))
        ));
    }
}
