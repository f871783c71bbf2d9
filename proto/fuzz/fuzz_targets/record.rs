//! The record parser behind the AEAD: arbitrary plaintexts, sealed with the
//! real keys, then opened. Invariants: raw unauthenticated bytes never open;
//! consumption is whole records and stops after a TERMINATE (or a whole
//! REKEY message, until the connection takes the new keys); an accepted
//! plaintext is exactly the canonical encoding of what it decoded to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::frame::{Control, Event};

fn canonical(kind: u8, body: &[u8], len: usize) -> Vec<u8> {
    let mut p = vec![kind, 0];
    p.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
    p.extend_from_slice(body);
    p.resize(len, 0);
    p
}

fuzz_target!(|data: &[u8]| {
    let (mut c, mut s) = ztssh_proto_fuzz::pair();
    let f = c.transport.sealer.frame_size().get();
    let plain_len = f - 16;
    // Raw bytes are never a record (and a failure consumes nothing).
    let (mut d, mut ev) = (Vec::new(), Vec::new());
    match s.transport.opener.open_all(data, &mut d, &mut ev) {
        Ok(used) => assert!(used == 0 && data.len() < f, "raw bytes opened as a record"),
        Err(_) => assert!(data.len() >= f && d.is_empty() && ev.is_empty()),
    }
    for chunk in data.chunks(plain_len).take(8) {
        let mut plain = chunk.to_vec();
        plain.resize(plain_len, 0);
        let mut wire = Vec::new();
        c.transport
            .sealer
            .seal_plaintext_raw(&plain, &mut wire)
            .expect("seal");
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let Ok(used) = s.transport.opener.open_all(&wire, &mut out, &mut events) else {
            // A bad record is fatal for the connection: stop here.
            return;
        };
        if used == 0 {
            // A TERMINATE (or a whole REKEY message) was opened earlier:
            // nothing after it is, for now.
            return;
        }
        assert_eq!(used, f);
        match (out.is_empty(), events.as_slice()) {
            (false, []) => assert_eq!(plain, canonical(1, &out, plain_len)),
            // Empty DATA is refused; a REKEY record that is not the last
            // of its message is kept until the message is whole.
            (true, []) => assert!(
                plain == canonical(3, &[], plain_len) || plain[0] == 4,
                "only PAD or part of a REKEY message opens to nothing"
            ),
            (true, [Event::Rekey(_)]) => assert_eq!(plain[0], 4),
            (true, [Event::Close]) => assert_eq!(plain, canonical(5, &[], plain_len)),
            (true, [Event::Control(m)]) => {
                // Accepted control messages re-encode to themselves.
                assert_eq!(Control::decode(&m.encode()).as_ref(), Ok(m));
                assert_eq!(plain[0], 2);
            }
            other => panic!("one record gave {other:?}"),
        }
    }
});
