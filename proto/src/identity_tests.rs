//! Continuous identity on virtual time: a server and a client identity
//! machine talking through plain values.

use crate::keys::TestRng;
use std::cell::RefCell;

use ssh_key::{HashAlg, PrivateKey};

use crate::cert::Serial;
use crate::control::Control;
use crate::control::TerminateCode;
use crate::identity::{
    Authority, Checkpoint, ClientEvent, ClientIdentity, EndKind, Ended, Handled, MAX_ABANDONED,
    MAX_EARLY_RENEWALS, ServerIdentity, Subject, Timing,
};
use crate::keys::SigningKey;
use crate::labels::SSHSIG_NAMESPACE_RENEW;
use crate::time::UnixTime;

/// An authority with bans, revoked serials and a licence revocation that
/// can change mid-session (shared with the connection tests).
#[derive(Default)]
pub(crate) struct Policy {
    pub(crate) banned: RefCell<Vec<String>>,
    pub(crate) revoked: RefCell<Vec<Serial>>,
    pub(crate) licence_revoked: RefCell<bool>,
}

impl Authority for Policy {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        let principal = who.principal;
        if self.banned.borrow().iter().any(|p| p == principal) {
            return Err(Ended::new(
                EndKind::PrincipalBanned,
                format!("principal {principal} banned"),
            ));
        }
        let revoked = self.revoked.borrow();
        if at
            .issued()
            .is_some_and(|i| i.all().any(|s| revoked.contains(s)))
        {
            return Err(Ended::new(EndKind::SerialRevoked, "certificate revoked"));
        }
        self.may_issue(now)
    }
    fn may_issue(&self, _now: UnixTime) -> Result<(), Ended> {
        if *self.licence_revoked.borrow() {
            return Err(Ended::new(
                EndKind::LicenceRevoked,
                "server licence revoked",
            ));
        }
        Ok(())
    }
}

const T0: u64 = 1_800_000_000;
const TIMING: Timing = Timing {
    interval_secs: 30,
    deadline_secs: 10,
    cert_ttl_secs: 300,
};

struct Pair {
    server: ServerIdentity,
    client: ClientIdentity,
    /// The first CERT as sent, and the session key's seed: for a twin client.
    first_cert: Control,
    session_seed: crate::keys::Secret<32>,
    subca: SigningKey,
    user: PrivateKey,
    policy: Policy,
    now: u64,
    mono: u64,
}

fn user() -> PrivateKey {
    PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[5; 32]))
}

fn pair_with(timing: Timing) -> Pair {
    let subca = SigningKey::generate(&mut TestRng);
    let user = user();
    let policy = Policy::default();
    let pki = crate::tests::pki();
    let (session, authed) =
        crate::tests::run(&pki, crate::tests::client_cfg(&pki, "web1"), &user, &user)
            .expect("handshake");
    let authorized = authed.authorize(&policy, T0).expect("authorized");
    let seed = session.session_key.to_seed();
    let started = ServerIdentity::start(authorized, &subca, &policy, timing, T0, 0, &mut TestRng)
        .expect("start");
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        subca.public(),
    );
    // The proxy's side is under test with short certificates too; the
    // sidecar refuses them unless told (the test rigs' override).
    if timing.cert_ttl_secs < crate::identity::MIN_CERT_TTL {
        client.allow_short_certs();
    }
    let ev = client.handle(&started.cert, 0).expect("install");
    assert!(matches!(
        ev,
        ClientEvent::CertInstalled { renewed: false, .. }
    ));
    Pair {
        server: started.identity,
        client,
        first_cert: started.cert,
        session_seed: seed,
        subca,
        user,
        policy,
        now: T0,
        mono: 0,
    }
}

fn pair() -> Pair {
    pair_with(TIMING)
}

impl Pair {
    fn advance(&mut self, secs: u64) {
        self.now += secs;
        self.mono += secs * 1000;
    }

    /// Advances to the next wakeup and returns the challenge.
    fn next_challenge(&mut self) -> Control {
        let wait = self.server.next_wakeup().saturating_sub(self.mono);
        self.mono += wait;
        self.now += wait / 1000;
        self.server
            .poll(self.now, self.mono, crate::keys::random_bytes(&mut TestRng))
            .expect("poll")
            .expect("challenge due")
    }

    fn answer(&mut self, ch: &Control) -> Control {
        match self.client.handle(ch, self.mono).expect("client") {
            ClientEvent::Reply(p) => p,
            other => panic!("expected a proof, got {other:?}"),
        }
    }

