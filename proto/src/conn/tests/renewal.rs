//! A hostile proxy against the sidecar's renewal rules (security issue
//! 23, item 8): certificates shorter than the floor, CERTs nobody asked
//! for, and a proxy that keeps asking for signatures. The proxy's side is
//! played by hand over the handshake's transport, so it can send what no
//! honest [`ServerConn`] would; the sidecar is the real [`ClientConn`].

use super::*;
use crate::cert::ClientCert;
use crate::conn::{EXPIRY_GRACE_MS, MAX_RENEWAL_SIGNATURES_PER_HOUR};
use crate::identity::MIN_CERT_TTL;
use crate::keys::PublicKey;

/// What the hostile proxy does with a RENEW.
#[derive(Clone, Copy)]
enum Answer {
    /// A CERT for the new key, valid for this many seconds.
    Ttl(u64),
    /// A CERT for the new key whose `not_before` is this many seconds
    /// ahead of the proxy's clock, valid for `ttl` seconds after it.
    Future { ahead: u64, ttl: u64 },
    /// The CERT, then a second CERT for the same key (another serial).
    Twice(u64),
    /// The CERT, then the same bytes again.
    Replayed(u64),
    /// Nothing: the session is kept open, the renewal never answered.
    Never,
}

struct Hostile {
    client: ClientConn,
    proxy: Transport,
    subca: SigningKey,
    /// The sidecar's monotonic clock, ms.
    t: u64,
    /// The proxy's wall clock (its certificates' `not_before`).
    unix: u64,
    answer: Answer,
    /// Whether the CERTs say a security key must sign (`user_sig_due`).
    user_sig_due: Option<bool>,
    /// When the sidecar asked the user key to sign.
    signed: Vec<u64>,
    /// When a RENEW reached the proxy.
    renews: Vec<u64>,
    events: Vec<(u64, ClientConnEvent)>,
}

/// The session serial every certificate this fake proxy issues carries.
const SESSION: crate::cert::Serial = crate::cert::Serial([0x5e; 16]);
const START: u64 = 5_000_000;

impl Hostile {
    /// A session the proxy accepted, with a first certificate of `ttl`.
    fn new(first_ttl: u64, answer: Answer) -> Self {
        Self::with(first_ttl, answer, false)
    }

    /// The same; `short`: the sidecar was told to allow short certificates.
    fn with(first_ttl: u64, answer: Answer, short: bool) -> Self {
        let pki = pki();
        let alice = user(1);
        let (session, authed) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let subca = SigningKey::generate(&mut TestRng);
        let key = session.session_key.public();
        let identity = ClientIdentity::new(
            session.handshake_hash,
            "alice",
            session.session_key,
            subca.public(),
        );
        let mut identity = identity;
        if short {
            identity.allow_short_certs();
        }
        let mut h = Self {
            client: ClientConn::new(session.transport, identity, TestRng),
            proxy: authed.transport,
            subca,
            t: START,
            unix: T0,
            answer,
            user_sig_due: None,
            signed: Vec::new(),
            renews: Vec::new(),
            events: Vec::new(),
        };
        h.send(&Control::Accept {
            server_id: "web1".into(),
            caps: 0,
        });
        let first = h.cert_bytes(key, h.unix, first_ttl);
        h.send_cert(first);
        h
    }

    fn now(&self) -> Now {
        Now {
            unix: CLIENT_UNIX,
            mono_ms: self.t,
        }
    }

    fn cert_bytes(&self, key: PublicKey, not_before: u64, ttl: u64) -> Vec<u8> {
        ClientCert::issue(
            &self.subca,
            "alice",
            Some(SESSION),
            key,
            not_before,
            ttl,
            &mut TestRng,
        )
        .expect("issue")
        .encode()
    }

    fn send_cert(&mut self, cert: Vec<u8>) {
        let msg = Control::Cert {
            cert,
            user_sig_due: self.user_sig_due,
        };
        self.send(&msg);
    }

    fn send(&mut self, msg: &Control) {
        let mut wire = Vec::new();
        self.proxy
            .sealer
            .seal_control(msg, &mut wire)
            .expect("seal");
        let now = self.now();
        self.client.handle_peer(&wire, now);
        self.step();
    }

