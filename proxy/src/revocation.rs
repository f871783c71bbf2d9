//! Keeping the revocation list current: the one reload task that publishes
//! a new authority ([`reload`]), and what asks it to: the watchers on the
//! list file and on the list's staleness ([`watch`]), and the HTTP(S) pull
//! ([`fetch`]).

pub mod fetch;
pub mod krl_pull;
pub mod reload;
pub mod watch;
