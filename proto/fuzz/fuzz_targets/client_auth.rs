//! Message 3 at the proxy: arbitrary payloads behind valid Noise (the psk
//! from a real ML-KEM exchange). Invariant: nobody authenticates without the
//! session key's proof and the user's SSHSIG over this transcript.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::handshake::ClientAuth;

fuzz_target!(|data: &[u8]| {
    let (server, verified) = ztssh_proto_fuzz::up_to_msg3();
    let msg3 = verified.client_auth_raw(data).expect("msg3");
    assert!(
        !matches!(
            server.handle_client_auth(&msg3),
            Ok(ClientAuth::Authenticated(_))
        ),
        "a fuzzed message 3 authenticated"
    );
    let (server, _) = ztssh_proto_fuzz::up_to_msg3();
    assert!(server.handle_client_auth(data).is_err());
});
