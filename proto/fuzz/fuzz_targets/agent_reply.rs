//! The sidecar's ssh-agent reply parsers. Invariants: an identity list
//! yields at most the declared number of keys; when it yields all of them
//! they re-encode, with their comments, to exactly the reply (every byte is
//! accounted for, none read past the frame); a signature reply re-encodes
//! to exactly the reply; and any accepted reply is refused once one byte
//! is added to it or taken from it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ssh_key::encoding::Encode;
use ztssh_sidecar::agent::{parse_identities, parse_signature};

const IDENTITIES_ANSWER: u8 = 12;
const SIGN_RESPONSE: u8 = 14;

/// Key blobs an agent might hold: Ed25519, ECDSA P-256 and RSA (which
/// this build does not know).
fn blobs() -> &'static [Vec<u8>] {
    static B: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    B.get_or_init(|| {
        [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDJgtdqH/PvV4m5wSYFl25O2FDtnWmBYq0MioYysydII2kmsoFtphEe9ovggM3i4sS2esUwbBf+KQW8nM5mVM0k=",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCqF06yVpm3f/+3Nyds1PwmhhdUa2aq+iH5DCAVMwap/Ml/Sm066mqUfuteTOhRV/5iZ+sWgoukvkFkZMOrtKLFJS8OKaCVhpBY7kaYP8kA5cSQ11WHK5vQrL7gonGY2YGAHO8XQ94jeXUqBlB1arisvOnLkSJ6dtAip3hkZPc+ew==",
        ]
        .iter()
        .map(|k| {
            let key = ssh_key::PublicKey::from_openssh(k).expect("test key");
            key.to_bytes().expect("blob")
        })
        .collect()
    })
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    bytes.encode(out).expect("encode");
}

/// An identity list shaped by the input: each pair of bytes picks a blob
/// (whole, cut, extended, or raw input) and a comment length.
fn identity_list(data: &[u8]) -> Vec<u8> {
    let (&count_byte, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut entries = Vec::new();
    let mut raw = rest.iter().copied().rev();
    for pair in rest.chunks(2).take(8) {
        let pick = pair[0];
        let take = usize::from(pair.get(1).copied().unwrap_or(0) % 16);
        let tail: Vec<u8> = raw.by_ref().take(take).collect();
        let base = blobs()[usize::from(pick) % 3].clone();
        let blob = match pick / 3 % 4 {
            0 | 1 => base,
            2 => base[..base.len().saturating_sub(take + 1)].to_vec(),
            _ => [base, tail.clone()].concat(),
        };
        entries.push((blob, tail));
    }
    let declared = match count_byte % 4 {
        0 | 1 => entries.len() as u32,
        2 => (entries.len() as u32).wrapping_add(1),
        _ => u32::from(count_byte),
    };
    let mut m = vec![IDENTITIES_ANSWER];
    m.extend_from_slice(&declared.to_be_bytes());
    for (blob, comment) in &entries {
        string(&mut m, blob);
        string(&mut m, comment);
    }
    m
}

/// A signature reply shaped by the input: a real algorithm name and the
/// input as the signature bytes, wrapped as a string or not.
fn signature_reply(data: &[u8]) -> Vec<u8> {
    let (&pick, rest) = data.split_first().unwrap_or((&0, &[]));
    let alg = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", "x"][usize::from(pick) % 4];
    let sig = if pick & 4 == 0 && rest.len() >= 64 {
        rest[..64].to_vec()
    } else {
        rest.to_vec()
    };
    let mut blob = Vec::new();
    string(&mut blob, alg.as_bytes());
    string(&mut blob, &sig);
    let mut m = vec![SIGN_RESPONSE];
    string(&mut m, &blob);
    m
}

fn identities(reply: &[u8]) {
    let Ok(keys) = parse_identities(reply) else {
        return;
    };
    let declared = reply.get(1..5).expect("a list has a count");
    let declared = u32::from_be_bytes(declared.try_into().expect("4 bytes"));
    assert!(
        keys.len() as u64 <= u64::from(declared),
        "more keys than declared"
    );
    if keys.len() as u64 == u64::from(declared) {
        let mut again = vec![IDENTITIES_ANSWER];
        again.extend_from_slice(&declared.to_be_bytes());
        for key in &keys {
            string(&mut again, &key.to_bytes().expect("blob"));
            string(&mut again, key.comment().as_bytes());
        }
        assert_eq!(again, reply, "the keys are not exactly the reply");
    }
    assert!(
        parse_identities(&[reply, &[0]].concat()).is_err(),
        "trailing byte accepted"
    );
    assert!(
        parse_identities(&reply[..reply.len() - 1]).is_err(),
        "short reply accepted"
    );
}

fn signature(reply: &[u8]) {
    let Ok(sig) = parse_signature(reply) else {
        return;
    };
    let mut again = vec![SIGN_RESPONSE];
    string(&mut again, &sig.encode_vec().expect("signature"));
    assert_eq!(again, reply, "the signature is not exactly the reply");
    assert!(
        parse_signature(&[reply, &[0]].concat()).is_err(),
        "trailing byte accepted"
    );
    assert!(
        parse_signature(&reply[..reply.len() - 1]).is_err(),
        "short reply accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            identities(rest);
            signature(rest);
        }
        1 | 2 => identities(&identity_list(rest)),
        _ => signature(&signature_reply(rest)),
    }
});
