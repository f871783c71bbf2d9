//! Revocation lists: arbitrary bytes, and arbitrary bodies correctly signed
//! by the root (so the parser after the signature is reached). Invariants:
//! nothing unsigned is accepted; an accepted list re-signs to the same bytes;
//! a hybrid root's list (both halves, over the same fuzzed body) verifies
//! only under the hybrid root, and not once either half is damaged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::crl::Crl;
use ztssh_proto::labels::CTX_CRL;
use ztssh_proto::rootkey::RootSigner;

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let root = &w.root;
    assert!(Crl::decode_verified(data, &root.public().into()).is_err() || data.len() >= 64);
    assert!(Crl::decode_verified(data, &w.hybrid_key()).is_err());
    hybrid(data);
    // Sign the fuzzed body as the root would.
    let mut signed = data.to_vec();
    signed.extend_from_slice(&root.sign(CTX_CRL, data));
    if let Ok(crl) = Crl::decode_verified(&signed, &root.public().into()) {
        assert_eq!(crl.issuer, root.public());
        assert_eq!(
            crl.sign(root).expect("re-sign"),
            signed,
            "list decoding is not canonical"
        );
        // The same bytes under another key are refused.
        assert!(
            Crl::decode_verified(&signed, &ztssh_proto_fuzz::world().subca.public().into())
                .is_err()
        );
        // And under the hybrid root whose Ed25519 half signed them.
        assert!(Crl::decode_verified(&signed, &w.hybrid_key()).is_err());
    }
});

/// The fuzzed body signed by the hybrid root.
fn hybrid(data: &[u8]) {
    let w = ztssh_proto_fuzz::world();
    let Ok(sig) = w.hybrid().try_sign_root(CTX_CRL, data) else {
        panic!("the hybrid signer failed");
    };
    let mut signed = data.to_vec();
    sig.encode_into(&mut signed);
    let Ok(crl) = Crl::decode_verified(&signed, &w.hybrid_key()) else {
        return;
    };
    assert_eq!(crl.issuer, w.root.public());
    assert_eq!(
        crl.sign_with(&w.hybrid()).expect("re-sign"),
        signed,
        "hybrid list decoding is not canonical"
    );
    assert!(Crl::decode_verified(&signed, &w.root_key()).is_err());
    // One bit flipped in either half, or the ML-DSA half cut off.
    let n = signed.len();
    for at in [n - 3309 - 1, n - 1] {
        let mut bad = signed.clone();
        bad[at] ^= 1;
        assert!(Crl::decode_verified(&bad, &w.hybrid_key()).is_err());
    }
    assert!(Crl::decode_verified(&signed[..n - 3309], &w.hybrid_key()).is_err());
}
