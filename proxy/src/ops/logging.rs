//! The log writer. Lines are formatted where they happen and written to
//! stderr by one thread of their own, through a bounded queue of
//! [`QUEUE_LINES`] lines. A stalled stderr (journald stuck, a pipe nobody
//! reads) therefore never holds a runtime worker, so it can never delay a
//! challenge, a deadline or a kill. When the queue is full, lines are
//! dropped and counted (`ztssh_log_lines_dropped_total`) instead of waited
//! for: enforcement comes before the audit trail, and the count says that
//! the trail has a gap.
//!
//! Every line carries the licence's `server_id` (the first field of a JSON
//! line, ` server_id=…` at the end of a text line), so a SIEM that gathers
//! the fleet's logs can tell the servers apart; a reload that installs a
//! licence with another id switches it ([`set_server_id`]). JSON lines
//! carry one span field, `span` (the session's id and peer), and no
//! `spans` list. docs/OPERATOR.md has each event's schema, and
//! `tests/tests/log_schema.rs` checks real lines against it.

use std::io::{self, Write};
use std::sync::{Arc, OnceLock, RwLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;

/// `log_format`: how the proxy writes its log (read from the config as
/// one of its words, `crate::config::Choice`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Lines the queue holds while stderr is not taking them.
pub const QUEUE_LINES: usize = 65_536;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The licence's server id, as every line carries it.
static SERVER_ID: RwLock<Option<Arc<str>>> = RwLock::new(None);

/// Sets the `server_id` every following line carries (at start, and when a
/// reload installs a licence).
pub fn set_server_id(id: &str) {
    let mut held = SERVER_ID
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.as_deref() != Some(id) {
        *held = Some(Arc::from(id));
    }
}

fn server_id() -> Option<Arc<str>> {
    SERVER_ID
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Installs the global subscriber, with `server_id` on every line. Keep
/// the guard until the process exits: dropping it writes out what is
/// still queued.
pub fn init(format: LogFormat, server_id: &str) -> WorkerGuard {
    use std::io::IsTerminal;
    set_server_id(server_id);
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
        .with_writer(Tagged(writer))
        .with_ansi(std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
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

/// The queue's writer, adding `server_id` to each line.
struct Tagged(NonBlocking);

impl<'a> MakeWriter<'a> for Tagged {
    type Writer = TaggedLine;

    fn make_writer(&'a self) -> Self::Writer {
        TaggedLine(self.0.clone())
    }
}

/// One line's writer. The formatter hands it a whole line in one write
/// (it formats into a buffer first), which goes into the queue as one.
struct TaggedLine(NonBlocking);

impl Write for TaggedLine {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let Some(id) = server_id() else {
            return self.0.write(line);
        };
        self.0.write_all(&tag(line, &id))?;
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `line` with `server_id` added: the first field of a JSON object, or
/// ` server_id=ID` before a text line's newline. The id is a licence's
/// server id (letters, digits, `.`, `-`, `_`; `cert::check_name`), escaped
/// for JSON all the same.
fn tag(line: &[u8], id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + id.len() + 16);
    if let Some(rest) = line.strip_prefix(b"{") {
        out.extend_from_slice(b"{\"server_id\":\"");
        for c in id.chars() {
            match c {
                '"' | '\\' => {
                    out.push(b'\\');
                    out.push(c as u8);
                }
                c if u32::from(c) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.extend_from_slice(b"\",");
        out.extend_from_slice(rest);
    } else {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        out.extend_from_slice(body);
        out.extend_from_slice(b" server_id=");
        out.extend_from_slice(id.escape_debug().to_string().as_bytes());
        if body.len() < line.len() {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn every_line_gets_the_server_id() {
        assert_eq!(
            tag(b"{\"level\":\"INFO\"}\n", "web1"),
            b"{\"server_id\":\"web1\",\"level\":\"INFO\"}\n"
        );
        assert_eq!(
            tag(b"{\"a\":1}\n", "a\"b\\c\u{1}"),
            b"{\"server_id\":\"a\\\"b\\\\c\\u0001\",\"a\":1}\n"
        );
        assert_eq!(
            tag(
                b"2026-12-07T12:00:00Z  INFO listening event=\"listening\"\n",
                "web1"
            ),
            b"2026-12-07T12:00:00Z  INFO listening event=\"listening\" server_id=web1\n"
        );
    }
}
