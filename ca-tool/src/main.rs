//! ztssh-ca: the offline root CA. It creates the root key, signs 24 h
//! server licences for proxies' Sub-CA and Noise keys, and certifies sshd's
//! host keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::cert::{LicenceBody, LicenceRequest, Serial};
use ztssh_proto::keys::SigningKey;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration};

mod cadir;
mod hostcert;
mod issuance;
mod krl;
mod revoke;
mod show;

/// Longest licence the CA will sign: 24 h, as `docs/THREAT_MODEL.md`
/// assumes (a stolen proxy identity that no list reaches dies within a day).
const MAX_LICENCE_TTL: u64 = 86_400;

#[derive(Parser)]
#[command(name = "ztssh-ca", version, about = "ztssh offline root CA")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new root CA in DIR (root.key, mode 0600, and root.pub).
    Init {
        /// CA directory (created with mode 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Sign a server licence for a proxy's licence request.
    AuthorizeServer {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Request written by `ztssh-proxy keygen`.
        #[arg(long)]
        request: PathBuf,
        /// Name of this proxy (letters, digits, . _ @ -).
        #[arg(long)]
        server_id: String,
        /// Host names clients use to reach the proxy (repeatable).
        #[arg(long = "hostname", required = true, num_args = 1..)]
        hostnames: Vec<String>,
        /// Validity, e.g. 24h, 90m, 12h (at most 24h).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Where to write the licence.
        #[arg(long)]
        out: PathBuf,
    },
    /// Record a revocation: a principal ban, a server licence, a serial, a
    /// user key, or a host certificate.
    Revoke {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Ban this principal on every proxy.
        #[arg(long)]
        principal: Option<String>,
        /// Revoke this server's licence.
        #[arg(long)]
        server: Option<String>,
        /// Revoke this certificate or licence serial (32 hex digits).
        #[arg(long)]
        serial: Option<String>,
        /// Revoke this user key (an OpenSSH KEY.pub file), by SHA-256
        /// fingerprint; `ztssh-ca krl` publishes it to sshd.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Revoke this OpenSSH host certificate (a KEY-cert.pub file that
        /// `sign-host` wrote), by serial; `ztssh-ca krl` publishes it.
        #[arg(long)]
        host_cert: Option<PathBuf>,
        /// Revoke a proxy's Noise static key, and so every licence for it:
        /// a licence or licence-request.pem file, or the key's 64 hex
        /// digits (`ztssh-ca show` prints them). The CA then refuses to
        /// license it again.
        #[arg(long, value_name = "FILE|HEX")]
        noise_key: Option<String>,
        /// Revoke a proxy's Sub-CA key the same way.
        #[arg(long, value_name = "FILE|HEX")]
        subca_key: Option<String>,
        /// Revoke both keys of this licence (a proxy whose keys were
        /// stolen): every licence for either key, past and future.
        #[arg(long, value_name = "FILE")]
        licence: Option<PathBuf>,
    },
    /// Write a new root-signed revocation list (version goes up by one).
    Crl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the list.
        #[arg(long)]
        out: PathBuf,
        /// How long until a newer list is due (proxies warn after that).
        #[arg(long, default_value = "7d")]
        ttl: String,
    },
    /// Certify sshd's host key: write an OpenSSH host certificate for
    /// sshd's `HostCertificate`, signed by the host CA key derived from the
    /// root.
    SignHost {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// sshd's host public key, e.g. /etc/ssh/ssh_host_ed25519_key.pub.
        #[arg(long)]
        host_key: PathBuf,
        /// Host names clients type, as ssh checks them (repeatable; lower case).
        #[arg(long = "hostname", required = true, num_args = 1..)]
        hostnames: Vec<String>,
        /// Validity, e.g. 30d, 12h (at most 90d).
        #[arg(long, default_value_t = hostcert::default_ttl())]
        ttl: String,
        /// Where to write the certificate (e.g. ssh_host_ed25519_key-cert.pub).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the `@cert-authority` known_hosts line that makes ssh trust
    /// the host certificates this CA signs.
    KnownHosts {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Hosts the line covers (a known_hosts pattern list).
        #[arg(long, default_value = "*")]
        pattern: String,
    },
    /// Write the revoked user keys and host certificates as a binary
    /// OpenSSH KRL for sshd's RevokedKeys (replaced atomically).
    Krl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the KRL.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print any ztssh key, request, licence or certificate readably.
    Show {
        /// The file.
        file: PathBuf,
        /// The root public key (root.pub) to check a licence's signature
        /// against; without it (or --dir) the signature is NOT checked.
        #[arg(long, conflicts_with = "dir")]
        root: Option<PathBuf>,
        /// A CA directory whose root.pub to check a licence against.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// A fuzzing build's public-key operations are insecure stand-ins
// (ztssh_proto::primitives): no binary may ever be built with them.
const _: () = assert!(
    !ztssh_proto::primitives::CRYPTO_STANDINS,
    "ztssh-ca cannot be built with --cfg fuzzing and ztssh-proto's crypto-standins feature: its cryptography would be fuzzing stand-ins"
);

// Nor with proto's test hooks (ztssh_proto::TESTKIT), which only the tests
// crate takes, as a dev-dependency. Not checked in this file's own unit
// tests or under clippy: a workspace-wide test or clippy run unifies the
// tests crate's dev-dependency features into every member, and neither
// produces the binary.
#[cfg(not(any(test, clippy)))]
const _: () = assert!(
    !ztssh_proto::TESTKIT,
    "ztssh-ca cannot be built with ztssh-proto's testkit feature: it would link test hooks that play a hostile peer"
);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli.cmd);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztssh-ca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command. Each checks the CA directory first (`cadir::check`),
/// and those that read and then write it hold its lock throughout.
fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Init { dir } => {
            cadir::create(&dir)?;
            let _lock = cadir::lock(&dir, "init")?;
            init(&dir)
        }
        Cmd::AuthorizeServer {
            dir,
            request,
            server_id,
            hostnames,
            ttl,
            out,
        } => {
            cadir::check(&dir)?;
            let _lock = cadir::lock(&dir, "authorize-server")?;
            authorize(&dir, &request, server_id, hostnames, &ttl, &out)
        }
        Cmd::Revoke {
            dir,
            principal,
            server,
            serial,
            key,
            host_cert,
            noise_key,
            subca_key,
            licence,
        } => {
            cadir::check(&dir)?;
            let _lock = cadir::lock(&dir, "revoke")?;
            let flags = revoke::Flags {
                principal,
                server,
                serial,
                key,
                host_cert,
                noise_key,
                subca_key,
                licence,
            };
            revoke::Target::from_flags(&dir, flags).and_then(|t| revoke::revoke(&dir, &t))
        }
        Cmd::Crl { dir, out, ttl } => {
            cadir::check(&dir)?;
            let _lock = cadir::lock(&dir, "crl")?;
            revoke::crl(&dir, &out, &ttl, now())
        }
        Cmd::SignHost {
            dir,
            host_key,
            hostnames,
            ttl,
            out,
        } => {
            cadir::check(&dir)?;
            hostcert::sign_host(&dir, &host_key, &hostnames, &ttl, &out, now())
        }
        Cmd::KnownHosts { dir, pattern } => {
            cadir::check(&dir)?;
            hostcert::known_hosts(&dir, &pattern)
        }
        Cmd::Krl { dir, out } => {
            cadir::check(&dir)?;
            let _lock = cadir::lock(&dir, "krl")?;
            revoke::krl(&dir, &out, now())
        }
        Cmd::Show { file, root, dir } => {
            let root = root.or_else(|| dir.map(|d| d.join("root.pub")));
            show::show(&file, root.as_deref(), now())
        }
    }
}

