//! The proxy's view of trust, built on the core's `ztssh_proto::trust`:
//! what it loads from its files and publishes to every session.
//!
//! - [`authority`]: the [`authority::Authority`] in force (licence, the
//!   root's revocation list, principals, policy), replaced whole on reload;
//! - [`authz`]: the authorized principals file;
//! - [`access`]: the signed access list in force;
//! - [`policy`]: the access policy file;
//! - [`workload`]: the platform token issuers in force and the record of
//!   tokens used.
//!
//! Lowest folder of the crate: it imports nothing else from it.

pub mod access;
pub mod authority;
pub mod authz;
pub mod krl;
pub mod policy;
pub mod workload;
