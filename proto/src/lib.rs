//! ztssh-proto: the IO-free core of ztssh.
//!
//! It holds the wire formats, the hybrid post-quantum handshake, the uniform
//! record layer, and the certificate formats. It performs no IO and reads no
//! clock: callers pass bytes in, take bytes out, and pass `now` (integer Unix
//! seconds) where time matters. Binaries drive it; they make no protocol
//! decisions of their own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Untrusted bytes and key files are handled here: outside test code every
// failure is an error value, never a panic (clippy -D warnings makes these
// errors in CI).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod armor;
pub mod cert;
pub mod codec;
pub mod conn;
pub mod control;
pub mod crl;
pub mod delegation;
pub mod end;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod hostca;
pub mod identity;
pub mod keys;
pub mod krl;
pub mod labels;
pub mod primitives;
pub mod rekey;
pub mod rootkey;
pub mod time;
pub mod trust;
pub mod userkey;

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod tests;

pub use error::{AuthError, Malformed, ProtoError};

/// True when the `testkit` feature is on: hooks that let tests and fuzz
/// targets play a hostile peer (records and handshake messages with valid
/// cryptography around arbitrary payloads, manual mode, forced licences).
/// Each binary asserts at compile time that it is false; only the tests
/// crate (as a dev-dependency) and proto/fuzz enable the feature.
pub const TESTKIT: bool = cfg!(feature = "testkit");
