//! The proxy side of an established tunnel fed arbitrary bytes: records
//! sealed by the client's real keys around fuzzed plaintexts, opened by the
//! proxy's opener, control messages handed to the proxy's identity state
//! machine, as the proxy's session loop does. Invariants: no panic, no ACK
//! and no renewed certificate without a genuine proof or renewal (which
//! fuzzed bytes cannot carry), and the principal never changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::frame::{Control, Event};
use ztssh_proto::identity::{ServerIdentity, Timing};
use ztssh_proto_fuzz::Allow;

const TIMING: Timing = Timing {
    interval_secs: 1,
    deadline_secs: 5,
    cert_ttl_secs: 300,
};

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let (mut c, mut s) = ztssh_proto_fuzz::pair();
    let now = ztssh_proto_fuzz::NOW;
    let started = ServerIdentity::start(
        s.handshake_hash,
        s.principal(),
        s.user_key().clone(),
        s.session_key(),
        &w.subca,
        &Allow,
        TIMING,
        now,
        0,
    )
    .expect("start");
    let mut id = started.identity;
    let serial = id.serial();
    let plain_len = c.transport.sealer.frame_size().get() - 16;
    let mut mono = 0u64;
    for chunk in data.chunks(plain_len).take(16) {
        // The proxy challenges on its own schedule.
        mono += 1500;
        if id.poll(now + mono / 1000, mono, [9; 32]).is_err() {
            return;
        }
        let mut wire = Vec::new();
        c.transport
            .sealer
            .seal_plaintext_raw(chunk, &mut wire)
            .expect("seal");
        let (mut d, mut events) = (Vec::new(), Vec::new());
        if s.transport
            .opener
            .open_all(&wire, &mut d, &mut events)
            .is_err()
        {
            return;
        }
        for ev in events {
            let Event::Control(msg) = ev else { continue };
            match id.handle(msg, &w.subca, &Allow, now + mono / 1000, mono) {
                Ok(Control::Ack { .. }) => panic!("ACK for a fuzzed message"),
                Ok(Control::Cert { .. }) => panic!("certificate renewed by a fuzzed message"),
                Ok(_) => {}
                Err(_) => return,
            }
            assert_eq!(id.principal(), "alice");
            assert_eq!(id.serial(), serial);
        }
    }
});
