//! Bounded waits, and the reads of logs and files they poll.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms for at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a file as text, empty if missing.
pub fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// How many times `needle` occurs in `haystack` (log lines, say).
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
