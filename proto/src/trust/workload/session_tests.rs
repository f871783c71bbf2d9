//! A workload token through the handshake and the identity machine: bound
//! by the throwaway key's signature, verified and recorded at
//! authorization, needed again before every renewal, and the end of the
//! session at its expiry unless a fresher one came.

use super::*;
use crate::control::{Control, MAX_USER_CERT_PART, TokenPart};
use crate::end::{EndKind, Ended};
use crate::frame::FrameSize;
use crate::handshake::{self, ClientAuthenticated};
use crate::identity::{
    Authority, ClientIdentity, Handled, MAX_TOKENS_PER_CERT, ServerIdentity, Timing,
};
use crate::keys::{SigningKey, TestRng};
use crate::labels::{SSHSIG_NAMESPACE_HANDSHAKE, SSHSIG_NAMESPACE_RENEW};
use crate::tests::{client_cfg, pki, user};
use crate::trust::{Checkpoint, Credential, Subject};
use ssh_key::HashAlg;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The issuers of the verifier's tests, a replay record, and every
/// credential let through but a workload's, which its token decides.
struct Proxy {
    issuers: Issuers,
    replay: Mutex<ReplayCache>,
}

impl Authority for Proxy {
    fn check(&self, who: &Subject<'_>, _at: Checkpoint<'_>, now: UnixTime) -> Result<(), Ended> {
        match who.credential {
            Credential::Workload { token, .. } => token.check(&self.issuers, now),
            Credential::UserKey(_) | Credential::UserCert(_) => Ok(()),
        }
    }
    fn may_issue(&self, _now: UnixTime) -> Result<(), Ended> {
        Ok(())
    }
    fn workload_issuers(&self) -> Option<&Issuers> {
        Some(&self.issuers)
    }
    fn check_use(&self, token: &TokenVerified, key: &KeyId, now: UnixTime) -> Result<(), Refused> {
        self.replay
            .lock()
            .expect("replay")
            .check(&token.id(), key, now)
    }
    fn first_use(&self, token: &TokenVerified, key: &KeyId, now: UnixTime) -> Result<(), Refused> {
        self.replay.lock().expect("replay").first_use(
            token.id(),
            *key,
            owner_id(token.iss(), token.rule()),
            token.expires(),
            now,
        )
    }
}

fn proxy() -> Proxy {
    Proxy {
        issuers: issuers(),
        replay: Mutex::new(ReplayCache::new(256)),
    }
}

/// The throwaway key's handshake as principal deploy, presenting `token`.
fn login(token: &[u8]) -> (handshake::ClientSession, ClientAuthenticated) {
    login_with(token, 7)
}

/// [`login`] with the key of seed `seed`.
fn login_with(token: &[u8], seed: u8) -> (handshake::ClientSession, ClientAuthenticated) {
    let pki = pki();
    let key = user(seed);
    let server = handshake::server_start(
        pki.noise(),
        pki.licence(),
        FrameSize::default(),
        &mut TestRng,
    )
    .expect("server");
    let (client, msg1) =
        handshake::client_start_with_token(client_cfg(&pki, "web1"), &mut TestRng).expect("client");
    let (server, msg2) = server
        .handle_client_hello(&msg1, &mut TestRng)
        .expect("msg2");
    let mut verified = client
        .handle_server_hello(&msg2, NOW, &mut TestRng)
        .expect("verified");
    assert!(verified.wants_token());
    verified
        .present_token(Zeroizing::new(token.to_vec()))
        .expect("token");
    let data = verified.user_signed_data();
    assert!(data.ends_with(token), "the key signs the token");
    let sig = key
        .sign(SSHSIG_NAMESPACE_HANDSHAKE, HashAlg::Sha512, &data)
        .expect("sign");
    let (session, msg3) = verified
        .into_client_auth("deploy", key.public_key(), &sig)
        .expect("msg3");
    assert_eq!(msg3.len(), 8192, "message 3 with a token is 8 KiB");
    assert_eq!(server.message3_len(), 8192);
    let authed = server
        .handle_client_auth(&msg3)
        .expect("outcome")
        .authenticated()
        .expect("authenticated");
    (session, authed)
}

fn timing() -> Timing {
    Timing {
        interval_secs: 3_600,
        deadline_secs: 10,
        cert_ttl_secs: 300,
    }
}

/// Starts an authorized session (its token's first use recorded).
fn start(authorized: crate::identity::Authorized, proxy: &Proxy) {
    let subca = SigningKey::generate(&mut TestRng);
    ServerIdentity::start(authorized, &subca, proxy, timing(), NOW, 0, &mut TestRng)
        .expect("started");
}

/// A session of the workload, 300 s certificates, started at [`NOW`].
struct Live {
    server: ServerIdentity,
    client: ClientIdentity,
    subca: SigningKey,
    proxy: Proxy,
    now: UnixTime,
    mono: u64,
}

