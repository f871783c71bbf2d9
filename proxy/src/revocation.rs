//! Keeping the revocation list current: the one reload task that publishes
//! a new authority ([`reload`], with the file watch), and the HTTP(S) pull
//! that feeds it ([`fetch`]).

pub mod fetch;
pub mod reload;
