//! Client certificates. Invariants: what decodes re-encodes to the same
//! bytes; nothing fuzzed verifies under the Sub-CA.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::cert::ClientCert;

fuzz_target!(|data: &[u8]| {
    let subca = ztssh_proto_fuzz::world().subca.public();
    assert!(
        ztssh_proto::cert::ClientCert::decode_verified(data, &subca).is_err(),
        "forged certificate verified before it was parsed"
    );
    if let Ok(cert) = ClientCert::decode(data) {
        assert_eq!(cert.encode(), data, "certificate decoding is not canonical");
        assert!(cert.not_before < cert.not_after);
        let subca = ztssh_proto_fuzz::world().subca.public();
        assert!(
            cert.verify(&subca, cert.not_before).is_err(),
            "forged certificate verified"
        );
    }
});