fn live(token: &[u8]) -> Live {
    let proxy = proxy();
    let (session, authed) = login(token);
    let authorized = authed.authorize(&proxy, NOW).expect("authorized");
    assert!(matches!(
        authorized.subject().credential,
        Credential::Workload { .. }
    ));
    let subca = SigningKey::generate(&mut TestRng);
    let timing = Timing {
        interval_secs: 3_600,
        deadline_secs: 10,
        cert_ttl_secs: 300,
    };
    let started = ServerIdentity::start(authorized, &subca, &proxy, timing, NOW, 0, &mut TestRng)
        .expect("started");
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "deploy",
        session.session_key,
        subca.public(),
    );
    client.handle(&started.cert, 0).expect("install");
    Live {
        server: started.identity,
        client,
        subca,
        proxy,
        now: NOW,
        mono: 0,
    }
}

impl Live {
    fn advance(&mut self, secs: u64) {
        self.now += secs;
        self.mono += secs * 1_000;
    }

    fn handle(&mut self, msg: Control) -> Result<Handled, Ended> {
        self.server.handle(
            msg,
            &self.subca,
            &self.proxy,
            self.now,
            self.mono,
            &mut TestRng,
        )
    }

    /// `token` in WORKLOAD_TOKEN parts; what the last part came to.
    fn send(&mut self, token: &[u8]) -> Result<Handled, Ended> {
        let parts = token.len().div_ceil(MAX_USER_CERT_PART) as u8;
        let mut last = Ok(Handled::TokenPart);
        for (part, bytes) in token.chunks(MAX_USER_CERT_PART).enumerate() {
            last = self.handle(Control::WorkloadToken {
                part: part as u8,
                parts,
                bytes: TokenPart(Zeroizing::new(bytes.to_vec())),
            });
        }
        last
    }

    fn renew(&mut self) -> Result<Handled, Ended> {
        let data = self.client.renewal_data(&mut TestRng).expect("data");
        let sig = user(7)
            .sign(SSHSIG_NAMESPACE_RENEW, HashAlg::Sha512, &data)
            .expect("sign");
        use ssh_key::encoding::Encode;
        let renew = self
            .client
            .renew(sig.encode_vec().expect("enc"))
            .expect("renew");
        let out = self.handle(renew);
        if let Ok(Handled::Renewed(cert)) = &out {
            self.client.handle(cert, self.mono).expect("install");
        }
        out
    }
}

/// GitHub's claims, issued `iat` with `life` seconds to live and `jti`.
fn github_at(iat: UnixTime, life: u64, jti: &str) -> Vec<u8> {
    let c = with(github_claims(), "iat", json!(iat));
    let c = with(c, "nbf", json!(iat));
    let c = with(c, "exp", json!(iat + life));
    github(&with(c, "jti", json!(jti)))
}

#[test]
fn a_token_logs_in_once_and_its_replay_is_refused() {
    let token = github_at(NOW - 10, 240, "one");
    let proxy = proxy();
    let (_, authed) = login(&token);
    let authorized = authed.authorize(&proxy, NOW).expect("authorized");
    let t = authorized.workload_token().expect("token");
    assert_eq!((t.issuer(), t.principal()), ("github", "deploy"));
    // The same token on a second connection with the same key (a pod's
    // second ssh): in. With another key (the token read from a log): a
    // replay.
    // Authorized, not yet started: nothing is recorded (a session refused
    // before it starts, by the caller's session cap say, costs no record).
    let (_, thief) = login_with(&token, 8);
    let early_thief = thief.authorize(&proxy, NOW + 1).expect("verified");
    start(authorized, &proxy);
    let (_, again) = login(&token);
    start(again.authorize(&proxy, NOW + 1).expect("same key"), &proxy);
    // Another key: refused at authorization (nothing taken yet) and, if a
    // thief authorized before the first use, when its session would start.
    let (_, thief) = login_with(&token, 8);
    let e = thief.authorize(&proxy, NOW + 1).expect_err("replayed");
    assert_eq!(e.ended.kind, EndKind::WorkloadTokenRefused);
    assert!(e.ended.reason.contains("already used"), "{:?}", e.ended);
    let e = ServerIdentity::start(
        early_thief,
        &SigningKey::generate(&mut TestRng),
        &proxy,
        timing(),
        NOW + 1,
        0,
        &mut TestRng,
    )
    .expect_err("replayed");
    assert_eq!(e.ended.kind, EndKind::WorkloadTokenRefused);
    assert!(e.ended.reason.contains("already used"), "{:?}", e.ended);
    // A proxy that trusts no issuer says so.
    struct NoIssuers;
    impl Authority for NoIssuers {
        fn check(&self, _: &Subject<'_>, _: Checkpoint<'_>, _: UnixTime) -> Result<(), Ended> {
            Ok(())
        }
        fn may_issue(&self, _: UnixTime) -> Result<(), Ended> {
            Ok(())
        }
    }
    let (_, other) = login(&github_at(NOW - 10, 240, "two"));
    let e = other.authorize(&NoIssuers, NOW).expect_err("no issuers");
    assert!(
        e.ended.reason.contains("trusts no workload issuer"),
        "{:?}",
        e.ended
    );
}