    fn deliver(&mut self, msg: Control) -> Result<Control, Ended> {
        match self.server.handle(
            msg,
            &self.subca,
            &self.policy,
            self.now,
            self.mono,
            &mut TestRng,
        )? {
            Handled::Proved(c) | Handled::Renewed(c) => Ok(c),
            Handled::RenewRefused { reason, .. } => panic!("renewal refused: {reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A RENEW the client then gives up on, handed to the proxy.
    fn renew_abandoned(&mut self) -> Result<Handled, Ended> {
        let renew = self.renew();
        self.client.abandon_renewal();
        self.server.handle(
            renew,
            &self.subca,
            &self.policy,
            self.now,
            self.mono,
            &mut TestRng,
        )
    }

    fn renew(&mut self) -> Control {
        let data = self.client.renewal_data(&mut TestRng).expect("data");
        let sig = self
            .user
            .sign(SSHSIG_NAMESPACE_RENEW, HashAlg::Sha512, &data)
            .expect("sign");
        use ssh_key::encoding::Encode;
        self.client
            .renew(sig.encode_vec().expect("enc"))
            .expect("renew")
    }
}

#[test]
fn many_challenges_and_renewals_keep_the_session() {
    let mut p = pair();
    let mut renewals = 0;
    for i in 0..40 {
        let ch = p.next_challenge();
        let proof = p.answer(&ch);
        let ack = p.deliver(proof).expect("proof accepted");
        assert!(
            matches!(p.client.handle(&ack, p.mono), Ok(ClientEvent::Acked(_))),
            "round {i}"
        );
        if p.client.renewal_due(p.mono) {
            let renew = p.renew();
            let cert = p.deliver(renew).expect("renewal accepted");
            assert!(matches!(
                p.client.handle(&cert, p.mono),
                Ok(ClientEvent::CertInstalled { renewed: true, .. })
            ));
            renewals += 1;
        }
    }
    assert_eq!(p.server.proofs(), 40);
    assert!(
        renewals >= 3,
        "{renewals} renewals in 40 challenges of ~30 s with 300 s certificates"
    );
    assert_eq!(p.server.renewals(), renewals);
}

#[test]
fn replayed_wrong_seq_and_unsolicited_proofs_end_the_session() {
    let mut p = pair();
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    p.deliver(proof.clone()).expect("first proof");
    // Replay with no challenge outstanding.
    assert_eq!(
        p.deliver(proof.clone()).expect_err("replay").kind,
        EndKind::ProofUnsolicited
    );

    let mut p = pair();
    let ch1 = p.next_challenge();
    let old = p.answer(&ch1);
    p.deliver(old.clone()).expect("ok");
    let _ch2 = p.next_challenge();
    // The proof for challenge 1 replayed against challenge 2.
    assert_eq!(
        p.deliver(old).expect_err("old proof").kind,
        EndKind::ProofWrongSeq
    );
}

#[test]
fn a_proof_relayed_from_another_connection_fails() {
    // Another session of the same user: its certificate differs from the
    // one this session was issued, which is refused first.
    let mut a = pair();
    let mut b = pair();
    let ch_a = a.next_challenge();
    let ch_b = b.next_challenge();
    // Make b's challenge identical to a's, then answer it from a's client.
    let (Control::Challenge { seq, nonce, .. }, Control::Challenge { seq: seq_b, .. }) =
        (&ch_a, &ch_b)
    else {
        panic!()
    };
    assert_eq!(seq, seq_b);
    let relayed = a.answer(&Control::Challenge {
        seq: *seq,
        nonce: *nonce,
        deadline_secs: 10,
    });
    let e = b.deliver(relayed).expect_err("relayed");
    assert_eq!(e.kind, EndKind::ProofWrongCert, "{e:?}");
}

#[test]
fn a_proof_is_bound_to_its_handshake_hash_alone() {
    // A twin client holds exactly this session's certificate bytes and
    // session key, but answers for another handshake: only the transcript
    // hash differs, and that alone must refuse the proof.
    let mut p = pair();
    let mut twin = ClientIdentity::new(
        [0xee; 32],
        "alice",
        SigningKey::from_seed(&p.session_seed),
        p.subca.public(),
    );
    twin.handle(&p.first_cert, p.mono)
        .expect("same certificate");
    let ch = p.next_challenge();
    let ClientEvent::Reply(proof) = twin.handle(&ch, p.mono).expect("twin") else {
        panic!("no proof")
    };
    let Control::Proof { cert, .. } = &proof else {
        panic!()
    };
    let Control::Cert { cert: ours, .. } = &p.first_cert else {
        panic!()
    };
    assert_eq!(cert, ours, "the twin presents the very same certificate");
    let e = p.deliver(proof).expect_err("bound to another handshake");
    assert_eq!(e.kind, EndKind::ProofBadSignature, "{e:?}");
}

#[test]
fn late_proofs_and_silence_end_the_session() {
    let mut p = pair();
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    p.advance(11);
    assert_eq!(p.deliver(proof).expect_err("late").kind, EndKind::ProofLate);

    let mut p = pair();
    let _ = p.next_challenge();
    p.advance(9);
    assert_eq!(p.server.poll(p.now, p.mono, [0; 32]), Ok(None));
    p.advance(1);
    assert_eq!(
        p.server
            .poll(p.now, p.mono, [0; 32])
            .expect_err("silent")
            .kind,
        EndKind::ProofLate
    );
}

#[test]
fn certificate_expiry_without_renewal_ends_the_session() {
    let mut p = pair();
    for _ in 0..9 {
        let ch = p.next_challenge();
        let proof = p.answer(&ch);
        p.deliver(proof).expect("ok");
    }
    p.advance(300);
    let e = p.server.poll(p.now, p.mono, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::CertExpired);
    assert!(e.reason.contains("expired"), "{}", e.reason);
}

#[test]
fn renewal_cannot_switch_principal_or_skip_the_user_key() {
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let Control::Renew {
        new_key,
        new_sig,
        old_sig,
        user_sig,
        ..
    } = p.renew()
    else {
        panic!()
    };
    let switched = Control::Renew {
        principal: "root".into(),
        new_key,
        new_sig,
        old_sig,
        user_sig: user_sig.clone(),
    };
    let e = p.deliver(switched).expect_err("switch");
    assert_eq!(e.kind, EndKind::RenewPrincipalSwitch);
    assert_eq!(
        e.reason,
        "renewal tried to switch principal from alice to root"
    );

    // Signed by some other user key.
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let data = p.client.renewal_data(&mut TestRng).expect("data");
    let mallory = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[6; 32]));
    let sig = mallory
        .sign(SSHSIG_NAMESPACE_RENEW, HashAlg::Sha512, &data)
        .expect("sign");
    use ssh_key::encoding::Encode;
    let renew = p
        .client
        .renew(sig.encode_vec().expect("enc"))
        .expect("renew");
    assert_eq!(
        p.deliver(renew).expect_err("foreign user").kind,
        EndKind::RenewBadSignature
    );
}

#[test]
fn revocation_is_seen_at_recheck_and_at_the_next_proof() {
    let mut p = pair();
    assert!(p.server.recheck(&p.policy, p.now).is_ok());
    p.policy.banned.borrow_mut().push("alice".into());
    let e = p.server.recheck(&p.policy, p.now).expect_err("banned");
    assert_eq!(e.reason, "principal alice banned");

    let mut p = pair();
    p.policy.revoked.borrow_mut().push(p.server.serial());
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    assert_eq!(
        p.deliver(proof).expect_err("revoked").kind,
        EndKind::SerialRevoked
    );

    let mut p = pair();
    *p.policy.licence_revoked.borrow_mut() = true;
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let renew = p.renew();
    assert_eq!(
        p.deliver(renew).expect_err("licence").kind,
        EndKind::LicenceRevoked
    );
}

#[test]
fn no_message_sequence_gets_an_ack_without_a_valid_proof() {
    // Deterministic pseudo-random message soup: only genuine proofs for the
    // outstanding challenge may ever be acknowledged.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        let mut p = pair();
        let ch = p.next_challenge();
        let Control::Challenge { seq, nonce, .. } = ch.clone() else {
            panic!()
        };
        let genuine = p.answer(&ch);
        let Control::Proof { cert, sig, .. } = genuine.clone() else {
            panic!()
        };
        let r = next();
        let mut bad_sig = sig;
        bad_sig[(r % 64) as usize] ^= 1 << (r % 8);
        let mut bad_cert = cert.clone();
        let pos = (r as usize) % bad_cert.len();
        bad_cert[pos] ^= 1;
        let forged = match r % 5 {
            0 => Control::Proof {
                seq,
                cert: cert.clone(),
                sig: bad_sig,
            },
            1 => Control::Proof {
                seq: seq + 1 + r % 3,
                cert: cert.clone(),
                sig,
            },
            2 => Control::Proof {
                seq,
                cert: bad_cert,
                sig,
            },
            3 => Control::Ack { seq },
            _ => Control::Challenge {
                seq,
                nonce,
                deadline_secs: 1,
            },
        };
        assert!(
            p.deliver(forged).is_err(),
            "forgery accepted (case {})",
            r % 5
        );
    }
}

