//! Licences and licence requests. Invariants: canonical decoding; nothing
//! fuzzed verifies under the root, Ed25519 or hybrid (decoded first or
//! verified first); a request only decodes if self-signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::cert::{Licence, LicenceRequest};

fuzz_target!(|data: &[u8]| {
    // Verified before parsed: nothing fuzzed verifies, whatever it holds.
    let w = ztssh_proto_fuzz::world();
    for root in w.roots() {
        assert!(
            Licence::decode_verified(data, &root, ztssh_proto_fuzz::NOW).is_err(),
            "forged licence verified"
        );
    }
    if let Ok(l) = Licence::decode(data) {
        assert_eq!(l.encoded(), data, "licence decoding is not canonical");
        assert!(!l.body.hostnames.is_empty() && l.body.hostnames.len() <= 32);
        for root in w.roots() {
            assert!(
                l.verify(&root, l.body.not_before).is_err(),
                "forged licence verified"
            );
        }
    }
    if let Ok(r) = LicenceRequest::decode_verified(data) {
        assert_eq!(r.encode(), data, "request decoding is not canonical");
    }
});
