//! OpenSSH KRLs (`ztssh_proto::krl`): arbitrary bytes never panic the
//! reader; and KRLs the test writer builds from the input, section by
//! section, are read back exactly as a naive model of OpenSSH's rules says:
//! refused when the model says OpenSSH refuses them, and otherwise
//! revoking exactly the keys, serials and key ids the model revokes, under
//! the right CA. Of two such KRLs, one `unrevokes` nothing of the other
//! only if it revokes every key and certificate the other revokes (the
//! same-version rule `ssh-keygen -k -u` relies on), and a KRL never
//! un-revokes anything of itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssh_key::encoding::Encode;
use ssh_key::public::{Ed25519PublicKey, KeyData};
use ztssh_proto::krl::Krl;
use ztssh_proto::krl::write::{self, KrlWriter, Sub};

fn key(seed: u8) -> KeyData {
    KeyData::Ed25519(Ed25519PublicKey([seed; 32]))
}

/// Keys 0..6 are users', 6 and 7 the two CAs'; 8 is a certificate's key
/// that nothing revokes.
const KEYS: u8 = 8;
const CERT_KEY: u8 = 200;
const IDS: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b""];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn serial(&mut self) -> u64 {
        let b = self.byte();
        match self.byte() % 4 {
            0 => u64::from(b),
            1 => u64::MAX - u64::from(b),
            2 => 1000 + u64::from(b),
            _ => (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte())),
        }
    }
}