#[test]
fn a_proof_that_crosses_a_renewal_on_the_wire_is_accepted_once() {
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let ch = p.next_challenge();
    // The client renews; the proxy issues the new certificate before the
    // client's answer to the older challenge arrives.
    let renew = p.renew();
    let proof_with_old_cert = p.answer(&ch);
    let new_cert = p.deliver(renew).expect("renewal");
    assert!(matches!(
        p.deliver(proof_with_old_cert.clone()),
        Ok(Control::Ack { .. })
    ));
    p.client.handle(&new_cert, p.mono).expect("install");
    // The next challenge must be answered with the new certificate.
    let ch2 = p.next_challenge();
    let Control::Challenge { seq, .. } = ch2 else {
        panic!()
    };
    let Control::Proof { cert, sig, .. } = proof_with_old_cert else {
        panic!()
    };
    assert_eq!(
        p.deliver(Control::Proof { seq, cert, sig })
            .expect_err("old cert")
            .kind,
        EndKind::ProofWrongCert
    );
}

#[test]
fn an_ended_session_stays_ended() {
    let mut p = pair();
    let ch = p.next_challenge();
    let Control::Proof { seq, cert, mut sig } = p.answer(&ch) else {
        panic!("proof")
    };
    let genuine = Control::Proof {
        seq,
        cert: cert.clone(),
        sig,
    };
    sig[0] ^= 1;
    let first = p
        .deliver(Control::Proof { seq, cert, sig })
        .expect_err("tampered");
    // The genuine proof, arriving after the failure, gets the same failure.
    assert_eq!(p.deliver(genuine).expect_err("ended"), first);
    let (now, mono) = (p.now, p.mono);
    assert_eq!(p.server.poll(now, mono, [0; 32]).expect_err("ended"), first);
}

#[test]
fn renewals_too_early_are_refused_before_any_signature_check_and_the_session_goes_on() {
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs / 4 - 1);
    let renew = p.renew();
    let handled = p
        .server
        .handle(renew, &p.subca, &p.policy, p.now, p.mono, &mut TestRng)
        .expect("not fatal");
    assert_eq!(
        handled,
        Handled::RenewRefused {
            reason: "renewal 74s into a certificate's life; at most one per 75s".into(),
            nth: 1
        }
    );
    assert_eq!(p.server.renewals(), 0);
    // The client gives up on that renewal; the session carries on.
    p.client.abandon_renewal();
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    assert!(matches!(p.deliver(proof), Ok(Control::Ack { .. })));
}

