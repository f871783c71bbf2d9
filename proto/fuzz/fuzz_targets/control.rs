//! Control messages. Invariants: decoding is idempotent through encode;
//! TERMINATE reasons are printable ASCII within the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::control::{Control, MAX_REASON};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Control::decode(data) {
        let again = Control::decode(&m.encode()).expect("re-decode");
        assert_eq!(again, m);
        if let Control::Terminate { reason, .. } = &m {
            assert!(reason.len() <= MAX_REASON);
            assert!(reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        }
    }
});
