//! Message 1 at the proxy: arbitrary payloads behind valid Noise, and raw
//! arbitrary bytes. Invariant: only a payload with this version, this frame
//! size and a well-formed ML-KEM key is answered, and the answer has the
//! fixed message-2 length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{HELLO_LEN, message_len, testkit};

/// Noise's share of message 1: the ephemeral key and the payload's tag.
const OVERHEAD_1: usize = 32 + 16;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, msg2)) =
        ztssh_proto_fuzz::server().handle_client_hello(data, &mut ztssh_proto_fuzz::rng(3))
    {
        panic!(
            "raw bytes accepted as message 1 ({} bytes -> {})",
            data.len(),
            msg2.len()
        );
    }
    let msg1 = testkit::client_hello_raw(data, &mut ztssh_proto_fuzz::rng(2)).expect("msg1");
    assert_eq!(msg1.len(), HELLO_LEN);
    if let Ok((_, msg2)) =
        ztssh_proto_fuzz::server().handle_client_hello(&msg1, &mut ztssh_proto_fuzz::rng(3))
    {
        assert_eq!(msg2.len(), message_len(2, FrameSize::default()));
        // Accepted: body_len covers version, frame, caps and a 1184-byte
        // key. The payload is zero-padded to its fixed length, so a short
        // input whose key is the padding (all zeros, a valid ML-KEM key)
        // is accepted too.
        let mut payload = data.to_vec();
        payload.resize(payload.len().max(2 + 8 + 1184), 0);
        // Everything after the body, up to the payload's fixed length, is
        // zero (the padding is checked).
        let payload_len = HELLO_LEN - OVERHEAD_1;
        assert!(
            payload[2 + 8 + 1184..payload.len().min(payload_len)]
                .iter()
                .all(|&b| b == 0),
            "non-zero padding accepted"
        );
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 8 + 1184);
        assert_eq!(&payload[2..4], &1u16.to_be_bytes());
        assert_eq!(&payload[4..6], &1024u16.to_be_bytes());
        // Caps: none, CAP_USER_CERT (message 3 then carries a user
        // certificate) or CAP_WORKLOAD_TOKEN (a workload token), never
        // both; every other bit is refused.
        let caps = u32::from_be_bytes([payload[6], payload[7], payload[8], payload[9]]);
        assert!(
            caps == 0
                || caps == ztssh_proto::handshake::CAP_USER_CERT
                || caps == ztssh_proto::handshake::CAP_WORKLOAD_TOKEN,
            "caps {caps:#x} accepted"
        );
    }
});