#[test]
fn early_renewals_are_ignored_a_few_times_per_certificate_then_end_the_session() {
    let mut p = pair();
    p.advance(10);
    let early = |nth| Handled::RenewRefused {
        reason: "renewal 10s into a certificate's life; at most one per 75s".into(),
        nth,
    };
    for nth in 1..=MAX_EARLY_RENEWALS {
        assert_eq!(p.renew_abandoned(), Ok(early(nth)));
    }
    // A renewal on time resets the count for the new certificate.
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let renew = p.renew();
    let cert = p.deliver(renew).expect("renewal");
    p.client.handle(&cert, p.mono).expect("install");
    p.advance(10);
    for nth in 1..=MAX_EARLY_RENEWALS {
        assert_eq!(p.renew_abandoned(), Ok(early(nth)));
    }
    // One more for the same certificate ends the session, before any
    // signature is checked.
    let serial = p.server.serial();
    let e = p.renew_abandoned().expect_err("one too many");
    assert_eq!(e.kind, EndKind::RenewTooEarly);
    assert_eq!(e.code(), TerminateCode::ProtocolError);
    assert_eq!(
        e.reason,
        format!("4 renewals within the first 75s of certificate {serial}; at most 3 are ignored")
    );
    assert_eq!(p.server.renewals(), 1);
}

#[test]
fn a_certificate_shorter_than_4s_still_has_a_minimum_age_for_renewal() {
    let mut p = pair_with(Timing {
        cert_ttl_secs: 3,
        ..TIMING
    });
    // A quarter of 3 s rounds down to 0: the minimum is still 1 s.
    assert_eq!(
        p.renew_abandoned(),
        Ok(Handled::RenewRefused {
            reason: "renewal 0s into a certificate's life; at most one per 1s".into(),
            nth: 1
        })
    );
    p.advance(1);
    let renew = p.renew();
    assert!(matches!(p.deliver(renew), Ok(Control::Cert { .. })));
}

#[test]
fn a_wall_clock_that_steps_back_does_not_make_an_honest_renewal_early() {
    // The proxy's wall clock steps back 150 s: by its wall clock the
    // certificate is 50 s old at the client's renewal time, but the age
    // counts on the monotonic clock (200 s).
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    p.now -= 150;
    let renew = p.renew();
    assert!(matches!(p.deliver(renew), Ok(Control::Cert { .. })));
    assert_eq!(p.server.renewals(), 1);
}

#[test]
fn certificate_expiry_is_a_wakeup_of_its_own() {
    // Challenges less often than certificates expire: the session must
    // still end at expiry, not at the next challenge.
    let mut p = pair_with(Timing {
        interval_secs: 3600,
        ..TIMING
    });
    assert_eq!(p.server.next_wakeup(), TIMING.cert_ttl_secs * 1000);
    p.advance(TIMING.cert_ttl_secs - 1);
    assert_eq!(p.server.poll(p.now, p.mono, [0; 32]), Ok(None));
    p.advance(1);
    let e = p.server.poll(p.now, p.mono, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::CertExpired);
}

#[test]
fn client_renewal_is_timed_from_arrival_whatever_its_wall_clock() {
    // The client never reads a wall clock: a certificate's renewal time is
    // two thirds of its lifetime after it arrived, on the monotonic clock.
    let p = pair();
    let ttl_ms = TIMING.cert_ttl_secs * 1000;
    assert_eq!(p.client.renew_at(), Some(ttl_ms - ttl_ms / 3));
    assert_eq!(p.client.expires_at(), Some(ttl_ms));
    assert!(!p.client.renewal_due(ttl_ms - ttl_ms / 3 - 1));
    assert!(p.client.renewal_due(ttl_ms - ttl_ms / 3));
}

#[test]
fn a_renewal_answered_after_the_client_gave_up_on_it_still_installs() {
    let mut p = pair();
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    let renew = p.renew();
    // The client stops waiting (slow link); the CERT arrives afterwards.
    p.client.abandon_renewal();
    let cert = p.deliver(renew).expect("renewal");
    assert!(matches!(
        p.client.handle(&cert, p.mono),
        Ok(ClientEvent::CertInstalled { renewed: true, .. })
    ));
    // And the session goes on under the new key.
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    assert!(matches!(p.deliver(proof), Ok(Control::Ack { .. })));
}

#[test]
fn a_late_cert_for_any_of_the_last_abandoned_renewals_still_installs() {
    for late in 0..=MAX_ABANDONED {
        let mut p = pair();
        p.advance(TIMING.cert_ttl_secs * 2 / 3);
        // One more renewal given up on than the client keeps, then one in
        // flight; the proxy answers one of those given up on.
        let renews: Vec<Control> = (0..=MAX_ABANDONED)
            .map(|_| {
                let r = p.renew();
                p.client.abandon_renewal();
                r
            })
            .collect();
        let _in_flight = p.renew();
        let cert = p.deliver(renews[late].clone()).expect("renewal");
        let installed = p.client.handle(&cert, p.mono);
        if late == 0 {
            // The oldest key is gone (zeroized), as bounded.
            assert_eq!(
                installed,
                Err("renewed certificate is for another session key".into())
            );
            continue;
        }
        assert!(
            matches!(
                installed,
                Ok(ClientEvent::CertInstalled { renewed: true, .. })
            ),
            "{late}: {installed:?}"
        );
        let ch = p.next_challenge();
        let proof = p.answer(&ch);
        assert!(matches!(p.deliver(proof), Ok(Control::Ack { .. })));
    }
}

