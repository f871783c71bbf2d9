//! Access lists: arbitrary bytes, and arbitrary bodies correctly signed by
//! the root (so the parser after the signature is reached); and the input
//! as an access list file (a list and the delegation beside it), and as a
//! delegation beside a list. Invariants: nothing unsigned is accepted; an
//! accepted list re-signs to the same bytes; no fuzzed file or delegation
//! makes a chain root -> delegation -> list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::access::{self, AccessList};
use ztssh_proto::delegation;
use ztssh_proto::labels::CTX_ACCESS;

fuzz_target!(|data: &[u8]| {
    let root = &ztssh_proto_fuzz::world().root;
    let now = ztssh_proto_fuzz::NOW;
    assert!(
        access::verify_pem(data, &root.public().into(), None, now).is_err(),
        "a fuzzed access list file verified"
    );
    assert!(AccessList::decode_verified(data, &root.public().into()).is_err() || data.len() >= 64);
    // Sign the fuzzed body as the root would.
    let mut signed = data.to_vec();
    signed.extend_from_slice(&root.sign(CTX_ACCESS, data));
    if let Ok(list) = AccessList::decode_verified(&signed, &root.public().into()) {
        assert_eq!(list.issuer, root.public());
        assert_eq!(
            list.sign(root).expect("re-sign"),
            signed,
            "access list decoding is not canonical"
        );
        // A genuine list beside a fuzzed delegation is never a chain.
        assert!(
            delegation::verify_chain::<AccessList>(
                &root.public().into(),
                &signed,
                Some(data),
                None,
                now
            )
            .is_err(),
            "a fuzzed delegation made a chain"
        );
        // The same bytes under another key are refused.
        assert!(
            AccessList::decode_verified(&signed, &ztssh_proto_fuzz::world().subca.public().into())
                .is_err()
        );
    }
});
