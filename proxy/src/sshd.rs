//! Everything sshd-side: zero standing keys ([`zsk`]: what sshd's
//! `AuthorizedKeysCommand` is told), the socket that command asks
//! ([`akc`]), the sshd_config lines that wire it ([`config_lines`]), and
//! their safe installation ([`setup`], with [`reload`] of sshd itself).

pub mod akc;
pub mod config_lines;
pub mod guard;
pub mod reload;
pub mod setup;
pub mod zsk;
