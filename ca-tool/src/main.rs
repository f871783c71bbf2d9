//! ztssh-ca: the offline root CA. It creates the root key, signs 24 h
//! server licences for proxies' Sub-CA and Noise keys, and certifies sshd's
//! host keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::keys::SigningKey;
use ztssh_proto::labels::pem;
use ztssh_proto::rootkey::RootKey;

mod access;
mod batch;
mod caconfig;
mod cadir;
mod delegate;
mod hostcert;
mod issuance;
mod krl;
mod revoke;
mod show;
mod signer;
mod tomlfile;

#[derive(Parser)]
#[command(name = "ztssh-ca", version, about = "ztssh offline root CA")]
struct Cli {
    /// A file holding the PIN of a PKCS#11 token that holds a CA key
    /// (mode 0600); else ZTSSH_CA_PIN_FILE, else the terminal asks.
    #[arg(long, global = true, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// A file (mode 0600) holding the passphrase of a hybrid root's
    /// ML-DSA key (root-mldsa.age); else the file ZTSSH_CA_PASSPHRASE_FILE
    /// names, else the terminal asks. Never the passphrase itself.
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where a CA key is held, for `init`, `host-ca` and `check-signer`.
#[derive(clap::Args, Clone, Default)]
struct KeyHolder {
    /// Use the key ssh-agent (SSH_AUTH_SOCK) holds with this fingerprint
    /// (SHA256:..., as `ssh-add -l` prints it).
    #[arg(long, value_name = "FINGERPRINT", conflicts_with = "pkcs11")]
    agent: Option<String>,
    /// Use a key in a PKCS#11 token: the module (.so); needs --token and --key.
    #[arg(long, value_name = "MODULE", requires_all = ["token", "key_label"])]
    pkcs11: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11")]
    token: Option<String>,
    /// The key's label in the token (created there, non-extractable, if missing).
    #[arg(long = "key", value_name = "LABEL", requires = "pkcs11")]
    key_label: Option<String>,
}

impl KeyHolder {
    fn spec(self) -> Option<signer::Spec> {
        match (self.agent, self.pkcs11, self.token, self.key_label) {
            (Some(fingerprint), ..) => Some(signer::Spec::Agent { fingerprint }),
            (None, Some(module), Some(token), Some(key)) => {
                Some(signer::Spec::Pkcs11 { module, token, key })
            }
            _ => None,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// `completions SHELL` and `man` (ztssh-cli, shared by every binary).
    #[command(flatten)]
    Generate(ztssh_cli::Generate),
    /// Create a new root CA in DIR: root.key (mode 0600) and root.pub, or
    /// with --agent / --pkcs11 a root whose private key never exists on
    /// disk (CA/ca.toml records where it is held).
    Init {
        /// CA directory (created with mode 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
        /// A hybrid post-quantum root: Ed25519 (held as the other flags
        /// say) and ML-DSA-65 (FIPS 204) in root-mldsa.age, encrypted
        /// with a passphrase. Every signature it makes carries both, and
        /// proxies and sidecars that pin it refuse anything less.
        #[arg(long)]
        pq: bool,
        #[command(flatten)]
        holder: KeyHolder,
    },
    /// Give the CA a host CA key of its own (a new file host-ca.key, or
    /// --agent / --pkcs11), certified by the root; `sign-host` then signs
    /// with it. Needed when the root is in hardware.
    HostCa {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        holder: KeyHolder,
        /// Certify the host CA key ca.toml names again (its certification expires).
        #[arg(long)]
        renew: bool,
        /// How long the root's certification lasts (default: caps.delegation).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Sign a test message with a CA key (DIR's root, or --agent /
    /// --pkcs11) and check the signature: the algorithm, and for a
    /// security key its flags and counter.
    CheckSigner {
        /// CA directory whose root to check.
        #[arg(long, required_unless_present_any = ["agent", "pkcs11"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        holder: KeyHolder,
    },
    /// Sign a server licence for a proxy's licence request, or (with
    /// --requests) one for every request in a directory. Signed by the
    /// root, or by a licences delegation (--delegation and --key).
    AuthorizeServer {
        /// CA directory (the root's; with --delegation, optional: its
        /// revocation records and issuance log are used when given).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Request written by `ztssh-proxy keygen`.
        #[arg(
            long,
            required_unless_present = "requests",
            conflicts_with = "requests"
        )]
        request: Option<PathBuf>,
        /// Batch: every SERVER_ID.pem request in this directory gets a
        /// licence SERVER_ID.pem in --out-dir, for the host names in
        /// SERVER_ID.hosts (one a line) or else the server id alone.
        #[arg(long, requires = "out_dir")]
        requests: Option<PathBuf>,
        /// Batch: where the licences go.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Name of this proxy (letters, digits, . _ @ -).
        #[arg(long, required_unless_present = "requests")]
        server_id: Option<String>,
        /// Host names clients use to reach the proxy (repeatable).
        #[arg(long = "hostname", num_args = 1..)]
        hostnames: Vec<String>,
        /// Validity, e.g. 24h, 90m, 12h (at most 24h).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Where to write the licence.
        #[arg(long, required_unless_present = "requests")]
        out: Option<PathBuf>,
        /// Sign with a licences delegation (a file `ztssh-ca delegate`
        /// wrote) instead of the root; needs --key.
        #[arg(long, requires = "key")]
        delegation: Option<PathBuf>,
        /// The delegated private key (`ztssh-ca keygen`).
        #[arg(long, requires = "delegation")]
        key: Option<PathBuf>,
        /// The revocation list in force: no licence is signed for a Noise
        /// or Sub-CA key it revokes (required with --delegation and no --dir).
        #[arg(long)]
        crl: Option<PathBuf>,
    },
    /// Make a key pair for a delegation: KEY (private, 0600) and KEY.pub.
    Keygen {
        /// Where to write the private key; the public key goes to KEY.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Delegate: the root certifies an online key to sign one kind of
    /// object (licences, access lists or revocation lists) until it expires.
    Delegate {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// licences, access or revocations.
        #[arg(long)]
        purpose: String,
        /// The delegated public key (KEY.pub from `ztssh-ca keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Validity, e.g. 90d (at most 366d).
        #[arg(long, default_value = "90d")]
        ttl: String,
        /// For licences: the server ids and host names it may license; for
        /// access: the servers its lists may grant; as globs (`web*`; repeatable).
        #[arg(long = "servers", num_args = 1..)]
        servers: Vec<String>,
        /// Where to write the delegation.
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
        /// Revoke a delegation (a file `ztssh-ca delegate` wrote), by its
        /// delegated key and its serial: everything it signed is refused.
        #[arg(long, value_name = "FILE")]
        delegation: Option<PathBuf>,
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
        /// Sign with a revocations delegation instead of the root (DIR
        /// may then be a copy of the CA's records without root.key); needs --key.
        #[arg(long, requires = "key")]
        delegation: Option<PathBuf>,
        /// The delegated private key.
        #[arg(long, requires = "delegation")]
        key: Option<PathBuf>,
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
    /// Sign the access list: principals, their OpenSSH public keys and
    /// optionally the servers and accounts each may use, from a TOML file
    /// (version goes up by one, from CA/access.version).
    Access {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The list as TOML: [principal.NAME] keys = [...], servers = [...],
        /// accounts = [...].
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the signed list.
        #[arg(long)]
        out: PathBuf,
        /// How long proxies may use it before it is stale.
        #[arg(long, default_value = "7d")]
        valid_for: String,
        /// Sign with an access delegation instead of the root (DIR may
        /// then be a copy of the CA's records without root.key); needs --key.
        #[arg(long, requires = "key")]
        delegation: Option<PathBuf>,
        /// The delegated private key.
        #[arg(long, requires = "delegation")]
        key: Option<PathBuf>,
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

/// The CA's keys (a root or host CA key file's seed, a PIN) pass through
/// this process's memory: no core dump may write them to disk, and no
/// other process of the same user may read them with ptrace or
/// /proc/PID/mem (a non-dumpable process is root's to inspect alone).
/// Done before anything is read; a failure is reported, not fatal, since
/// nothing has been read yet that it could leak.
fn harden() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        eprintln!(
            "ztssh-ca: warning: cannot turn core dumps off ({e}): a crash could write key material \
             to a core file; run `ulimit -c 0` first"
        );
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!(
            "ztssh-ca: warning: cannot make this process non-dumpable ({e}): other processes of \
             your user could read its memory"
        );
    }
}

fn main() -> ExitCode {
    harden();
    let cli = Cli::parse();
    signer::pkcs11::set_pin_file(cli.pin_file);
    signer::pq::set_passphrase_file(cli.passphrase_file);
    let result = match cli.cmd {
        Cmd::Generate(g) => return g.print::<Cli>(),
        cmd => run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztssh-ca: {}", cadir::shown(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command. Each checks the CA directory first (`cadir::check`),
/// and those that read and then write it hold its lock throughout.
fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        // Printed by main (ztssh_cli): they touch no CA directory.
        Cmd::Generate(_) => Ok(()),
        Cmd::Init { dir, pq, holder } => {
            cadir::create(&dir)?;
            let lock = cadir::lock(&dir, "init")?;
            match holder.spec() {
                None => init(lock.dir(), pq),
                Some(spec) => init_held(lock.dir(), spec, pq),
            }
        }
        Cmd::HostCa {
            dir,
            holder,
            renew,
            ttl,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "host-ca")?;
            let req = hostcert::HostCaRequest {
                spec: holder.spec(),
                renew,
                ttl,
            };
            hostcert::make_host_ca(lock.dir(), req, now())
        }
        Cmd::CheckSigner { dir, holder } => check_signer(dir.as_deref(), holder.spec()),
        Cmd::AuthorizeServer {
            dir,
            request,
            requests,
            out_dir,
            server_id,
            hostnames,
            ttl,
            out,
            delegation,
            key,
            crl,
        } => {
            let lock = match &dir {
                Some(dir) => {
                    cadir::check(dir)?;
                    Some(cadir::lock(dir, "authorize-server")?)
                }
                None => None,
            };
            let signer = batch::Signer::load(
                lock.as_ref().map(cadir::CaLock::dir),
                delegation.as_deref(),
                key.as_deref(),
                crl.as_deref(),
                now(),
            )?;
            match (requests, out_dir, request, server_id, out) {
                (Some(requests), Some(out_dir), ..) => {
                    batch::authorize_all(&signer, &requests, &out_dir, &ttl, now())
                }
                (None, _, Some(request), Some(server_id), Some(out)) => {
                    if hostnames.is_empty() {
                        bail!("give the host names clients use: --hostname NAME (repeatable)");
                    }
                    let job = batch::Job {
                        request: &request,
                        server_id,
                        hostnames,
                        out: &out,
                    };
                    batch::authorize(&signer, job, &ttl, now())
                }
                _ => bail!(
                    "give --request, --server-id, --hostname and --out, or --requests and --out-dir"
                ),
            }
        }
        Cmd::Keygen { out } => delegate::keygen(&out),
        Cmd::Delegate {
            dir,
            purpose,
            key,
            ttl,
            servers,
            out,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "delegate")?;
            let dir = lock.dir();
            let req = delegate::Request {
                purpose: &purpose,
                key: &key,
                ttl: &ttl,
                servers,
                out: &out,
            };
            delegate::delegate(dir, req, now())
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
            delegation,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "revoke")?;
            let dir = lock.dir();
            let flags = revoke::Flags {
                principal,
                server,
                serial,
                key,
                host_cert,
                noise_key,
                subca_key,
                licence,
                delegation,
            };
            revoke::Target::from_flags(dir, flags).and_then(|t| revoke::revoke(dir, &t))
        }
        Cmd::Crl {
            dir,
            out,
            ttl,
            delegation,
            key,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "crl")?;
            let dir = lock.dir();
            let signer = delegate::Delegated::load_given(
                delegation.as_deref(),
                key.as_deref(),
                ztssh_proto::delegation::Purpose::Revocations,
                dir,
                now(),
            )?;
            revoke::crl(dir, &out, &ttl, now(), signer.as_ref())
        }
        Cmd::SignHost {
            dir,
            host_key,
            hostnames,
            ttl,
            out,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "sign-host")?;
            hostcert::sign_host(lock.dir(), &host_key, &hostnames, &ttl, &out, now())
        }
        Cmd::KnownHosts { dir, pattern } => {
            cadir::check(&dir)?;
            hostcert::known_hosts(&dir, &pattern, now())
        }
        Cmd::Krl { dir, out } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "krl")?;
            revoke::krl(lock.dir(), &out, now())
        }
        Cmd::Access {
            dir,
            input,
            out,
            valid_for,
            delegation,
            key,
        } => {
            cadir::check(&dir)?;
            let lock = cadir::lock(&dir, "access")?;
            let dir = lock.dir();
            let signer = delegate::Delegated::load_given(
                delegation.as_deref(),
                key.as_deref(),
                ztssh_proto::delegation::Purpose::Access,
                dir,
                now(),
            )?;
            access::sign(dir, &input, &out, &valid_for, now(), signer.as_ref())
        }
        Cmd::Show { file, root, dir } => {
            let root = root.or_else(|| dir.map(|d| d.join("root.pub")));
            show::show(&file, root.as_deref(), now())
        }
    }
}

