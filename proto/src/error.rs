//! Errors, grouped by fault. The peer never sees these details: on the wire
//! every failure is the same closed connection or a TERMINATE with a coarse
//! reason code.

use thiserror::Error;

/// Bytes that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Input ended early.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// Bytes left over after a complete structure.
    #[error("{what} has {count} unexpected trailing bytes")]
    TrailingBytes {
        /// Structure name.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A length field above its cap.
    #[error("{what} has a field of {len} bytes (at most {max} allowed)")]
    TooLong {
        /// Structure name.
        what: &'static str,
        /// Length found.
        len: usize,
        /// Cap.
        max: usize,
    },
    /// A magic value or tag that is not ours.
    #[error(
        "{0} does not start with the expected magic bytes (not a ztssh file, or the wrong kind)"
    )]
    BadMagic(&'static str),
    /// A format version we do not speak.
    #[error("{what} has unsupported version {version}")]
    BadVersion {
        /// Structure name.
        what: &'static str,
        /// Version found.
        version: u8,
    },
    /// Text that is not UTF-8.
    #[error("{0} contains invalid UTF-8")]
    BadUtf8(&'static str),
    /// A value outside its allowed set.
    #[error("{what}: {why}")]
    Invalid {
        /// Structure name.
        what: &'static str,
        /// Human reason.
        why: &'static str,
    },
    /// PEM armour could not be decoded.
    #[error("not a PEM-armoured ztssh file: {0}")]
    Armor(String),
}

/// Certificate, licence and signature failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Signature does not verify under the expected key.
    #[error("{0}: signature does not verify")]
    BadSignature(&'static str),
    /// Issued by a key we do not trust.
    #[error("{0} was not issued by the trusted key")]
    WrongIssuer(&'static str),
    /// Not valid yet.
    #[error("{what} is not valid for another {}", crate::time::human(*.secs))]
    NotYetValid {
        /// What.
        what: &'static str,
        /// Seconds until valid.
        secs: u64,
    },
    /// Expired.
    #[error("{what} expired {} ago", crate::time::human(*.secs))]
    Expired {
        /// What.
        what: &'static str,
        /// Seconds since expiry.
        secs: u64,
    },
    /// Host name not in the licence.
    #[error("server licence does not cover host {host:?} (it covers: {covered})")]
    HostNotCovered {
        /// Requested host.
        host: String,
        /// Names in the licence.
        covered: String,
    },
    /// Signed by a delegated key whose delegation does not allow it (wrong
    /// purpose, another server, revoked).
    #[error("{what} refused: {why}")]
    NotDelegated {
        /// What was signed.
        what: &'static str,
        /// Human reason.
        why: String,
    },
    /// An object without the hybrid signature the pinned hybrid root
    /// requires: an Ed25519 signature alone (the post-quantum half
    /// stripped, or issued by an Ed25519 root).
    #[error(
        "{0} carries no hybrid signature, but the pinned root is hybrid (Ed25519 + ML-DSA-65) \
         and requires both halves: it was stripped of its post-quantum half or issued by \
         another root; use a copy issued by the pinned root"
    )]
    NotHybrid(&'static str),
    /// A hybrid signature whose ML-DSA-65 half does not verify (corrupted,
    /// or taken from another object).
    #[error(
        "{0}: its ML-DSA-65 (post-quantum) signature does not verify: the object was altered or \
         its two signatures come from different objects; fetch it again from the CA"
    )]
    BadPqSignature(&'static str),
    /// A signature of another algorithm than the pinned root declares.
    #[error(
        "{what} is not signed with {pinned}, the algorithm the pinned root declares: it was \
         altered or issued by another root; use a copy issued by the pinned root"
    )]
    WrongAlgorithm {
        /// What was signed.
        what: &'static str,
        /// The pinned root's algorithm.
        pinned: &'static str,
    },
    /// A security key's signature made without a touch.
    #[error(
        "{0} was signed by the root's security key without user presence (nobody touched it): \
         refused; sign it again, touching the key when it blinks"
    )]
    NoUserPresence(&'static str),
    /// A hybrid signature where the pinned root is Ed25519 only.
    #[error(
        "{0} is signed by a hybrid (Ed25519 + ML-DSA-65) root, but the pinned root is Ed25519: \
         pin the hybrid root's root.pub, or use an object from the pinned root"
    )]
    UnexpectedHybrid(&'static str),
    /// The Noise static key the handshake proved differs from the licence.
    #[error("server's tunnel key is not the one its licence certifies")]
    KeyMismatch,
}

/// Handshake and transport failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// Input that does not parse.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// Authentication failure.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The Noise layer rejected a message (bad tag, wrong key, wrong psk).
    #[error(
        "tunnel cryptography failed ({0}); the message was forged, corrupted or from another session"
    )]
    Noise(#[from] snow::Error),
    /// Peer broke the protocol in a well-formed way.
    #[error("peer violated the protocol: {0}")]
    PeerMisbehaved(&'static str),
    /// Versions or frame sizes do not match.
    #[error("incompatible peer: {0}")]
    Incompatible(String),
    /// Local misuse (wrong state, bad parameter).
    #[error("internal error: {0}")]
    Internal(&'static str),
}