#[derive(Default)]
struct Scope {
    serials: Vec<(u64, u64)>,
    ids: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Model {
    valid: bool,
    /// Index 0: any CA; 1 and 2: keys 6 and 7.
    scopes: [Scope; 3],
    revoked_keys: Vec<u8>,
}

fn ca_blob(which: u8) -> Vec<u8> {
    match which {
        0 => Vec::new(),
        n => key(5 + n).encode_vec().expect("blob"),
    }
}

fn subsection(inp: &mut Input<'_>, m: &mut Model, scope: usize) -> Sub {
    match inp.byte() % 4 {
        0 => {
            let serials: Vec<u64> = (0..inp.byte() % 5).map(|_| inp.serial()).collect();
            for &s in &serials {
                m.valid &= s != 0;
                m.scopes[scope].serials.push((s, s));
            }
            write::serial_list(&serials)
        }
        1 => {
            let (lo, hi) = (inp.serial(), inp.serial());
            m.valid &= lo != 0 && lo <= hi;
            m.scopes[scope].serials.push((lo, hi));
            write::serial_range(lo, hi)
        }
        2 => {
            let offset = inp.serial();
            let bits: Vec<u16> = (0..inp.byte() % 6)
                .map(|_| match inp.byte() {
                    255 => 16_383,
                    b => u16::from(b % 64),
                })
                .collect();
            if let Some(&top) = bits.iter().max() {
                m.valid &= offset.checked_add(u64::from(top)).is_some();
            }
            for &b in &bits {
                let s = offset.wrapping_add(u64::from(b));
                m.valid &= s != 0;
                m.scopes[scope].serials.push((s, s));
            }
            write::serial_bitmap(offset, &bits)
        }
        _ => {
            let ids: Vec<Vec<u8>> = (0..inp.byte() % 3)
                .map(|_| match inp.byte() {
                    255 => b"a\0".to_vec(),
                    b => IDS[usize::from(b) % IDS.len()].to_vec(),
                })
                .collect();
            for id in &ids {
                m.valid &= !id.contains(&0);
                m.scopes[scope].ids.push(id.clone());
            }
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            write::key_ids(&refs)
        }
    }
}

fn keys(inp: &mut Input<'_>, m: &mut Model) -> Vec<KeyData> {
    let picked: Vec<u8> = (0..1 + inp.byte() % 3).map(|_| inp.byte() % KEYS).collect();
    m.revoked_keys.extend(&picked);
    picked.into_iter().map(key).collect()
}

fn build(inp: &mut Input<'_>) -> (Vec<u8>, Model) {
    let mut m = Model {
        valid: true,
        ..Model::default()
    };
    let mut w = KrlWriter::new(inp.serial(), 0, b"fuzz");
    for _ in 0..inp.byte() % 6 {
        match inp.byte() % 8 {
            0 | 1 => {
                let which = inp.byte() % 3;
                let subs: Vec<Sub> = (0..inp.byte() % 4)
                    .map(|_| subsection(inp, &mut m, usize::from(which)))
                    .collect();
                w.certs(&ca_blob(which), &subs);
            }
            2 => {
                let blobs = keys(inp, &mut m)
                    .iter()
                    .map(|k| k.encode_vec().expect("blob"))
                    .collect::<Vec<_>>();
                w.keys(&blobs);
            }
            3 => {
                let hashes = keys(inp, &mut m)
                    .iter()
                    .map(|k| write::sha1_of(&k.encode_vec().expect("blob")))
                    .collect::<Vec<_>>();
                w.sha1(&hashes);
            }
            4 => {
                let hashes = keys(inp, &mut m)
                    .iter()
                    .map(|k| write::sha256_of(&k.encode_vec().expect("blob")))
                    .collect::<Vec<_>>();
                w.sha256(&hashes);
            }
            5 => {
                let critical = inp.byte() % 2 == 1;
                m.valid &= !critical;
                w.section(255, &write::extension(b"x@fuzz", critical, b"v"));
            }
            6 => {
                m.valid = false;
                w.section(4, b"");
            }
            _ => {
                let critical = inp.byte() % 2 == 1;
                m.valid &= !critical;
                let which = inp.byte() % 3;
                w.certs(
                    &ca_blob(which),
                    &[(0x39, write::extension(b"y@fuzz", critical, b""))],
                );
            }
        }
    }
    (w.finish(), m)
}

/// Serials worth asking about: around every bound either model states.
fn candidates(models: &[&Model]) -> Vec<u64> {
    let mut candidates = vec![0, 1, 2, u64::MAX, u64::MAX - 1];
    for m in models {
        for scope in &m.scopes {
            for &(lo, hi) in &scope.serials {
                candidates.extend([
                    lo.wrapping_sub(1),
                    lo,
                    lo.wrapping_add(1),
                    hi.wrapping_sub(1),
                    hi,
                    hi.wrapping_add(1),
                ]);
            }
        }
    }
    candidates
}

/// `new.unrevokes(old)` is `None` only if `new` revokes all `old` does.
fn superset_sound(old: &Krl, new: &Krl, serials: &[u64]) {
    assert!(
        old.unrevokes(old).is_none() && new.unrevokes(new).is_none(),
        "a KRL un-revokes itself"
    );
    if new.unrevokes(old).is_some() {
        return;
    }
    for k in 0..KEYS {
        assert!(
            old.revokes_key(&key(k)).is_none() || new.revokes_key(&key(k)).is_some(),
            "key {k} un-revoked"
        );
    }
    let cert_key = key(CERT_KEY);
    for which in [1u8, 2, 9] {
        let ca = key(5 + which);
        for &serial in serials {
            for id in IDS {
                let id = std::str::from_utf8(id).expect("ascii");
                assert!(
                    old.revokes_cert(&ca, serial, id, &cert_key).is_none()
                        || new.revokes_cert(&ca, serial, id, &cert_key).is_some(),
                    "CA {which} serial {serial} id {id:?} un-revoked"
                );
            }
        }
    }
}

fn check(krl: &Krl, m: &Model) {
    for k in 0..KEYS {
        assert_eq!(
            krl.revokes_key(&key(k)).is_some(),
            m.revoked_keys.contains(&k),
            "key {k}"
        );
    }
    let candidates = candidates(&[m]);
    let cert_key = key(CERT_KEY);
    for which in [1u8, 2] {
        let ca = key(5 + which);
        let ca_revoked = m.revoked_keys.contains(&(5 + which));
        for &serial in &candidates {
            for id in IDS {
                let in_scope = |s: &Scope| {
                    s.ids.iter().any(|i| i == id)
                        || (serial != 0
                            && s.serials
                                .iter()
                                .any(|&(lo, hi)| lo <= serial && serial <= hi))
                };
                let want =
                    ca_revoked || in_scope(&m.scopes[0]) || in_scope(&m.scopes[usize::from(which)]);
                let id = std::str::from_utf8(id).expect("ascii");
                let got = krl.revokes_cert(&ca, serial, id, &cert_key).is_some();
                assert_eq!(got, want, "CA {which} serial {serial} id {id:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes: an error or a KRL, never a panic.
    if let Ok(krl) = Krl::decode(data) {
        let _ = krl.revokes_key(&key(1));
        let _ = krl.revokes_cert(&key(6), 5, "a", &key(1));
    }
    // A KRL the writer builds from the input, against the model.
    let mut input = Input(data);
    let (bytes, model) = build(&mut input);
    let first = match Krl::decode(&bytes) {
        Ok(krl) => {
            assert!(model.valid, "a KRL OpenSSH refuses was accepted");
            check(&krl, &model);
            krl
        }
        Err(e) => {
            assert!(!model.valid, "a valid KRL was refused: {e}");
            return;
        }
    };
    // A second KRL from the rest of the input, against the first.
    let (bytes, second_model) = build(&mut input);
    if let Ok(second) = Krl::decode(&bytes) {
        let serials = candidates(&[&model, &second_model]);
        superset_sound(&first, &second, &serials);
        superset_sound(&second, &first, &serials);
    }
});
