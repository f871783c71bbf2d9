//! Property tests: every encoder/decoder pair round-trips, and every
//! decoder is canonical (what it accepts, it would have produced).

use crate::keys::TestRng;
use proptest::collection::{hash_set, vec};
use proptest::prelude::*;

use crate::armor;
use crate::cert::{ClientCert, Licence, LicenceBody, LicenceRequest, Serial};
use crate::codec::{Reader, Writer};
use crate::control::{
    Control, MAX_CERT, MAX_REASON, MAX_SSHSIG, MAX_USER_CERT_PART, MAX_USER_CERT_PARTS,
    TerminateCode,
};
use crate::crl::{Crl, Revocations};
use crate::frame::Event;
use crate::keys::{PublicKey, SigningKey};

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_@][A-Za-z0-9._@-]{0,40}"
}

fn host() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{0,60}"
}

fn code() -> impl Strategy<Value = TerminateCode> {
    prop_oneof![
        Just(TerminateCode::NotAuthorized),
        Just(TerminateCode::ProtocolError),
        Just(TerminateCode::UpstreamUnavailable),
        Just(TerminateCode::Shutdown),
        Just(TerminateCode::IdentityRevoked),
        Just(TerminateCode::RevocationListStale),
        Just(TerminateCode::PolicyDenied),
        Just(TerminateCode::Other),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (name(), any::<u32>()).prop_map(|(server_id, caps)| Control::Accept { server_id, caps }),
        (
            0..MAX_USER_CERT_PARTS,
            vec(any::<u8>(), 1..=MAX_USER_CERT_PART)
        )
            .prop_flat_map(|(part, bytes)| {
                (part + 1..=MAX_USER_CERT_PARTS).prop_map(move |parts| Control::UserCert {
                    part,
                    parts,
                    bytes: bytes.clone(),
                })
            }),
        (
            code(),
            proptest::string::string_regex(&format!("[ -~]{{0,{MAX_REASON}}}")).expect("regex")
        )
            .prop_map(|(code, reason)| Control::Terminate { code, reason }),
        (vec(any::<u8>(), 0..=MAX_CERT), any::<Option<bool>>())
            .prop_map(|(cert, user_sig_due)| Control::Cert { cert, user_sig_due }),
        (any::<u64>(), any::<[u8; 32]>(), any::<u16>()).prop_map(|(seq, nonce, deadline_secs)| {
            Control::Challenge {
                seq,
                nonce,
                deadline_secs,
            }
        }),
        (
            any::<u64>(),
            vec(any::<u8>(), 0..=MAX_CERT),
            any::<[u8; 32]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(seq, cert, a, b)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&a);
                sig[32..].copy_from_slice(&b);
                Control::Proof { seq, cert, sig }
            }),
        any::<u64>().prop_map(|seq| Control::Ack { seq }),
        (
            name(),
            any::<[u8; 32]>(),
            any::<u8>(),
            vec(any::<u8>(), 0..=MAX_SSHSIG)
        )
            .prop_map(|(principal, new_key, s, user_sig)| Control::Renew {
                principal,
                new_key,
                new_sig: [s; 64],
                old_sig: [s.wrapping_add(1); 64],
                user_sig,
            }),
    ]
}

/// One thing a sender can put on the wire.
#[derive(Debug, Clone)]
enum Op {
    Data(Vec<u8>),
    Control(Control),
    Pad,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => vec(any::<u8>(), 1..5000).prop_map(Op::Data),
        2 => control().prop_map(Op::Control),
        1 => Just(Op::Pad),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn control_messages_round_trip(msg in control()) {
        let bytes = msg.encode();
        prop_assert_eq!(Control::decode(&bytes).expect("decode"), msg);
    }

    #[test]
    fn control_decode_is_canonical(bytes in vec(any::<u8>(), 0..600)) {
        if let Ok(msg) = Control::decode(&bytes) {
            // Re-encoding what was accepted decodes to the same message.
            prop_assert_eq!(Control::decode(&msg.encode()).expect("re-decode"), msg);
        }
    }

