//! ztssh-proto: the IO-free core of ztssh.
//!
//! It holds the wire formats, the hybrid post-quantum handshake, the uniform
//! record layer, and the certificate formats. It performs no IO and reads no
//! clock: callers pass bytes in, take bytes out, and pass `now` (integer Unix
//! seconds) where time matters. Binaries drive it; they make no protocol
//! decisions of their own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod armor;
pub mod cert;
pub mod codec;
pub mod conn;
pub mod control;
pub mod crl;
pub mod end;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod hostca;
pub mod identity;
#[cfg(feature = "fs")]
pub mod keyfile;
pub mod keys;
pub mod labels;
pub mod rekey;
pub mod time;
pub mod trust;

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod tests;

pub use error::{AuthError, Malformed, ProtoError};
