//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ztssh_proto::cert::LicenceRequest;
use ztssh_proto::keys::{NoiseKeypair, SigningKey};
use ztssh_proto::labels::pem;
use ztssh_proto::{armor, keyfile};
use ztssh_proxy::authority::Authority;
use ztssh_proxy::clock::unix as now;
use ztssh_proxy::config::{self, Config, ConfigError, Overrides};

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "ztssh-proxy",
    version,
    about = "ztssh proxy: zero-trust tunnel in front of a stock sshd"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the Sub-CA and Noise keys in DIR and write the licence request.
    Keygen {
        /// State directory (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Validate the configuration, like `sshd -t`.
    Check {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
    },
    /// Run the proxy.
    Run {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Override `upstream`.
        #[arg(long)]
        upstream: Option<String>,
        /// Override `log_format` (text or json).
        #[arg(long)]
        log_format: Option<String>,
    },
}

/// mimalloc in secure mode (guard pages around its metadata, randomized and
/// encoded free lists, double-free detection): heap hardening at least on a
/// par with glibc's, and a third less CPU for
/// a mass kill, whose cost is mostly freeing thousands of sessions at once
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Keygen { dir } => report(keygen(&dir)),
        Cmd::Check { config } => match load(&config, &Overrides::default()) {
            Ok((cfg, authority)) => {
                println!(
                    "{}: OK\n{}",
                    config.display(),
                    cfg.summary(&authority, now())
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Cmd::Run {
            config,
            listen,
            upstream,
            log_format,
        } => {
            let (cfg, authority) = match load(
                &config,
                &Overrides {
                    listen,
                    upstream,
                    log_format,
                },
            ) {
                Ok(loaded) => loaded,
                Err(e) => return config_error(&e),
            };
            // Held to the end of main: dropping it writes out the queue.
            let _log = ztssh_proxy::logging::init(&cfg.settings.log_format);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e.into())),
            };
            let result = rt.block_on(ztssh_proxy::server::run(cfg, authority));
            // A read stuck on a hung filesystem must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            report(result)
        }
    }
}

fn load(path: &Path, overrides: &Overrides) -> Result<(Config, Authority), ConfigError> {
    config::load(config::settings(path, overrides)?, now())
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("ztssh-proxy: config error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztssh-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let subca = SigningKey::generate();
    let noise = NoiseKeypair::generate();
    keyfile::write_secret(
        &dir.join(config::SUBCA_KEY_FILE),
        pem::SUBCA_KEY,
        &subca.to_seed(),
    )?;
    keyfile::write_secret(
        &dir.join(config::NOISE_KEY_FILE),
        pem::NOISE_KEY,
        noise.private(),
    )?;
    let request = LicenceRequest::new(&subca, noise.public(), now());
    let req_path = dir.join(config::REQUEST_FILE);
    keyfile::write_atomic(
        &req_path,
        armor::encode(pem::REQUEST, &request.encode()).as_bytes(),
        0o644,
        true,
    )?;
    println!("keys written to {} (mode 0600)", dir.display());
    println!("licence request: {}", req_path.display());
    println!("next, on the offline CA machine:");
    println!(
        "  ztssh-ca authorize-server --dir CA --request {} --server-id NAME --hostname HOST --out licence.pem",
        req_path.display()
    );
    Ok(())
}