/// `init`: the root key pair and the list counter, in a directory
/// `cadir::create` made (0700) and locked.
fn init(dir: &Path) -> Result<()> {
    let key_path = dir.join("root.key");
    let root = SigningKey::generate(&mut UnwrapErr(SysRng));
    keyfile::write_secret(&key_path, pem::ROOT_KEY, &root.to_seed()).map_err(anyhow::Error::msg)?;
    let pub_text = armor::encode(pem::ROOT_PUBLIC, &root.public().0);
    keyfile::write_atomic(
        &dir.join("root.pub"),
        pub_text.as_bytes(),
        0o644,
        keyfile::Existing::Refuse,
    )?;
    revoke::init_versions(dir)?;
    println!("root CA created in {}", dir.display());
    println!("  root.key  private, mode 0600: keep this directory offline");
    println!(
        "  root.pub  fingerprint {}: pin it on every proxy and sidecar",
        root.public().fingerprint()
    );
    Ok(())
}

fn authorize(
    dir: &Path,
    request: &Path,
    server_id: String,
    hostnames: Vec<String>,
    ttl: &str,
    out: &Path,
) -> Result<()> {
    let Some(ttl) = parse_duration(ttl).filter(|t| *t > 0) else {
        bail!("--ttl {ttl:?} is not a duration like 24h, 90m or 2d");
    };
    if ttl > MAX_LICENCE_TTL {
        bail!(
            "--ttl {} is longer than the {} maximum; licences are meant to be short-lived: \
             renew them daily (docs/OPERATOR.md, licence renewal)",
            human(ttl),
            human(MAX_LICENCE_TTL)
        );
    }
    let root = keyfile::read_signing_key(&dir.join("root.key"), pem::ROOT_KEY)
        .map_err(anyhow::Error::msg)?;
    let req_bytes = keyfile::read_pem(request, pem::REQUEST).map_err(anyhow::Error::msg)?;
    let req = LicenceRequest::decode_verified(&req_bytes)
        .with_context(|| format!("{} is not a valid licence request", request.display()))?;
    revoke::refuse_revoked_proxy_keys(dir, &req.noise_key, &req.subca_key.0)?;
    let now = now();
    let body = LicenceBody {
        serial: Serial::random(&mut UnwrapErr(SysRng)),
        server_id,
        hostnames,
        subca_key: req.subca_key,
        noise_key: req.noise_key,
        not_before: now,
        not_after: now + ttl,
        issuer: root.public(),
    };
    let licence = body.sign(&root)?;
    // Recorded before it exists anywhere else.
    issuance::append(dir, &issuance::line(&licence.body, now))?;
    let text = armor::encode(pem::LICENCE, licence.encoded());
    keyfile::write_atomic(out, text.as_bytes(), 0o644, keyfile::Existing::Replace)?;
    println!(
        "licence {} for {} ({}) valid {} written to {}",
        licence.body.serial,
        licence.body.server_id,
        licence.body.hostnames.join(", "),
        human(ttl),
        out.display()
    );
    Ok(())
}