    #[test]
    fn client_certificates_round_trip(
        principal in name(),
        nb in 0u64..=u64::MAX / 2,
        ttl in 1u64..=3600,
        session in any::<[u8; 32]>(),
    ) {
        let subca = SigningKey::generate(&mut TestRng);
        let cert = ClientCert::issue(&subca, &principal, None, PublicKey(session), nb, ttl, &mut TestRng).expect("issue");
        let bytes = cert.encode();
        let back = ClientCert::decode(&bytes).expect("decode");
        prop_assert_eq!(&back, &cert);
        prop_assert_eq!(back.encode(), bytes);
        prop_assert!(back.verify(&subca.public(), nb).is_ok());
        prop_assert!(back.verify(&SigningKey::generate(&mut TestRng).public(), nb).is_err());
    }

    #[test]
    fn licences_round_trip(
        server_id in name(),
        hostnames in vec(host(), 1..=32),
        nb in 0u64..=u64::MAX / 2,
        ttl in 1u64..=10_000_000,
        noise_key in any::<[u8; 32]>(),
    ) {
        // Only a canonical X25519 encoding is a Noise key (others are refused).
        let mut noise_key = noise_key;
        noise_key[31] &= 0x7f;
        prop_assume!(crate::cert::check_noise_key(&noise_key, "test").is_ok());
        let root = SigningKey::generate(&mut TestRng);
        let body = LicenceBody {
            serial: Serial::random(&mut TestRng),
            server_id,
            hostnames,
            subca_key: SigningKey::generate(&mut TestRng).public(),
            noise_key,
            not_before: nb,
            not_after: nb + ttl,
            issuer: root.public(),
        };
        let licence = body.clone().sign(&root).expect("sign");
        let back = Licence::decode(licence.encoded()).expect("decode");
        prop_assert_eq!(&back.body, &body);
        prop_assert_eq!(back.encoded(), licence.encoded());
        prop_assert!(back.verify(&root.public().into(), nb).is_ok());
    }

