//! Message 2 at the sidecar: arbitrary payloads behind valid Noise from a
//! real responder. Invariant: never verified (the licence needs the root's
//! signature, which fuzzing cannot forge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::handshake;

fuzz_target!(|data: &[u8]| {
    let rng = &mut ztssh_proto_fuzz::rng(2);
    let (client, msg1) =
        handshake::client_start(ztssh_proto_fuzz::client_cfg(), rng).expect("client");
    let msg2 = ztssh_proto_fuzz::server()
        .server_hello_raw(&msg1, data)
        .expect("msg2");
    assert!(
        client
            .handle_server_hello(&msg2, ztssh_proto_fuzz::NOW, rng)
            .is_err(),
        "a fuzzed server hello was verified"
    );
    // Raw bytes as message 2 fail too.
    let (client, _) = handshake::client_start(ztssh_proto_fuzz::client_cfg(), rng).expect("client");
    assert!(
        client
            .handle_server_hello(data, ztssh_proto_fuzz::NOW, rng)
            .is_err()
    );
});
