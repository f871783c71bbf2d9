//! ztssh-sidecar: `ProxyCommand ztssh-sidecar %h %p`. It speaks the hybrid
//! tunnel for ssh, verifies the server's licence before revealing the user,
//! and says plainly why a session ended. stdout carries only ssh's bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod connect;
mod explain;
mod identity;
mod pump;
mod revocation;
mod settings;
mod stdio;

#[derive(Parser)]
#[command(
    name = "ztssh-sidecar",
    version,
    about = "ssh ProxyCommand for ztssh: ProxyCommand ztssh-sidecar %h %p"
)]
struct Cli {
    /// Config file (default ~/.config/ztssh/sidecar.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Pinned root CA public key (root.pub).
    #[arg(long)]
    root: Option<PathBuf>,
    /// OpenSSH private key; without it, the key in ssh-agent (SSH_AUTH_SOCK).
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// ztssh principal (default: local user name).
    #[arg(long, short = 'l')]
    principal: Option<String>,
    /// Connect to this address instead of resolving HOST.
    #[arg(long)]
    connect: Option<String>,
    /// Record size; must match the proxy.
    #[arg(long)]
    frame_size: Option<usize>,
    /// Print each step on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Root-signed revocation list (crl.pem): refuse servers it revokes.
    #[arg(long)]
    revocation_list: Option<PathBuf>,
    /// Refresh --revocation-list from this URL first (conditional GET).
    #[arg(long)]
    revocation_url: Option<String>,
    /// Host as typed to ssh (%h); checked against the server licence.
    host: String,
    /// Port (%p).
    port: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = settings::Flags {
        root: cli.root,
        identity: cli.identity,
        principal: cli.principal,
        connect: cli.connect,
        frame_size: cli.frame_size,
        verbose: cli.verbose,
        revocation_list: cli.revocation_list,
        revocation_url: cli.revocation_url,
    };
    let result = settings::load(cli.config.as_deref(), &flags).and_then(|s| {
        // One session per process: a single-threaded runtime avoids
        // cross-thread wake-ups on the data path.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start runtime: {e}"))?;
        let result = rt.block_on(connect::run(s, cli.host, cli.port));
        // A renewal signature may still be waiting on ssh-agent (a
        // confirmation, a touch) in the blocking pool: exit without
        // waiting for it; the process's end closes the agent socket.
        rt.shutdown_background();
        result.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ztssh: {msg}");
            ExitCode::FAILURE
        }
    }
}
