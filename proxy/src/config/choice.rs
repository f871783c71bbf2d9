//! Settings that take one of a fixed set of words (`log_format`,
//! `cover_traffic`, `revocation_stale`): typed enums in [`super::Settings`],
//! read and written by serde through one table per setting, so a wrong word
//! is refused while the file is read, with the message operators have
//! always seen: `KEY = "WORD": use "A", "B" or "C"`.
//!
//! A new such setting: implement [`Choice`] for its type (its key and its
//! words), give the field `#[serde(with = "choice")]`, and add the key to
//! [`CHOICE_KEYS`].

use serde::{Deserialize, Deserializer, Serializer};
use ztssh_proto::conn::CoverTraffic;
use ztssh_proto::trust::StaleMode;

pub use crate::ops::logging::LogFormat;

/// The keys of every [`Choice`] setting: a refusal of one of them is shown
/// as its own message (it names the key and the words to use).
pub const CHOICE_KEYS: &[&str] = &[
    LogFormat::KEY,
    CoverTraffic::KEY,
    StaleMode::KEY,
    super::access::AccessStale::KEY,
];

/// A setting spelled as one of a fixed set of words.
pub trait Choice: Copy + PartialEq + Sized + 'static {
    /// The setting's key.
    const KEY: &'static str;
    /// Every word and the value it stands for, in the order the error
    /// message lists them.
    const WORDS: &'static [(&'static str, Self)];

    /// The word for `self`.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(w, _)| w)
    }

    /// The value `word` stands for, or the message that refuses it.
    fn from_word(word: &str) -> Result<Self, String> {
        Self::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, v)| *v)
            .ok_or_else(|| refusal(Self::KEY, word, Self::WORDS))
    }
}

/// `KEY = "WORD": use "A", "B" or "C"`.
fn refusal<T>(key: &str, word: &str, words: &[(&str, T)]) -> String {
    let quoted: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
    let alternatives = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    format!("{key} = {word:?}: use {alternatives}")
}

/// For `#[serde(with = "choice")]`: reads the word.
pub fn deserialize<'de, D: Deserializer<'de>, T: Choice>(d: D) -> Result<T, D::Error> {
    let word = String::deserialize(d)?;
    T::from_word(&word).map_err(serde::de::Error::custom)
}

/// For `#[serde(with = "choice")]`: writes the word.
pub fn serialize<S: Serializer, T: Choice>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.word())
}

impl Choice for LogFormat {
    const KEY: &'static str = "log_format";
    const WORDS: &'static [(&'static str, Self)] = &[("text", Self::Text), ("json", Self::Json)];
}

impl Choice for CoverTraffic {
    const KEY: &'static str = "cover_traffic";
    const WORDS: &'static [(&'static str, Self)] =
        &[("off", Self::Off), ("interactive", Self::Interactive)];
}

impl Choice for StaleMode {
    const KEY: &'static str = "revocation_stale";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("warn", Self::Warn),
        ("refuse-new", Self::RefuseNew),
        ("close-all", Self::CloseAll),
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_they_always_have() {
        assert_eq!(
            LogFormat::from_word("xml").unwrap_err(),
            r#"log_format = "xml": use "text" or "json""#
        );
        assert_eq!(
            CoverTraffic::from_word("always").unwrap_err(),
            r#"cover_traffic = "always": use "off" or "interactive""#
        );
        assert_eq!(
            StaleMode::from_word("fail-closed").unwrap_err(),
            r#"revocation_stale = "fail-closed": use "warn", "refuse-new" or "close-all""#
        );
    }

    /// The words here and the ones proto parses (the sidecar's
    /// `cover_traffic`, the staleness label in logs) never drift apart.
    #[test]
    fn words_agree_with_proto() {
        for &(word, v) in CoverTraffic::WORDS {
            assert_eq!(CoverTraffic::parse(word), Ok(v));
            assert_eq!(CoverTraffic::from_word(word), Ok(v));
            assert_eq!(v.word(), word);
        }
        assert_eq!(
            CoverTraffic::parse("always").unwrap_err(),
            CoverTraffic::from_word("always").unwrap_err()
        );
        for &(word, v) in StaleMode::WORDS {
            assert_eq!(StaleMode::parse(word), Some(v));
            assert_eq!(v.label(), word);
            assert_eq!(v.word(), word);
        }
        for &(word, v) in LogFormat::WORDS {
            assert_eq!(LogFormat::from_word(word), Ok(v));
            assert_eq!(v.word(), word);
        }
    }
}
