//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it. The binary (`main.rs`) parses the command
//! line; everything else lives here:
//!
//! - [`config`]: settings, validated before any port is bound;
//! - [`admission`]: accept-time checks and penalties, before any
//!   cryptography;
//! - [`session`]: one connection from handshake to end;
//! - [`driver`]: the IO loop of an established session over the core's
//!   `ServerConn`, in which no write is ever awaited;
//! - [`reload`]: the one task that publishes a new [`authority::Authority`];
//! - [`fetch`]: pulls the revocation list over HTTP(S) for the reload task;
//! - [`server`]: binding, signals, drain;
//! - [`logging`]: log lines written off the runtime's workers;
//! - [`zsk`], [`akc`], [`sshd_config`], [`sshd_setup`] (with
//!   [`sshd_reload`]): zero standing keys (a source
//!   address per session, the socket sshd's `AuthorizedKeysCommand` asks,
//!   the sshd_config lines that wire it, and their safe installation).

pub mod admission;
pub mod akc;
pub mod authority;
pub mod authz;
pub mod clock;
pub mod config;
pub mod driver;
pub mod fetch;
pub mod halfopen;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod process;
pub mod reload;
pub mod server;
pub mod session;
pub mod sshd_config;
pub mod sshd_reload;
pub mod sshd_setup;
pub mod zsk;