    /// Moves what the sidecar wrote to the proxy, signs what it asks, and
    /// answers its RENEWs as `self.answer` says.
    fn step(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(ev) = self.client.poll_event() {
                self.events.push((self.t, ev));
            }
            if let Some(_data) = self.client.poll_sign() {
                self.signed.push(self.t);
                let now = self.now();
                // What the agent returns does not matter to the sidecar.
                self.client.handle_signature(Ok(vec![1; 64]), now);
                moved = true;
            }
            let out = self.client.poll_transmit().to_vec();
            if !out.is_empty() {
                let now = self.now();
                self.client.transmitted(out.len(), now);
                let (mut data, mut evs) = (Vec::new(), Vec::new());
                self.proxy
                    .opener
                    .open_all(&out, &mut data, &mut evs)
                    .expect("open");
                for ev in evs {
                    if let Event::Control(Control::Renew { new_key, .. }) = ev {
                        self.renews.push(self.t);
                        self.answer_renew(PublicKey(new_key));
                    }
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the sidecar and the proxy never went quiet");
    }

    fn answer_renew(&mut self, key: PublicKey) {
        let unix = self.unix;
        match self.answer {
            Answer::Ttl(ttl) => self.send_cert(self.cert_bytes(key, unix, ttl)),
            Answer::Future { ahead, ttl } => {
                self.send_cert(self.cert_bytes(key, unix + ahead, ttl));
            }
            Answer::Twice(ttl) => {
                self.send_cert(self.cert_bytes(key, unix, ttl));
                self.send_cert(self.cert_bytes(key, unix, ttl));
            }
            Answer::Replayed(ttl) => {
                let cert = self.cert_bytes(key, unix, ttl);
                self.send_cert(cert.clone());
                self.send_cert(cert);
            }
            Answer::Never => {}
        }
    }

    /// Runs the sidecar's timers until it ends or `until_ms` after the
    /// start (bounded in steps).
    fn run_for(&mut self, until_ms: u64) {
        for _ in 0..100_000 {
            if self.client.is_done() {
                break;
            }
            let Some(at) = self.client.poll_timeout() else {
                break;
            };
            if at > START + until_ms {
                break;
            }
            let step = at.saturating_sub(self.t);
            self.t = self.t.max(at);
            self.unix += step / 1000;
            let now = self.now();
            self.client.handle_timeout(now);
            self.step();
        }
        while let Some(ev) = self.client.poll_event() {
            self.events.push((self.t, ev));
        }
    }

    fn end(&self) -> Option<(u64, ClientEnd)> {
        self.events.iter().find_map(|(t, e)| match e {
            ClientConnEvent::Ended(Some(end)) => Some((*t - START, end.clone())),
            _ => None,
        })
    }

    fn protocol_end(&self) -> (u64, String) {
        match self.end() {
            Some((t, ClientEnd::Protocol(why))) => (t, why),
            other => panic!("expected a protocol-error end, got {other:?}"),
        }
    }

    fn installed(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, ClientConnEvent::CertInstalled { .. }))
            .count()
    }
}

const FLOOR_REFUSED: &str = "less than the 60s minimum";

#[test]
fn a_proxy_answering_each_renew_with_a_1s_certificate_gets_one_signature() {
    // The reproduction: thousands of signatures in seconds on the old
    // code. The first certificate is at the floor; its renewal is signed
    // once, the 1 s answer refused, and the session over.
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(1));
    h.run_for(3_600_000);
    assert_eq!(h.signed, vec![START + 40_000]);
    let (at, why) = h.protocol_end();
    assert_eq!(at, 40_000);
    assert!(
        why.contains("valid for 1s") && why.contains(FLOOR_REFUSED),
        "{why}"
    );
    assert!(why.contains("cert_ttl_secs to 60 or more"), "{why}");
}

#[test]
fn a_first_certificate_below_the_floor_ends_the_session_before_any_signature() {
    for ttl in [1, 2, 59] {
        let mut h = Hostile::new(ttl, Answer::Ttl(300));
        h.run_for(3_600_000);
        assert!(h.signed.is_empty(), "{ttl}: {:?}", h.signed);
        let (at, why) = h.protocol_end();
        assert_eq!(at, 0);
        assert!(why.contains(&format!("valid for {ttl}s")), "{why}");
    }
}

