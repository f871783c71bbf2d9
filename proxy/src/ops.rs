//! Running the process: the clocks, the log writer, metrics and their
//! endpoint, and systemd / privilege integration. Imports only [`crate::trust`]
//! (the metrics endpoint renders the authority in force).

pub mod clock;
pub mod logging;
pub mod metrics;
pub mod process;