// ------------------------------------------------- FIDO security keys

/// The test authority with a chosen security key policy.
struct SkAuthority {
    inner: Policy,
    sk: crate::identity::SkPolicy,
    cas: Option<crate::trust::usercert::UserCas>,
}

impl Authority for SkAuthority {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        self.inner.check(who, at, now)
    }
    fn may_issue(&self, now: UnixTime) -> Result<(), Ended> {
        self.inner.may_issue(now)
    }
    fn sk_policy(&self, _principal: &str) -> crate::identity::SkPolicy {
        self.sk
    }
    fn user_cas(&self) -> Option<&crate::trust::usercert::UserCas> {
        self.cas.as_ref()
    }
}

fn sk_authority(presence: bool, verification: bool, reverify_secs: Option<u64>) -> SkAuthority {
    SkAuthority {
        inner: Policy::default(),
        sk: crate::identity::SkPolicy {
            presence,
            verification,
            reverify_secs,
        },
        cas: None,
    }
}

/// A session whose user key is a software security key.
struct SkSession {
    server: ServerIdentity,
    client: ClientIdentity,
    subca: SigningKey,
    sk: crate::userkey::tests::SoftSk,
    mono: u64,
    counter: u32,
}

/// Logs in with a security key that signs the handshake with `flags`.
fn sk_login(authority: &SkAuthority, flags: u8) -> Result<(SkSession, Control), Ended> {
    sk_login_with(authority, flags, None)
}

/// [`sk_login`], presenting `cert` (a user certificate) in message 3.
fn sk_login_with(
    authority: &SkAuthority,
    flags: u8,
    cert: Option<Vec<u8>>,
) -> Result<(SkSession, Control), Ended> {
    use crate::frame::FrameSize;
    use crate::handshake;
    let pki = crate::tests::pki();
    let sk = crate::userkey::tests::SoftSk::new([3; 32]);
    let server = handshake::server_start(
        pki.noise(),
        pki.licence(),
        FrameSize::default(),
        &mut TestRng,
    )
    .expect("server");
    let (client, msg1) = handshake::client_start_with_cert(
        crate::tests::client_cfg(&pki, "web1"),
        cert,
        &mut TestRng,
    )
    .expect("client");
    let (server, msg2) = server
        .handle_client_hello(&msg1, &mut TestRng)
        .expect("hello");
    let verified = client
        .handle_server_hello(&msg2, T0, &mut TestRng)
        .expect("server hello");
    let sig = sk.sign(
        crate::labels::SSHSIG_NAMESPACE_HANDSHAKE,
        &verified.user_signed_data(),
        flags,
        1,
    );
    let (session, msg3) = verified
        .into_client_auth("alice", &sk.public(), &sig)
        .expect("msg3");
    let authed = server
        .handle_client_auth(&msg3)
        .ok()
        .and_then(crate::handshake::ClientAuth::authenticated)
        .expect("signature verifies");
    assert_eq!(authed.user_sig().sk().map(|a| a.flags), Some(flags));
    let authorized = authed.authorize(authority, T0).map_err(|r| r.ended)?;
    let subca = SigningKey::generate(&mut TestRng);
    let started = ServerIdentity::start(authorized, &subca, authority, TIMING, T0, 0, &mut TestRng)
        .map_err(|r| r.ended)?;
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        subca.public(),
    );
    client.handle(&started.cert, 0).expect("install");
    let first = started.cert.clone();
    Ok((
        SkSession {
            server: started.identity,
            client,
            subca,
            sk,
            mono: 0,
            counter: 1,
        },
        first,
    ))
}