#[test]
fn a_certificate_exactly_at_the_floor_is_accepted_and_renewed_every_40s() {
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(MIN_CERT_TTL));
    h.run_for(400_000);
    assert!(h.end().is_none(), "{:?}", h.end());
    let want: Vec<u64> = (1..=10).map(|i| START + i * 40_000).collect();
    assert_eq!(h.signed, want);
    assert_eq!(h.installed(), 11);
}

#[test]
fn a_certificate_starting_in_the_future_is_timed_by_its_lifetime_from_arrival() {
    // Bypass: not_before an hour ahead does not make a 1 s certificate
    // look long (only not_after - not_before counts), and a 60 s one
    // starting later is still renewed 40 s after it arrived.
    let mut h = Hostile::new(
        MIN_CERT_TTL,
        Answer::Future {
            ahead: 3600,
            ttl: 1,
        },
    );
    h.run_for(3_600_000);
    assert_eq!(h.signed.len(), 1);
    assert!(h.protocol_end().1.contains(FLOOR_REFUSED));

    let mut h = Hostile::new(
        MIN_CERT_TTL,
        Answer::Future {
            ahead: 3600,
            ttl: 60,
        },
    );
    h.run_for(200_000);
    assert_eq!(
        h.signed,
        vec![
            START + 40_000,
            START + 80_000,
            START + 120_000,
            START + 160_000,
            START + 200_000
        ]
    );
    assert!(h.end().is_none());
}

#[test]
fn an_unsolicited_certificate_ends_the_session() {
    // A CERT for the current key, long-lived, with no RENEW outstanding:
    // it would restart the renewal timer at the proxy's will.
    let mut h = Hostile::new(300, Answer::Ttl(300));
    h.t += 10_000;
    let key = h.client.identity().cert().expect("cert").session_key;
    let unix = h.unix;
    let cert = h.cert_bytes(key, unix + 10, 300);
    h.send_cert(cert);
    h.run_for(3_600_000);
    assert!(h.signed.is_empty(), "{:?}", h.signed);
    assert_eq!(h.installed(), 1);
    let (at, why) = h.protocol_end();
    assert_eq!(at, 10_000);
    assert!(why.contains("that no renewal asked for"), "{why}");
}

#[test]
fn a_second_certificate_right_after_the_solicited_one_ends_the_session() {
    // Bypass: the answer to a RENEW, then another CERT for the same new
    // key with another serial, then the answer's bytes replayed.
    for answer in [Answer::Twice(300), Answer::Replayed(300)] {
        let mut h = Hostile::new(300, answer);
        h.run_for(3_600_000);
        assert_eq!(h.signed, vec![START + 200_000]);
        assert_eq!(h.installed(), 2);
        let (at, why) = h.protocol_end();
        assert_eq!(at, 200_000);
        assert!(why.contains("that no renewal asked for"), "{why}");
    }
}

#[test]
fn a_proxy_that_never_answers_gets_no_signature_after_expiry_and_the_session_ends_then() {
    // The proxy keeps the session open but never answers a RENEW (nor
    // ends the session when the certificate runs out). This used to let
    // the sidecar retry on its own timers past the expiry, up to the
    // hourly cap (120 signatures); now the session ends at the expiry, in
    // whatever renewal state it is, and nothing is signed from then on.
    for ttl in [MIN_CERT_TTL, 300, 3_600] {
        let mut h = Hostile::new(ttl, Answer::Never);
        h.run_for(3 * 3_600_000);
        let expiry = ttl * 1000;
        let (at, why) = h.protocol_end();
        assert_eq!(
            at,
            expiry + EXPIRY_GRACE_MS,
            "ttl {ttl}: ends at the expiry"
        );
        assert!(
            why.contains("the certificate ran out with no renewal"),
            "{why}"
        );
        assert!(!h.signed.is_empty(), "ttl {ttl}: it did try to renew");
        for t in &h.signed {
            assert!(*t - START < expiry, "ttl {ttl}: signed at {t} after expiry");
        }
        // Renewal starts at two thirds of the life; then one try per
        // RENEW_REPLY_MS + RENEW_RETRY_MS until the expiry.
        let window = (ttl / 3) * 1000;
        let bound = window / (RENEW_REPLY_MS + RENEW_RETRY_MS) + 1;
        assert!(
            h.signed.len() as u64 <= bound,
            "ttl {ttl}: {} > {bound}",
            h.signed.len()
        );
        for w in h.signed.windows(2) {
            assert!(w[1] - w[0] >= RENEW_REPLY_MS + RENEW_RETRY_MS, "{w:?}");
        }
        // No RENEW reaches the proxy from the expiry on.
        assert!(
            h.renews.iter().all(|t| *t - START < expiry),
            "{:?}",
            h.renews
        );
    }
}

