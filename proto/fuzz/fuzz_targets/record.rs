//! The record parser behind the AEAD: arbitrary plaintexts, sealed with the
//! real keys, then opened one by one. Invariants: raw unauthenticated bytes
//! never open; consumption is whole records and nothing after a TERMINATE;
//! an accepted plaintext is exactly the canonical encoding of what it
//! decoded to, and a REKEY message is exactly its records' fragments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::frame::{Control, Event};
use ztssh_proto::rekey::RekeyMsg;

fn canonical(kind: u8, body: &[u8], len: usize) -> Vec<u8> {
    let mut p = vec![kind, 0];
    p.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
    p.extend_from_slice(body);
    p.resize(len, 0);
    p
}

/// The message a REKEY record's fragments (`tag || part`, each) spell.
fn rekey_message(fragments: &[Vec<u8>]) -> Option<RekeyMsg> {
    let tag = *fragments.first()?.first()?;
    let mut body = Vec::new();
    for f in fragments {
        let (&t, part) = f.split_first()?;
        if t != tag {
            return None;
        }
        body.extend_from_slice(part);
    }
    match tag {
        1 => Some(RekeyMsg::Init(Box::new(body.try_into().ok()?))),
        2 => Some(RekeyMsg::Reply(Box::new(body.try_into().ok()?))),
        3 if body.is_empty() => Some(RekeyMsg::Finish),
        _ => None,
    }
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
    // The REKEY fragments opened since the last whole REKEY message.
    let mut fragments: Vec<Vec<u8>> = Vec::new();
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
            // A TERMINATE was opened earlier: nothing after it is.
            return;
        }
        assert_eq!(used, f);
        if plain[0] == 4 {
            let len = usize::from(u16::from_be_bytes([plain[2], plain[3]]));
            assert_eq!(plain, canonical(4, &plain[4..4 + len], plain_len));
            fragments.push(plain[4..4 + len].to_vec());
        }
        match (out.is_empty(), events.as_slice()) {
            (false, []) => assert_eq!(plain, canonical(1, &out, plain_len)),
            // Empty DATA is refused; a REKEY record that is not the last
            // of its message is kept until the message is whole.
            (true, []) => {
                assert!(
                    plain == canonical(3, &[], plain_len) || plain[0] == 4,
                    "only PAD or part of a REKEY message opens to nothing"
                );
                // A REKEY record without an event is not the end of a
                // message: its fragments do not spell a whole one yet.
                assert!(plain[0] != 4 || rekey_message(&fragments).is_none());
            }
            (true, [Event::Rekey(m)]) => {
                assert_eq!(plain[0], 4);
                let whole = std::mem::take(&mut fragments);
                assert_eq!(Some(m), rekey_message(&whole).as_ref());
            }
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
