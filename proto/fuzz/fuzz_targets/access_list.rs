//! Access lists: arbitrary bytes, and arbitrary bodies correctly signed by
//! the root (so the parser after the signature is reached). Invariants:
//! nothing unsigned is accepted; an accepted list re-signs to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::access::AccessList;
use ztssh_proto::labels::CTX_ACCESS;

fuzz_target!(|data: &[u8]| {
    let root = &ztssh_proto_fuzz::world().root;
    assert!(AccessList::decode_verified(data, &root.public()).is_err() || data.len() >= 64);
    // Sign the fuzzed body as the root would.
    let mut signed = data.to_vec();
    signed.extend_from_slice(&root.sign(CTX_ACCESS, data));
    if let Ok(list) = AccessList::decode_verified(&signed, &root.public()) {
        assert_eq!(list.issuer, root.public());
        assert_eq!(
            list.sign(root).expect("re-sign"),
            signed,
            "access list decoding is not canonical"
        );
        // The same bytes under another key are refused.
        assert!(
            AccessList::decode_verified(&signed, &ztssh_proto_fuzz::world().subca.public())
                .is_err()
        );
    }
});