#[test]
fn a_signature_that_arrives_after_expiry_is_never_sent() {
    // Around the fix: the user key (a slow touch, an agent dialog) answers
    // only once the certificate has run out. The RENEW it would make is
    // not sent; the session ends.
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(MIN_CERT_TTL));
    h.t = START + 40_000;
    let now = h.now();
    h.client.handle_timeout(now);
    assert!(h.client.poll_sign().is_some(), "asked to sign at 40 s");
    h.t = START + MIN_CERT_TTL * 1000;
    let now = h.now();
    h.client.handle_signature(Ok(vec![1; 64]), now);
    h.step();
    assert!(h.renews.is_empty(), "a RENEW went out after expiry");
    h.run_for(3_600_000);
    assert!(h.renews.is_empty(), "a RENEW went out after expiry");
    let (at, why) = h.protocol_end();
    assert_eq!(at, MIN_CERT_TTL * 1000 + EXPIRY_GRACE_MS);
    assert!(
        why.contains("signature for the renewal did not come before it"),
        "{why}"
    );

    // A user key that never answers: the expiry timer alone ends it.
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(MIN_CERT_TTL));
    h.t = START + 40_000;
    let now = h.now();
    h.client.handle_timeout(now);
    assert!(h.client.poll_sign().is_some());
    h.run_for(3_600_000);
    let (at, why) = h.protocol_end();
    assert_eq!(at, MIN_CERT_TTL * 1000 + EXPIRY_GRACE_MS);
    assert!(why.contains("did not come before it"), "{why}");
}

#[test]
fn every_user_key_signature_is_announced_first_and_a_waived_one_asks_nothing() {
    // A security-key session: the proxy says a touch is due every time.
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(MIN_CERT_TTL));
    h.user_sig_due = Some(true);
    h.run_for(130_000);
    let announced: Vec<(u64, usize)> = h
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            ClientConnEvent::SigningRenewal { this_hour } => Some((*t, *this_hour)),
            _ => None,
        })
        .collect();
    assert_eq!(
        announced,
        vec![
            (START + 40_000, 1),
            (START + 80_000, 2),
            (START + 120_000, 3)
        ]
    );
    assert_eq!(
        h.signed,
        vec![START + 40_000, START + 80_000, START + 120_000]
    );

    // Within the re-verification interval nothing is signed by the user
    // key, and nothing announced.
    let mut h = Hostile::new(MIN_CERT_TTL, Answer::Ttl(MIN_CERT_TTL));
    h.user_sig_due = Some(false);
    // The first CERT went out before the flag was set: its renewal signs.
    h.run_for(130_000);
    assert_eq!(h.signed, vec![START + 40_000]);
    assert_eq!(h.renews.len(), 3);
}

#[test]
fn short_certificates_when_allowed_still_stop_at_the_hourly_cap() {
    // The test rigs' override lowers the floor to 2 s; the cap holds: a
    // proxy answering each RENEW with a 2 s certificate gets 120
    // signatures, then the certificate runs out and the session ends.
    let mut h = Hostile::with(2, Answer::Ttl(2), true);
    h.run_for(3 * 3_600_000);
    assert_eq!(h.signed.len(), MAX_RENEWAL_SIGNATURES_PER_HOUR);
    assert_eq!(h.signed[0], START + 1_000);
    let last = h.signed.last().copied().expect("signed") - START;
    let (at, why) = h.protocol_end();
    // The last certificate runs out at last + 2 s; the proxy has the grace
    // to end the session itself, then the sidecar does.
    assert_eq!(
        at,
        last + 2_000 + EXPIRY_GRACE_MS,
        "ends when the last certificate runs out"
    );
    assert!(why.contains("the certificate ran out"), "{why}");

    // Without the override the same proxy gets nothing.
    let mut h = Hostile::new(2, Answer::Ttl(2));
    h.run_for(3_600_000);
    assert!(h.signed.is_empty());
    assert!(
        h.protocol_end()
            .1
            .contains("valid for 2s, less than the 60s minimum")
    );
}
