//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it. The binary (`main.rs`) parses the command
//! line; everything else lives here, one folder per concern, lowest first.
//! A module may name only modules listed before its own (never a later one,
//! nor another on its line); `tests/tests/layout.rs` checks it.
//!
//! 1. [`trust`]: the authority in force (licence, revocation list,
//!    authorized principals, policy), on the core's `ztssh_proto::trust`;
//! 2. [`ops`]: clocks, the log writer, metrics and their endpoint,
//!    systemd and privileges;
//! 3. [`admission`]: accept-time checks, rate limits, the half-open
//!    handshake table and penalties, before any cryptography;
//! 4. [`config`]: settings, validated before any port is bound;
//! 5. [`state`]: the process-wide [`state::Shared`], and the tables of
//!    live sessions (source addresses, keys) that zero standing keys needs;
//! 6. [`revocation`] (the reload task, the file watch and the HTTP(S)
//!    pull) and [`sshd`] (what sshd's `AuthorizedKeysCommand` is told, its
//!    socket, the sshd_config lines and their installation);
//! 7. [`session`]: one connection from handshake to end, and its
//!    [`session::driver`] loop, in which no write is ever awaited;
//! 8. [`server`]: binding, signals, drain.

pub mod admission;
pub mod config;
pub mod ops;
pub mod revocation;
pub mod server;
pub mod session;
pub mod sshd;
pub mod state;
pub mod trust;
