//! Challenges, renewals and certificate expiry on the sidecar's own
//! timers, and the sidecar's ends before the proxy accepts.

use super::*;

// ------------------------------------------------- challenges and renewals

#[test]
fn many_challenges_and_renewals_on_the_sidecars_own_timers() {
    // The proxy's wall clock is 290 s off either way; the sidecar has none.
    let mut logs = Vec::new();
    for offset in [-290, 0, 290] {
        let mut n = started(TIMING, offset);
        n.run_until(999_999);
        assert!(n.terminated().is_none(), "{:?}", n.terminated());
        let count = |f: &dyn Fn(&ServerEvent) -> bool| n.sev.iter().filter(|(_, e)| f(e)).count();
        let challenged = count(&|e| matches!(e, ServerEvent::Challenged { .. }));
        let proved = count(&|e| matches!(e, ServerEvent::ProofOk { .. }));
        let renewed: Vec<u64> = n
            .sev
            .iter()
            .filter(|(_, e)| *e == ServerEvent::Renewed)
            .map(|(t, _)| *t)
            .collect();
        // ~30 s apart (±10 %) for 1000 s.
        assert!((30..=38).contains(&challenged), "{challenged}");
        assert_eq!(proved, challenged);
        // Renewal two thirds into each 300 s certificate, on the
        // sidecar's monotonic clock.
        assert_eq!(renewed, vec![200_000, 400_000, 600_000, 800_000]);
        let installed: Vec<u64> = n
            .seen()
            .iter()
            .filter(|(_, s)| {
                *s == Seen::Cert {
                    ttl_secs: 300,
                    renewed: true,
                }
            })
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(installed, renewed);
        let answered = n
            .cev
            .iter()
            .filter(|(_, e)| matches!(e, ClientConnEvent::Answered { .. }))
            .count();
        let acked = n
            .cev
            .iter()
            .filter(|(_, e)| matches!(e, ClientConnEvent::Acked { .. }))
            .count();
        assert_eq!((answered, acked), (proved, proved));
        assert_eq!(n.server.identity().renewals(), 4);
        assert_eq!(n.server.identity().proofs(), proved as u64);
        assert_eq!(n.server.identity().principal(), "alice");
        let serial = n.server.identity().serial();
        assert_eq!(n.client.identity().cert().map(|c| c.serial), Some(serial));
        let cert = n.client.identity().cert().expect("cert");
        assert_eq!(
            cert.not_before,
            T0.saturating_add_signed(offset) + 800,
            "issued on the proxy's clock"
        );
        logs.push((n.seen(), n.server_events()));
    }
    // Whatever the proxy's clock says, the sidecar does the same thing at
    // the same moments.
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

#[test]
fn a_renewal_answered_late_is_retried_refused_as_early_and_the_late_cert_installs() {
    // A write bound longer than the renewal reply wait, and no challenges.
    let timing = Timing {
        interval_secs: 3600,
        deadline_secs: 30,
        cert_ttl_secs: 300,
    };
    let mut n = started(timing, 0);
    n.run_until(199_999);
    // The client reads nothing from 200 s to 221 s: the proxy renews at
    // once, but its CERT waits unread.
    n.s2c_blocked = true;
    n.run_until(221_000);
    n.s2c_blocked = false;
    n.pump();
    n.run_until(500_000);
    let renewal: Vec<(u64, ServerEvent)> = n
        .sev
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::RenewRefused { .. } | ServerEvent::Renewed))
        .cloned()
        .collect();
    let retry = 200_000 + RENEW_REPLY_MS + RENEW_RETRY_MS;
    assert_eq!(
        renewal,
        vec![
            (200_000, ServerEvent::Renewed),
            // The retry is for a certificate already replaced: 20 s into
            // the new one's life, ignored.
            (
                retry,
                ServerEvent::RenewRefused {
                    reason: "renewal 20s into a certificate's life; at most one per 75s".into(),
                    nth: 1
                }
            ),
            // The next renewal is timed from the late CERT's arrival.
            (221_000 + 200_000, ServerEvent::Renewed),
        ]
    );
    let failed: Vec<(u64, ClientConnEvent)> = n
        .cev
        .iter()
        .filter(|(_, e)| matches!(e, ClientConnEvent::RenewalFailed { .. }))
        .cloned()
        .collect();
    assert_eq!(
        failed,
        vec![(
            200_000 + RENEW_REPLY_MS,
            ClientConnEvent::RenewalFailed {
                error: "the proxy did not answer within 15s".into(),
                left_secs: 85
            }
        )]
    );
    let renewed = Seen::Cert {
        ttl_secs: 300,
        renewed: true,
    };
    assert!(n.seen().contains(&(221_000, renewed)));
    assert!(n.terminated().is_none(), "{:?}", n.terminated());
    assert_eq!(n.server.identity().renewals(), 2);
    let serial = n.server.identity().serial();
    assert_eq!(n.client.identity().cert().map(|c| c.serial), Some(serial));
}

