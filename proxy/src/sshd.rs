//! Everything sshd-side: zero standing keys ([`zsk`]: what sshd's
//! `AuthorizedKeysCommand` is told), the socket that command asks
//! ([`akc`]), the sshd_config lines that wire it ([`config_lines`]), sshd_config read as sshd reads
//! it ([`include`]: quoting and `Include` globs), the
//! options Debian's unit starts it with ([`defaults`]: `SSHD_OPTS`; [`unit`]:
//! an `ExecStart=` or `Environment=` in a systemd drop-in) and the ones the
//! running sshd was started with ([`running`]: its /proc command line), and
//! their safe installation ([`setup`], with [`reload`] of sshd itself;
//! its dry run checks a copy of the new files that `shadow` makes).

pub mod akc;
pub mod config_lines;
pub mod defaults;
pub mod guard;
pub mod include;
pub mod methods;
pub mod reload;
pub mod running;
pub mod setup;
mod shadow;
pub mod unit;
pub mod zsk;
