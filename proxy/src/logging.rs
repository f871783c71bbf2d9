//! The log writer. Lines are formatted where they happen and written to
//! stderr by one thread of their own, through a bounded queue of
//! [`QUEUE_LINES`] lines. A stalled stderr (journald stuck, a pipe nobody
//! reads) therefore never holds a runtime worker, so it can never delay a
//! challenge, a deadline or a kill. When the queue is full, lines are
//! dropped and counted (`ztssh_log_lines_dropped_total`) instead of waited
//! for: enforcement comes before the audit trail, and the count says that
//! the trail has a gap.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::config::LogFormat;

/// Lines the queue holds while stderr is not taking them.
pub const QUEUE_LINES: usize = 65_536;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber. Keep the guard until the process
/// exits: dropping it writes out what is still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    use std::io::IsTerminal;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("ztssh-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.with_target(false).init();
    }
    guard
}

/// Log lines dropped since start because the queue was full.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}
