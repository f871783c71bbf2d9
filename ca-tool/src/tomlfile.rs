//! What the CA's TOML readers (`access.rs`: the access list's input;
//! `caconfig.rs`: `ca.toml`) share: every mistake collected at its
//! FILE:LINE, so all of them are reported at once. Each reader adds its own
//! methods to [`Parser`] beside its format.

use std::path::Path;

/// Where a span starts, as a 1-based line.
fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// One file being read: its path and text for FILE:LINE, and the
/// mistakes found so far.
pub(crate) struct Parser<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) errors: Vec<String>,
}

impl Parser<'_> {
    /// Records a mistake at `span`'s line (or at the file, without one).
    pub(crate) fn at(&mut self, span: Option<std::ops::Range<usize>>, why: impl std::fmt::Display) {
        let place = match span {
            Some(s) => format!("{}:{}", self.path.display(), line_at(self.text, s.start)),
            None => self.path.display().to_string(),
        };
        self.errors.push(format!("{place}: {why}"));
    }
}
