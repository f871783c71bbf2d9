//! `ztssh-ca sign-host` and `ztssh-ca known-hosts`: OpenSSH host
//! certificates for sshd's `HostCertificate`, signed by the host CA key
//! derived from the root (`ztssh_proto::hostca`), and the known_hosts line
//! that makes clients trust them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::hostca::{DEFAULT_HOST_CERT_TTL, HostCa, HostCertError, MAX_HOST_CERT_TTL};
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration};

/// Largest host public key file read (an OpenSSH public key is one line).
const MAX_HOST_KEY_FILE: u64 = 64 * 1024;

/// The default `--ttl` of `sign-host`, as text for clap.
pub fn default_ttl() -> String {
    format!("{}d", DEFAULT_HOST_CERT_TTL / 86_400)
}

fn host_ca(dir: &Path) -> Result<HostCa> {
    let root = keyfile::read_signing_key(&dir.join("root.key"), pem::ROOT_KEY)
        .map_err(anyhow::Error::msg)?;
    Ok(HostCa::from_root(&root))
}

fn read_host_key(path: &Path) -> Result<String> {
    let bytes = keyfile::read_regular(path, MAX_HOST_KEY_FILE).map_err(anyhow::Error::msg)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not text", path.display()))
}

/// `sign-host`: certifies the host key in `host_key` for `hostnames` and
/// writes the certificate to `out` atomically (mode 0644).
pub fn sign_host(
    dir: &Path,
    host_key: &Path,
    hostnames: &[String],
    ttl: &str,
    out: &Path,
    now: u64,
) -> Result<()> {
    let Some(ttl) = parse_duration(ttl).filter(|t| *t > 0) else {
        bail!("--ttl {ttl:?} is not a duration like 30d, 12h or 90m");
    };
    if ttl > MAX_HOST_CERT_TTL {
        bail!(
            "--ttl {} is longer than the {} maximum: renew host certificates instead \
             (docs/OPERATOR.md, host certificates)",
            human(ttl),
            human(MAX_HOST_CERT_TTL)
        );
    }
    let key = read_host_key(host_key)?;
    let ca = host_ca(dir)?;
    let cert = ca
        .certify_openssh(&key, hostnames, now, ttl, &mut UnwrapErr(SysRng))
        .map_err(|e| match e {
            HostCertError::BadHostKey(_) => anyhow::anyhow!("{}: {e}", host_key.display()),
            other => other.into(),
        })?;
    keyfile::write_atomic(out, cert.text.as_bytes(), 0o644, keyfile::Existing::Replace)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "host certificate serial {} for {} ({}) valid {} written to {}",
        cert.serial,
        hostnames.join(", "),
        cert.algorithm,
        human(ttl),
        out.display()
    );
    println!(
        "  sshd_config: HostCertificate {}  (then reload sshd)",
        out.display()
    );
    Ok(())
}

/// `known-hosts`: prints the `@cert-authority` line for `pattern`.
pub fn known_hosts(dir: &Path, pattern: &str) -> Result<()> {
    let line = host_ca(dir)?.known_hosts_line(pattern)?;
    println!("{line}");
    Ok(())
}
