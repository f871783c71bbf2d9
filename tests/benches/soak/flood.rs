//! The flood that runs beside the soak, as tests/tests/load.rs makes it:
//! idle sockets that never say a word, each from a /16 of its own (so the
//! half-open table's per-network caps do not stop them before the table
//! is full), and garbage first messages of the right length, straight to
//! the proxy on loopback.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ztssh_proto::handshake::HELLO_LEN;
use ztssh_tests::*;

/// What the flood did.
#[derive(Default)]
pub struct Counts {
    pub cycles: AtomicU64,
    pub idle_opened: AtomicU64,
    pub idle_dropped: AtomicU64,
    pub garbage_sent: AtomicU64,
    pub refused: AtomicU64,
}

/// Cycles until `stop` (at most 10,000): `idle` silent sockets from
/// 127.100.0.1 on (one /16 each), then `garbage` hellos of random bytes
/// from 127.31.C.x, then waits (at most 15 s) until the proxy has dropped
/// the idle ones; one cycle every [`CYCLE`] at most.
pub fn run(port: u16, idle: usize, garbage: usize, stop: &AtomicBool, counts: &Counts) {
    for cycle in 0..10_000usize {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        counts.cycles.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let mut held = Vec::with_capacity(idle);
        for i in 0..idle {
            match connect_from(&format!("127.{}.0.1", 100 + i % 150), port) {
                Ok(s) => {
                    counts.idle_opened.fetch_add(1, Ordering::Relaxed);
                    held.push(s);
                }
                Err(_) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for i in 0..garbage {
            let src = format!("127.31.{}.{}", cycle % 250, 1 + i % 250);
            let Ok(mut s) = connect_from(&src, port) else {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if s.write_all(&pseudo_random(HELLO_LEN, (cycle * 1000 + i) as u64))
                .is_ok()
            {
                counts.garbage_sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut [0u8; 16]);
        }
        let until = Instant::now() + Duration::from_secs(15);
        for mut s in held {
            let left = until.saturating_duration_since(Instant::now());
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(10))));
            let dropped = match s.read(&mut [0u8; 16]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            if dropped {
                counts.idle_dropped.fetch_add(1, Ordering::Relaxed);
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
        // One cycle every 10 s at most: a steady flood, not a CPU burner.
        while began.elapsed() < CYCLE && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The shortest flood cycle.
const CYCLE: Duration = Duration::from_secs(10);