    #[test]
    fn licence_requests_round_trip(noise in any::<[u8; 32]>(), created in any::<u64>()) {
        let mut noise = noise;
        noise[31] &= 0x7f;
        prop_assume!(crate::cert::check_noise_key(&noise, "test").is_ok());
        let subca = SigningKey::generate(&mut TestRng);
        let req = LicenceRequest::new(&subca, noise, created);
        let bytes = req.encode();
        let back = LicenceRequest::decode_verified(&bytes).expect("decode");
        prop_assert_eq!(&back, &req);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn revocation_lists_round_trip(
        list_version in any::<u64>(),
        issued in 0u64..=u64::MAX / 2,
        ttl in 0u64..=10_000_000,
        principals in hash_set(name(), 0..20),
        servers in hash_set(name(), 0..20),
        serials in hash_set(any::<[u8; 16]>(), 0..50),
        user_keys in hash_set(any::<[u8; 32]>(), 0..20),
        noise_keys in hash_set(any::<[u8; 32]>(), 0..4),
        subca_keys in hash_set(any::<[u8; 32]>(), 0..4),
    ) {
        let root = SigningKey::generate(&mut TestRng);
        let crl = Crl {
            list_version,
            issued,
            next_update: issued + ttl,
            issuer: root.public(),
            revoked: Revocations {
                principals,
                servers,
                serials: serials.into_iter().map(Serial).collect(),
                user_keys,
                noise_keys,
                subca_keys,
                delegated_keys: Default::default(),
            },
            delegation: None,
        };
        let bytes = crl.sign(&root).expect("sign");
        let back = Crl::decode_verified(&bytes, &root.public().into()).expect("decode");
        prop_assert_eq!(&back, &crl);
        // Canonical: the same list always encodes to the same bytes.
        prop_assert_eq!(back.sign(&root).expect("re-sign"), bytes);
        prop_assert!(Crl::decode_verified(&crl.sign(&root).expect("sign"), &(SigningKey::generate(&mut TestRng).public()).into()).is_err());
    }

    #[test]
    // Never empty: no ztssh file has an empty body, and the PEM decoder
    // refuses one (`empty_armour_is_a_clear_error`).
    fn armour_round_trips(bytes in vec(any::<u8>(), 1..2000), label in "[A-Z]{1,8}( [A-Z]{1,8}){0,3}") {
        let text = armor::encode(&label, &bytes).expect("armour");
        prop_assert_eq!(armor::decode(text.as_bytes()).expect("decode"), (label, bytes));
    }

    #[test]
    fn codec_fields_round_trip(
        a in any::<u8>(), b in any::<u16>(), c in any::<u32>(), d in any::<u64>(),
        blob in vec(any::<u8>(), 0..3000), s in name(),
    ) {
        let mut w = Writer::new();
        w.u8(a).u16(b).u32(c).u64(d).var16(&blob).str8(&s);
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes, "test");
        prop_assert_eq!(r.u8().expect("u8"), a);
        prop_assert_eq!(r.u16().expect("u16"), b);
        prop_assert_eq!(r.u32().expect("u32"), c);
        prop_assert_eq!(r.u64().expect("u64"), d);
        prop_assert_eq!(r.var16(3000).expect("var16"), &blob[..]);
        prop_assert_eq!(r.str8(64).expect("str8"), s.as_str());
        prop_assert!(r.finish().is_ok());
        // Any cut is an error, never a short read.
        for cut in [1usize, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            let mut r = Reader::new(&bytes[..bytes.len() - cut.min(bytes.len())], "test");
            let whole = (|| {
                r.u8()?; r.u16()?; r.u32()?; r.u64()?; r.var16(3000)?; r.str8(64)?;
                r.finish()
            })();
            prop_assert!(whole.is_err());
        }
    }
}

proptest! {
    // Each case runs a real hybrid handshake: fewer cases.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn records_round_trip_whatever_the_mix_and_the_read_sizes(
        ops in vec(op(), 1..12),
        cuts in vec(1usize..3000, 1..20),
    ) {
        let pki = crate::tests::pki();
        let alice = crate::tests::user(1);
        let (mut c, mut s) = crate::tests::run(&pki, crate::tests::client_cfg(&pki, "web1"), &alice, &alice)
            .expect("handshake");
        let mut wire = Vec::new();
        let mut want_data = Vec::new();
        let mut want_events = Vec::new();
        let mut closed = false;
        for op in &ops {
            let sealer = &mut c.transport.sealer;
            match op {
                // An honest sender sends no DATA after its CLOSE.
                Op::Data(_) if closed => {}
                Op::Data(d) => {
                    sealer.seal_data(d, &mut wire).expect("seal");
                    want_data.extend_from_slice(d);
                }
                Op::Control(m) => {
                    sealer.seal_control(m, &mut wire).expect("seal");
                    want_events.push(Event::Control(m.clone()));
                    // TERMINATE is the last thing a sender sends.
                    if matches!(m, Control::Terminate { .. }) {
                        break;
                    }
                }
                Op::Pad => sealer.seal_pad(&mut wire).expect("pad"),
                Op::Close => {
                    sealer.seal_close(&mut wire).expect("close");
                    want_events.push(Event::Close);
                    closed = true;
                }
            }
        }
        prop_assert_eq!(wire.len() % 1024, 0);
        // Deliver in arbitrary pieces, keeping the unconsumed tail.
        let (mut data, mut events, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        let mut i = 0;
        while at < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - at);
            i += 1;
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            let used = s.transport.opener.open_all(&buf, &mut data, &mut events).expect("open");
            prop_assert_eq!(used % 1024, 0);
            buf.drain(..used);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(data, want_data);
        prop_assert_eq!(events, want_events);
    }
}