/// `init`: the root key pair and the list counter, in a directory
/// `cadir::create` made (0700) and locked.
fn init(dir: &Path, pq: bool) -> Result<()> {
    let key_path = dir.join("root.key");
    if key_path.exists() || dir.join("root.pub").exists() {
        bail!(
            "{} already holds a CA (root.key or root.pub)",
            cadir::shown_path(dir)
        );
    }
    let root = SigningKey::generate(&mut UnwrapErr(SysRng));
    let public = pq_half(dir, pq, root.public())?;
    keyfile::write_secret(&key_path, pem::ROOT_KEY, &root.to_seed()).map_err(anyhow::Error::msg)?;
    let pub_text = armor::encode(pem::ROOT_PUBLIC, &public.encode())?;
    keyfile::write_atomic(
        &dir.join("root.pub"),
        pub_text.as_bytes(),
        0o644,
        keyfile::Existing::Refuse,
    )?;
    revoke::init_versions(dir)?;
    println!("root CA created in {}", cadir::shown_path(dir));
    println!("  root.key  private, mode 0600: keep this directory offline");
    print_public(&public);
    Ok(())
}

/// For `init --pq`: a new ML-DSA-65 key, written encrypted to
/// root-mldsa.age before anything else, and the hybrid root key it makes
/// with `ed25519`. Without --pq: the Ed25519 root key.
fn pq_half(dir: &Path, pq: bool, ed25519: ztssh_proto::keys::PublicKey) -> Result<RootKey> {
    if !pq {
        return Ok(RootKey::Ed25519(ed25519));
    }
    let key = ztssh_proto::rootkey::MlDsaKey::generate(&mut UnwrapErr(SysRng));
    signer::pq::create(dir, &key)?;
    Ok(RootKey::Hybrid {
        ed25519,
        mldsa: key.public().into(),
    })
}

