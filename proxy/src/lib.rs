//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it. The binary (`main.rs`) parses the command
//! line; everything else lives here:
//!
//! - [`trust`]: the authority in force (licence, revocation list,
//!   authorized principals, policy);
//! - [`ops`]: clocks, logging, metrics, systemd and privileges;
//! - [`admission`]: accept-time checks and penalties, before any
//!   cryptography;
//! - [`config`]: settings, validated before any port is bound;
//! - [`session`]: one connection from handshake to end, and its
//!   [`session::driver`] loop;
//! - [`revocation`]: the reload task and the revocation-list pull;
//! - [`sshd`]: zero standing keys and sshd administration;
//! - [`server`]: binding, signals, drain.

pub mod admission;
pub mod config;
pub mod ops;
pub mod revocation;
pub mod server;
pub mod session;
pub mod sshd;
pub mod trust;