impl SkSession {
    /// Renews at `at_secs`, with the key's signature (`Some(flags)`, a
    /// touch) or without (`None`); returns the CERT or the end.
    fn renew(
        &mut self,
        authority: &SkAuthority,
        at_secs: u64,
        touch: Option<u8>,
    ) -> Result<Option<bool>, Ended> {
        self.mono = at_secs * 1000;
        let data = self.client.renewal_data(&mut TestRng).expect("data");
        let user_sig = match touch {
            Some(flags) => {
                self.counter += 1;
                let sig = self
                    .sk
                    .sign(SSHSIG_NAMESPACE_RENEW, &data, flags, self.counter);
                use ssh_key::encoding::Encode;
                sig.encode_vec().expect("enc")
            }
            None => Vec::new(),
        };
        let renew = self.client.renew(user_sig).expect("renew");
        let now = T0 + at_secs;
        match self
            .server
            .handle(renew, &self.subca, authority, now, self.mono, &mut TestRng)?
        {
            Handled::Renewed(cert) => {
                self.client.handle(&cert, self.mono).expect("install");
                let Control::Cert { user_sig_due, .. } = cert else {
                    panic!("{cert:?}")
                };
                Ok(user_sig_due)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_security_key_login_needs_a_touch_and_a_pin_only_when_required() {
    // Presence (a touch) by default.
    let a = sk_authority(true, false, None);
    let (s, cert) = sk_login(&a, 0x01).expect("touched");
    assert!(matches!(
        cert,
        Control::Cert {
            user_sig_due: Some(false),
            ..
        }
    ));
    assert!(!s.client.user_sig_needed());
    let e = sk_login(&a, 0x00).err().expect("untouched");
    assert_eq!(e.kind, EndKind::UserKeyRefused);
    assert!(
        e.reason
            .ends_with(": security key signature without user presence (the key was not touched)"),
        "{}",
        e.reason
    );
    assert_eq!(e.kind.code(), TerminateCode::NotAuthorized);
    // Verification (a PIN) when the principal's policy requires it.
    let pin = sk_authority(true, true, None);
    assert!(sk_login(&pin, 0x05).is_ok());
    let e = sk_login(&pin, 0x01).err().expect("no PIN");
    assert!(
        e.reason.ends_with(
            ": security key signature without user verification (no PIN), which the policy requires"
        ),
        "{}",
        e.reason
    );
    // A principal that waives presence (keys made with no-touch-required).
    assert!(sk_login(&sk_authority(false, false, None), 0x00).is_ok());
}

#[test]
fn security_key_renewals_need_no_touch_by_default() {
    let a = sk_authority(true, false, None);
    let (mut s, _) = sk_login(&a, 0x01).expect("login");
    // Login only: every renewal goes without the key, for hours.
    for i in 1..=40u64 {
        let due = s.renew(&a, i * 200, None).expect("renewal without a touch");
        assert_eq!(due, Some(false));
    }
}

#[test]
fn security_key_renewals_need_a_touch_again_once_the_interval_runs_out() {
    // Re-verify every 600 s; certificates live 300 s.
    let a = sk_authority(true, false, Some(600));
    let (mut s, first) = sk_login(&a, 0x01).expect("login");
    assert!(matches!(
        first,
        Control::Cert {
            user_sig_due: Some(false),
            ..
        }
    ));
    // Within the interval: no touch. The certificate issued at 200 s
    // expires at 500 s, inside it; the one issued at 400 s would outlive
    // it, so its renewal needs the key.
    assert_eq!(s.renew(&a, 200, None), Ok(Some(false)));
    assert_eq!(s.renew(&a, 400, None), Ok(Some(true)));
    assert!(s.client.user_sig_needed());
    // After the interval a renewal without the key is refused: a stolen
    // session key cannot keep the session.
    let mut stolen = sk_login(&a, 0x01).expect("login").0;
    assert_eq!(stolen.renew(&a, 200, None), Ok(Some(false)));
    assert_eq!(stolen.renew(&a, 400, None), Ok(Some(true)));
    let e = stolen
        .renew(&a, 600, None)
        .expect_err("no touch after the interval");
    assert_eq!(e.kind, EndKind::RenewBadSignature);
    assert_eq!(
        e.reason,
        "renewal refused: user key: signature missing (required for this renewal)"
    );
    // An untouched signature is refused too.
    let mut lazy = sk_login(&a, 0x01).expect("login").0;
    lazy.renew(&a, 200, None).expect("within");
    lazy.renew(&a, 400, None).expect("within");
    let e = lazy.renew(&a, 600, Some(0x00)).expect_err("untouched");
    assert_eq!(
        e.reason,
        "renewal refused: user key: security key signature without user presence (the key was not touched)"
    );
    // A touch restarts the interval.
    assert_eq!(s.renew(&a, 600, Some(0x01)), Ok(Some(false)));
    assert_eq!(s.renew(&a, 800, None), Ok(Some(false)));
    assert_eq!(s.renew(&a, 1000, None), Ok(Some(true)));
}

#[test]
fn other_keys_sign_every_renewal() {
    let mut p = pair();
    assert!(matches!(
        p.first_cert,
        Control::Cert {
            user_sig_due: None,
            ..
        }
    ));
    assert!(p.client.user_sig_needed());
    p.advance(TIMING.cert_ttl_secs * 2 / 3);
    p.client.renewal_data(&mut TestRng).expect("data");
    let renew = p.client.renew(Vec::new()).expect("renew");
    let e = p
        .deliver(renew)
        .expect_err("an Ed25519 renewal without the key");
    assert_eq!(e.kind, EndKind::RenewBadSignature);
}

/// An authority that applies the trust module's own rule
/// ([`crate::trust::check_revoked`]) to a revocation list that can change
/// mid-session.
#[derive(Default)]
struct ListAuthority {
    serials: RefCell<std::collections::HashSet<Serial>>,
}

impl Authority for ListAuthority {
    fn check(&self, who: &Subject<'_>, at: Checkpoint<'_>, _now: UnixTime) -> Result<(), Ended> {
        let crl = crate::crl::Crl {
            list_version: 1,
            issued: T0,
            next_update: T0 + 86_400,
            issuer: crate::keys::PublicKey([1; 32]),
            revoked: crate::crl::Revocations {
                serials: self.serials.borrow().clone(),
                ..Default::default()
            },
            delegation: None,
        };
        crate::trust::check_revoked(Some(&crl), who, at)
    }
    fn may_issue(&self, _now: UnixTime) -> Result<(), Ended> {
        Ok(())
    }
}

/// Renews `n` times through `authority`, answering a challenge after
/// each; returns every serial the session held, first to last.
fn renew_n(p: &mut Pair, authority: &dyn Authority, n: usize) -> Vec<Serial> {
    let mut serials = vec![p.server.serial()];
    for _ in 0..n {
        p.advance(TIMING.cert_ttl_secs * 2 / 3);
        let renew = p.renew();
        let Handled::Renewed(cert) = p
            .server
            .handle(renew, &p.subca, authority, p.now, p.mono, &mut TestRng)
            .expect("renewed")
        else {
            panic!("no certificate")
        };
        p.client.handle(&cert, p.mono).expect("install");
        serials.push(p.server.serial());
        assert_eq!(p.server.session_serial(), serials[0]);
    }
    serials
}

#[test]
fn revoking_any_serial_a_session_was_issued_ends_it_after_renewals() {
    for which in 0..4 {
        let mut p = pair();
        let list = ListAuthority::default();
        let serials = renew_n(&mut p, &list, 3);
        assert_eq!(serials.len(), 4);
        // The first serial is the session serial every certificate carries.
        let Control::Cert { cert, .. } = &p.first_cert else {
            panic!()
        };
        let first = crate::cert::ClientCert::decode(cert).expect("first");
        assert_eq!(first.serial, serials[0]);
        list.serials.borrow_mut().insert(serials[which]);
        let e = p.server.recheck(&list, p.now).expect_err("revoked");
        assert_eq!(e.kind, EndKind::SerialRevoked, "serial #{which}");
        assert!(e.reason.contains(&serials[0].to_string()), "{e}");
        // And at the next proof (the session stays ended).
        let e = p.server.recheck(&list, p.now).expect_err("still ended");
        assert_eq!(e.kind, EndKind::SerialRevoked);
    }
}

#[test]
fn revoking_the_first_serial_ends_the_session_at_its_next_proof() {
    let mut p = pair();
    let list = ListAuthority::default();
    let serials = renew_n(&mut p, &list, 2);
    list.serials.borrow_mut().insert(serials[0]);
    let ch = p.next_challenge();
    let proof = p.answer(&ch);
    let e = p
        .server
        .handle(proof, &p.subca, &list, p.now, p.mono, &mut TestRng)
        .expect_err("revoked");
    assert_eq!(e.kind, EndKind::SerialRevoked);
    assert_eq!(
        e.kind.code(),
        crate::control::TerminateCode::IdentityRevoked
    );
}

#[test]
fn another_sessions_serial_ends_nothing() {
    let mut a = pair();
    let mut b = pair();
    let list = ListAuthority::default();
    let a_serials = renew_n(&mut a, &list, 2);
    let b_serials = renew_n(&mut b, &list, 2);
    assert!(a_serials.iter().all(|s| !b_serials.contains(s)));
    list.serials.borrow_mut().extend(b_serials.iter().copied());
    assert!(a.server.recheck(&list, a.now).is_ok());
    let ch = a.next_challenge();
    let proof = a.answer(&ch);
    assert!(a.deliver_to(proof, &list).is_ok());
    assert_eq!(
        b.server.recheck(&list, b.now).expect_err("b").kind,
        EndKind::SerialRevoked
    );
}

#[test]
fn a_renewed_certificate_claiming_another_session_serial_is_refused() {
    // The client cannot choose its session serial: the proxy compares a
    // proof's certificate with its own copy, so a certificate of another
    // session (signed by the same Sub-CA, for the same principal and
    // session key) or one re-signed with another session serial by anyone
    // else is refused, and the session ends.
    let mut p = pair();
    let list = ListAuthority::default();
    let serials = renew_n(&mut p, &list, 1);
    list.serials.borrow_mut().insert(serials[0]);
    let ch = p.next_challenge();
    let Control::Proof { seq, sig, cert } = p.answer(&ch) else {
        panic!("no proof")
    };
    let genuine = crate::cert::ClientCert::decode(&cert).expect("cert");
    let fresh_session = crate::cert::ClientCert::issue(
        &p.subca,
        "alice",
        None,
        genuine.session_key,
        genuine.not_before,
        genuine.not_after - genuine.not_before,
        &mut TestRng,
    )
    .expect("issue");
    let e = p
        .server
        .handle(
            Control::Proof {
                seq,
                cert: fresh_session.encode(),
                sig,
            },
            &p.subca,
            &list,
            p.now,
            p.mono,
            &mut TestRng,
        )
        .expect_err("another session's certificate");
    assert_eq!(e.kind, EndKind::ProofWrongCert);
    // The client side refuses a renewal into another session too.
    let mut q = pair();
    q.advance(TIMING.cert_ttl_secs * 2 / 3);
    let _ = q.renew();
    let other = crate::cert::ClientCert::issue(
        &q.subca,
        "alice",
        Some(Serial([0xee; 16])),
        q.client.pending_key().expect("renewing"),
        q.now,
        300,
        &mut TestRng,
    )
    .expect("issue");
    let e = q
        .client
        .handle(
            &Control::Cert {
                cert: other.encode(),
                user_sig_due: None,
            },
            q.mono,
        )
        .expect_err("switch");
    assert!(e.contains("renewed session"), "{e}");
}

impl Pair {
    fn deliver_to(&mut self, msg: Control, authority: &dyn Authority) -> Result<Handled, Ended> {
        self.server.handle(
            msg,
            &self.subca,
            authority,
            self.now,
            self.mono,
            &mut TestRng,
        )
    }
}

#[test]
fn an_upgraded_sidecar_keeps_renewing_with_a_proxy_that_issues_format_1() {
    // Sidecars are upgraded before proxies: a proxy that predates session
    // serials issues format 1 certificates, each its own "session", and
    // its renewals must still install.
    let p = pair();
    let Control::Cert { cert, .. } = &p.first_cert else {
        panic!()
    };
    let first = crate::cert::ClientCert::decode(cert)
        .expect("first")
        .as_format_1(&p.subca);
    let mut client = ClientIdentity::new(
        [0; 32],
        "alice",
        SigningKey::from_seed(&p.session_seed),
        p.subca.public(),
    );
    client
        .handle(
            &Control::Cert {
                cert: first.encode(),
                user_sig_due: None,
            },
            0,
        )
        .expect("first format 1 certificate");
    let mono = TIMING.cert_ttl_secs * 2 / 3 * 1000;
    client.renewal_data(&mut TestRng).expect("data");
    let _ = client.renew(Vec::new()).expect("renew");
    let renewed = crate::cert::ClientCert::issue(
        &p.subca,
        "alice",
        None,
        client.pending_key().expect("renewing"),
        T0 + 200,
        300,
        &mut TestRng,
    )
    .expect("issue")
    .as_format_1(&p.subca);
    let ev = client
        .handle(
            &Control::Cert {
                cert: renewed.encode(),
                user_sig_due: None,
            },
            mono,
        )
        .expect("a format 1 renewal installs");
    assert!(matches!(
        ev,
        ClientEvent::CertInstalled { renewed: true, .. }
    ));
    // The way around: a proxy that knows session serials cannot shed one
    // by renewing in format 1.
    let mut q = pair();
    q.advance(TIMING.cert_ttl_secs * 2 / 3);
    let _ = q.renew();
    let v1 = crate::cert::ClientCert::issue(
        &q.subca,
        "alice",
        None,
        q.client.pending_key().expect("renewing"),
        q.now,
        300,
        &mut TestRng,
    )
    .expect("issue")
    .as_format_1(&q.subca);
    let e = q
        .client
        .handle(
            &Control::Cert {
                cert: v1.encode(),
                user_sig_due: None,
            },
            q.mono,
        )
        .expect_err("a downgrade mid-session");
    assert!(e.contains("another format"), "{e}");
}

/// A certificate for the software security key with `verify-required`,
/// and an authority (presence only, a PIN never asked by policy, the
/// re-verification interval `reverify`) trusting its CA.
fn verify_required_cert(reverify: Option<u64>) -> (Vec<u8>, SkAuthority) {
    use ssh_key::certificate::{Builder, CertType};
    let ca = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[0xcb; 32]));
    let sk = crate::userkey::tests::SoftSk::new([3; 32]);
    let mut b =
        Builder::new([5u8; 16], sk.public().key_data().clone(), 0, T0 + 86_400).expect("builder");
    b.serial(4).expect("serial");
    b.key_id("alice@fido").expect("key id");
    b.cert_type(CertType::User).expect("type");
    b.valid_principal("alice").expect("principal");
    b.critical_option("verify-required", "").expect("option");
    let cert = b.sign(&ca).expect("sign").to_bytes().expect("bytes");
    let mut a = sk_authority(true, false, reverify);
    a.cas = Some(
        crate::trust::usercert::UserCas::parse(&ca.public_key().to_openssh().expect("openssh"))
            .expect("cas"),
    );
    (cert, a)
}

#[test]
fn a_verify_required_certificate_needs_a_pin_at_login_and_at_every_renewal_the_key_signs() {
    let (cert, a) = verify_required_cert(Some(600));
    // At login: a touch alone is refused, whatever the principal's policy.
    let e = sk_login_with(&a, 0x01, Some(cert.clone()))
        .err()
        .expect("no PIN");
    assert_eq!(e.kind, EndKind::UserCertRefused);
    assert!(e.reason.contains("verify-required"), "{}", e.reason);
    let (mut s, _) = sk_login_with(&a, 0x05, Some(cert.clone())).expect("touch and PIN");
    assert!(s.server.user_cert().is_some_and(|c| c.verify_required()));
    // Within the re-verification interval, renewals need no signature.
    assert_eq!(
        s.renew(&a, 200, None).expect("no signature due"),
        Some(false)
    );
    // A renewal the key signs with a touch but no PIN is refused, even
    // where the policy asks no PIN: the certificate does.
    let e = s.renew(&a, 400, Some(0x01)).expect_err("no PIN at renewal");
    assert_eq!(e.kind, EndKind::RenewBadSignature);
    assert!(
        e.reason
            .contains("verify-required and this signature carries no user verification"),
        "{}",
        e.reason
    );
    // With the PIN, the same renewal goes through.
    let (mut s, _) = sk_login_with(&a, 0x05, Some(cert)).expect("login");
    assert_eq!(
        s.renew(&a, 400, Some(0x05)).expect("renewal with PIN"),
        Some(false)
    );
    // Without the certificate, the same key and policy renew on a touch.
    let (mut s, _) = sk_login(&a, 0x01).expect("plain key");
    assert!(s.renew(&a, 400, Some(0x01)).is_ok());
}
