//! Revocation lists: arbitrary bytes, and arbitrary bodies correctly signed
//! by the root (so the parser after the signature is reached). Invariants:
//! nothing unsigned is accepted; an accepted list re-signs to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::crl::Crl;
use ztssh_proto::labels::CTX_CRL;

fuzz_target!(|data: &[u8]| {
    let root = &ztssh_proto_fuzz::world().root;
    assert!(Crl::decode_verified(data, &root.public()).is_err() || data.len() >= 64);
    // Sign the fuzzed body as the root would.
    let mut signed = data.to_vec();
    signed.extend_from_slice(&root.sign(CTX_CRL, data));
    if let Ok(crl) = Crl::decode_verified(&signed, &root.public()) {
        assert_eq!(crl.issuer, root.public());
        assert_eq!(
            crl.sign(root).expect("re-sign"),
            signed,
            "list decoding is not canonical"
        );
        // The same bytes under another key are refused.
        assert!(Crl::decode_verified(&signed, &ztssh_proto_fuzz::world().subca.public()).is_err());
    }
});