#[test]
fn every_renewal_needs_a_token_judged_since_the_last_certificate() {
    let mut s = live(&github_at(NOW - 10, 900, "first"));
    // The same token again, then a renewal: fine.
    s.advance(210);
    assert!(matches!(
        s.send(&github_at(NOW - 10, 900, "first")),
        Ok(Handled::TokenAccepted { .. })
    ));
    assert!(matches!(s.renew(), Ok(Handled::Renewed(_))));
    // The next renewal without a token ends the session, saying why.
    s.advance(210);
    let e = s.renew().expect_err("no token");
    assert_eq!(e.kind, EndKind::WorkloadTokenMissing);
    assert!(e.reason.contains("carried no workload token"), "{e}");
}

#[test]
fn a_fresher_token_extends_the_session_and_its_expiry_ends_it() {
    let mut s = live(&github_at(NOW - 10, 300, "a"));
    assert!(s.server.next_wakeup() <= 290_000 + 60_000);
    s.advance(200);
    let fresh = github_at(NOW + 190, 300, "b");
    match s.send(&fresh).expect("handled") {
        Handled::TokenAccepted { expires } => assert!(expires >= NOW + 490),
        other => panic!("not accepted: {other:?}"),
    }
    assert!(matches!(s.renew(), Ok(Handled::Renewed(_))));
    // Past the first token's end, alive; at the second's, over.
    s.advance(150);
    assert!(s.server.poll(s.now, s.mono, [0; 32]).is_ok());
    s.advance(300);
    let e = s.server.poll(s.now, s.mono, [0; 32]).expect_err("expired");
    assert_eq!(e.kind, EndKind::WorkloadTokenExpired);
    assert!(e.reason.contains("no newer token came"), "{e}");
}

#[test]
fn another_workloads_or_an_older_token_is_refused_and_the_renewal_says_why() {
    let mut s = live(&github_at(NOW - 10, 900, "mine"));
    s.advance(210);
    // Another repository: no rule for deploy matches.
    let theirs = with(github_claims(), "repository", json!("evil/repo"));
    let theirs = with(theirs, "jti", json!("theirs"));
    match s.send(&github(&theirs)).expect("handled") {
        Handled::TokenRefused { reason } => assert!(reason.contains("repository"), "{reason}"),
        other => panic!("accepted: {other:?}"),
    }
    let e = s.renew().expect_err("refused token");
    assert_eq!(e.kind, EndKind::WorkloadTokenMissing);
    assert!(e.reason.contains("was refused"), "{e}");

    // A token issued before the one in force.
    let mut s = live(&github_at(NOW - 10, 900, "new"));
    s.advance(210);
    match s.send(&github_at(NOW - 100, 900, "old")).expect("handled") {
        Handled::TokenRefused { reason } => assert!(reason.contains("before"), "{reason}"),
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn a_token_in_another_session_or_too_many_end_it() {
    // A session that began with a key alone takes no token.
    let pki = pki();
    let key = user(3);
    let (_, authed) = crate::tests::run(&pki, client_cfg(&pki, "web1"), &key, &key).expect("run");
    let proxy = proxy();
    let authorized = authed.authorize(&proxy, NOW).expect("authorized");
    let subca = SigningKey::generate(&mut TestRng);
    let timing = Timing {
        interval_secs: 30,
        deadline_secs: 10,
        cert_ttl_secs: 300,
    };
    let mut id = ServerIdentity::start(authorized, &subca, &proxy, timing, NOW, 0, &mut TestRng)
        .expect("started")
        .identity;
    let e = id
        .handle(
            Control::WorkloadToken {
                part: 0,
                parts: 1,
                bytes: TokenPart(Zeroizing::new(b"a.b.c".to_vec())),
            },
            &subca,
            &proxy,
            NOW,
            0,
            &mut TestRng,
        )
        .expect_err("not a workload session");
    assert_eq!(e.kind, EndKind::UnexpectedControl);

    // The token in force sent again costs a digest and is not counted (a
    // sidecar retrying a renewal); more new tokens for one certificate
    // than the proxy checks end the session.
    let token = github_at(NOW - 10, 900, "t");
    let mut s = live(&token);
    for _ in 0..3 * MAX_TOKENS_PER_CERT {
        assert!(matches!(s.send(&token), Ok(Handled::TokenAccepted { .. })));
    }
    for n in 0..MAX_TOKENS_PER_CERT {
        let fresh = github_at(NOW - 10 + u64::from(n), 900, &format!("t{n}"));
        assert!(matches!(s.send(&fresh), Ok(Handled::TokenAccepted { .. })));
    }
    let e = s
        .send(&github_at(NOW, 900, "one-too-many"))
        .expect_err("too many");
    assert_eq!(e.kind, EndKind::WorkloadTokenRefused);

    // Under a long certificate, short-lived tokens refreshed every 40 s
    // (two thirds of a minute-long token's life) go on for good.
    let mut s = live(&github_at(NOW - 10, 900, "r0"));
    for n in 1..=20u64 {
        s.advance(40);
        let fresh = github_at(NOW + 40 * n - 5, 900, &format!("r{n}"));
        let got = s.send(&fresh);
        assert!(
            matches!(got, Ok(Handled::TokenAccepted { .. })),
            "refresh {n}: {got:?}"
        );
    }
}