#[test]
fn certificate_expiry_without_renewal_ends_the_session_at_expiry() {
    // Challenges far rarer than the certificate's life, and an agent that
    // refuses every renewal.
    let timing = Timing {
        interval_secs: 3600,
        ..TIMING
    };
    let mut n = started(timing, 0);
    n.agent_signs = false;
    assert_eq!(n.server.poll_timeout(), Some(300_000));
    n.run_until(299_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    let failed: Vec<(u64, ClientConnEvent)> = n
        .cev
        .iter()
        .filter(|(_, e)| matches!(e, ClientConnEvent::RenewalFailed { .. }))
        .take(2)
        .cloned()
        .collect();
    assert_eq!(
        failed,
        vec![
            (
                200_000,
                ClientConnEvent::RenewalFailed {
                    error: "agent refused".into(),
                    left_secs: 100
                }
            ),
            (
                200_000 + RENEW_RETRY_MS,
                ClientConnEvent::RenewalFailed {
                    error: "agent refused".into(),
                    left_secs: 95
                }
            ),
        ]
    );
    n.run_until(300_000);
    let reason = "client certificate for alice expired (renewal failed?)";
    assert_eq!(
        n.sev,
        vec![
            (300_000, ended(EndKind::CertExpired, reason)),
            (300_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev.last(),
        Some(&(
            300_000,
            ClientConnEvent::Ended(Some(ClientEnd::Terminated(reason.into())))
        ))
    );
}

/// A client whose handshake the proxy answers with `terminate` before any
/// ACCEPT; `hold` as the sidecar sets it when another key may follow.
fn refused_client(hold: bool, code: crate::control::TerminateCode) -> ClientConn {
    let pki = pki();
    let alice = user(1);
    let (session, mut authed) =
        run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        SigningKey::generate().public(),
    );
    let mut client = ClientConn::new(session.transport, identity);
    client.hold_until_accepted(hold);
    assert_eq!(
        client.wants_local(),
        !hold,
        "ssh's bytes wait only when held"
    );
    let mut wire = Vec::new();
    let msg = Control::Terminate {
        code,
        reason: "principal alice is not authorized with key K on web1".into(),
    };
    authed
        .transport
        .sealer
        .seal_control(&msg, &mut wire)
        .expect("seal");
    let now = Now {
        unix: CLIENT_UNIX,
        mono_ms: CLIENT_BASE,
    };
    client.handle_peer(&wire, now);
    client
}

#[test]
fn a_key_refused_before_accept_is_its_own_end_and_ssh_bytes_wait_while_held() {
    use crate::control::TerminateCode;
    let reason = "principal alice is not authorized with key K on web1".to_owned();
    let mut c = refused_client(true, TerminateCode::NotAuthorized);
    let mut ends = Vec::new();
    while let Some(ev) = c.poll_event() {
        ends.push(ev);
    }
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::KeyRefused(
            reason.clone()
        )))),
        "{ends:?}"
    );
    // Any other refusal is not about the key: no other key is tried.
    let mut c = refused_client(false, TerminateCode::PolicyDenied);
    let mut ends = Vec::new();
    while let Some(ev) = c.poll_event() {
        ends.push(ev);
    }
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::Refused(reason)))),
        "{ends:?}"
    );
}

#[test]
fn a_revoked_key_before_accept_lets_the_sidecar_try_its_next_key() {
    use crate::end::EndKind;
    // A revoked user key is refused like an unauthorized one; a banned
    // principal or a revoked licence is not about the key.
    let reason = "principal alice is not authorized with key K on web1".to_owned();
    let mut c = refused_client(true, EndKind::UserKeyRevoked.code());
    let ends: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::KeyRefused(
            reason.clone()
        )))),
        "{ends:?}"
    );
    for kind in [EndKind::PrincipalBanned, EndKind::LicenceRevoked] {
        let mut c = refused_client(true, kind.code());
        let ends: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(
            ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::Refused(
                reason.clone()
            )))),
            "{kind:?}: {ends:?}"
        );
    }
}

#[test]
fn a_held_client_reads_ssh_once_accepted() {
    let mut n = net_with(TIMING, 0, None);
    n.client.hold_until_accepted(true);
    assert!(!n.client.wants_local());
    n.pump();
    assert!(n.client.accepted());
    assert!(n.client.wants_local());
}
