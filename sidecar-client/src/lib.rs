//! The parts of ztssh-sidecar reachable from outside the binary: the
//! ssh-agent client, whose reply parsers the fuzz targets drive
//! (`proto/fuzz/fuzz_targets/agent_reply.rs`), and the platform module that
//! holds every operating-system-specific part.

pub mod agent;
pub mod platform;
