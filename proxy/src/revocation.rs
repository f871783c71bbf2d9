//! Keeping the revocation list current: the one reload task that publishes
//! a new authority ([`reload`]), and what asks it to: the watchers on the
//! list file and on the list's staleness ([`watch`]), and the HTTP(S) pull
//! ([`fetch`]). The access list is kept current the same way
//! ([`access_pull`]), and so are workload issuers' key sets
//! ([`jwks_pull`]).

pub mod access_pull;
pub mod fetch;
pub mod jwks_pull;
pub mod krl_pull;
pub mod licence_pull;
pub mod reload;
pub mod watch;