/// The lines `init` ends with: root.pub and what to do with it.
fn print_public(public: &RootKey) {
    if public.is_hybrid() {
        println!(
            "  {}  ML-DSA-65 half, encrypted with your passphrase (mode 0600): back it up with \
             the directory; the post-quantum half is only as strong as that passphrase",
            signer::pq::KEY_FILE
        );
    }
    println!(
        "  root.pub  {} root, fingerprint {}: pin it on every proxy and sidecar",
        public.algorithm(),
        public.fingerprint()
    );
}

/// `init --agent` / `init --pkcs11`: a root whose private key never exists
/// on disk. The key is found in the agent, or found or created
/// (non-extractable) in the token; it signs once here, and `root.pub` and
/// `ca.toml` record it.
fn init_held(dir: &Path, spec: signer::Spec, pq: bool) -> Result<()> {
    if dir.join("root.pub").exists() || dir.join(caconfig::FILE).exists() {
        bail!(
            "{} already holds a CA (root.pub or ca.toml)",
            cadir::shown_path(dir)
        );
    }
    let held: Box<dyn signer::Signer> = match &spec {
        signer::Spec::Pkcs11 { module, token, key } => Box::new(
            signer::pkcs11::Pkcs11Signer::open_for_ca(module, token, key)?,
        ),
        other => other.open(pem::ROOT_KEY)?,
    };
    let root = held.root_public()?;
    held.sign(b"ztssh-ca init probe\0")?;
    let public = match root {
        RootKey::Ed25519(k) => pq_half(dir, pq, k)?,
        sk if !pq => sk,
        _ => bail!(
            "{} is a FIDO security key: a hybrid root's Ed25519 half must be a plain Ed25519 \
             key (a file, ssh-agent or a PKCS#11 token); drop --pq, or use another key",
            held.holder()
        ),
    };
    let pub_text = armor::encode(pem::ROOT_PUBLIC, &public.encode())?;
    keyfile::write_atomic(
        &dir.join("root.pub"),
        pub_text.as_bytes(),
        0o644,
        keyfile::Existing::Refuse,
    )?;
    let config = caconfig::CaConfig {
        root: spec,
        host_ca: None,
        caps: caconfig::Caps::default(),
    };
    config.save(dir)?;
    revoke::init_versions(dir)?;
    println!(
        "root CA created in {}, its key held by {}",
        cadir::shown_path(dir),
        held.holder()
    );
    println!("  ca.toml   where the root key is; no private key is in this directory");
    print_public(&public);
    println!(
        "  sign-host needs a host CA of its own: ztssh-ca host-ca --dir {}",
        cadir::shown_path(dir)
    );
    Ok(())
}

/// `check-signer`: one test signature, checked, and what it was.
fn check_signer(dir: Option<&Path>, spec: Option<signer::Spec>) -> Result<()> {
    let held = match (spec, dir) {
        (Some(spec), _) => spec.open(pem::ROOT_KEY)?,
        (None, Some(dir)) => {
            cadir::check(dir)?;
            signer::root(dir)?
        }
        (None, None) => bail!("give --dir, --agent or --pkcs11"),
    };
    let sig = held.sign(b"ztssh-ca check-signer probe\0")?;
    print!(
        "{} signed with {} ({}): the signature verifies",
        held.holder(),
        sig.algorithm.name(),
        held.public().fingerprint(ssh_key::HashAlg::Sha256)
    );
    match sig.sk {
        Some(a) => println!(
            "; user presence yes, flags {:#04x}, counter {}",
            a.flags, a.counter
        ),
        None => println!(),
    }
    Ok(())
}
