//! `ztssh-ca sign-host`, `ztssh-ca known-hosts` and `ztssh-ca host-ca`:
//! OpenSSH host certificates for sshd's `HostCertificate`, and the
//! known_hosts line that makes clients trust them.
//!
//! The host CA key is either derived from the root's seed
//! (`ztssh_proto::hostca`; every CA made before `host-ca` existed, and
//! file roots that never ran it), or a key of its own (`host-ca`: a file,
//! an ssh-agent key or a PKCS#11 key) which the root certifies with a
//! delegation of purpose `host-ca`. A root in hardware has no seed to
//! derive from, so it needs the second. Files in the CA directory:
//!
//! - `host-ca.pub`: the host CA's OpenSSH public key (what `known-hosts`
//!   prints, checked against the certification);
//! - `host-ca.delegation`: the root's certification of it;
//! - `host-ca.key` (0600), for a file host CA only;
//! - `ca.toml`'s `[host_ca]`: where the key is held.

use std::path::Path;

use anyhow::{Context, Result, bail};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::delegation::{Delegation, Purpose};
use ztssh_proto::hostca::{DEFAULT_HOST_CERT_TTL, HostCa, HostCertError, MAX_HOST_CERT_TTL};
use ztssh_proto::keys::SigningKey;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration, when};

use crate::caconfig::CaConfig;
use crate::signer::{self, HostCaSigner, Spec};

/// Largest host public key file read (an OpenSSH public key is one line).
const MAX_HOST_KEY_FILE: u64 = 64 * 1024;
/// The host CA's public key, its certification and (file) private key.
const HOST_CA_PUB: &str = "host-ca.pub";
const HOST_CA_CERT: &str = "host-ca.delegation";
const HOST_CA_KEY: &str = "host-ca.key";

/// The default `--ttl` of `sign-host`, as text for clap.
pub fn default_ttl() -> String {
    format!("{}d", DEFAULT_HOST_CERT_TTL / 86_400)
}

/// The host CA, ready to sign: its own key when `ca.toml` names one,
/// else derived from a file root.
fn host_ca(dir: &Path, config: &CaConfig) -> Result<(HostCa, String)> {
    if let Some(spec) = &config.host_ca {
        let held = spec.open(pem::DELEGATED_KEY)?;
        let recorded = host_ca_public(dir)?;
        if held.public().key_data() != recorded.key_data() {
            bail!(
                "{} holds key {}, not the host CA {} that {} names",
                held.holder(),
                held.public().fingerprint(ssh_key::HashAlg::Sha256),
                recorded.fingerprint(ssh_key::HashAlg::Sha256),
                dir.join(HOST_CA_PUB).display()
            );
        }
        let holder = held.holder();
        return Ok((HostCa::held(Box::new(HostCaSigner(held))), holder));
    }
    let Spec::File(path) = &config.root else {
        bail!(
            "this CA's root is held by {}, so no host CA can be derived from its seed: make a \
             host CA of its own once, `ztssh-ca host-ca --dir {}` (a file, --agent or --pkcs11), \
             then sign hosts as before",
            config.root.describe(),
            dir.display()
        );
    };
    let root = keyfile::read_signing_key(path, pem::ROOT_KEY).map_err(anyhow::Error::msg)?;
    Ok((
        HostCa::from_root(&root),
        format!("derived:{}", path.display()),
    ))
}

/// The host CA's public key: `host-ca.pub`, checked against the root's
/// certification, or the key derived from the root's seed.
pub fn host_ca_public(dir: &Path) -> Result<ssh_key::PublicKey> {
    let config = CaConfig::load(dir)?;
    if config.host_ca.is_none() {
        return Ok(host_ca(dir, &config)?.0.public_key());
    }
    let text = keyfile::read_regular(&dir.join(HOST_CA_PUB), MAX_HOST_KEY_FILE)
        .map_err(anyhow::Error::msg)?;
    let text = String::from_utf8(text).context("host-ca.pub is not text")?;
    let mut key = ssh_key::PublicKey::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH public key", HOST_CA_PUB))?;
    let cert = certification(dir)?;
    let ssh_key::public::KeyData::Ed25519(k) = key.key_data() else {
        bail!("{HOST_CA_PUB} is not an Ed25519 key");
    };
    if cert.body.key.0 != k.0 {
        bail!(
            "{} certifies {}, not the key in {}: the CA directory was altered; make the host CA \
             again (ztssh-ca host-ca)",
            HOST_CA_CERT,
            cert.body.key.fingerprint(),
            HOST_CA_PUB
        );
    }
    key.set_comment("ztssh-host-ca");
    Ok(key)
}

/// The root's certification of the host CA, verified under `root.pub`.
fn certification(dir: &Path) -> Result<Delegation> {
    let path = dir.join(HOST_CA_CERT);
    let bytes = keyfile::read_pem(&path, pem::DELEGATION).map_err(anyhow::Error::msg)?;
    let root = keyfile::read_root_public(&dir.join("root.pub")).map_err(anyhow::Error::msg)?;
    let d = Delegation::decode_verified(&bytes, &root)
        .with_context(|| format!("{} is not a certification this root signed", path.display()))?;
    if d.body.purpose != Purpose::HostCa {
        bail!(
            "{} is a {} delegation, not a host CA's",
            path.display(),
            d.body.purpose
        );
    }
    Ok(d)
}

/// Refuses a host CA whose certification by the root has expired, or
/// that the CA's records revoke (`revoke --delegation host-ca.delegation`):
/// the root no longer vouches for it, so it signs no more hosts.
fn in_force(dir: &Path, now: u64) -> Result<()> {
    let cert = certification(dir)?;
    let b = &cert.body;
    if now >= b.not_after || now < b.not_before {
        bail!(
            "the root's certification of this host CA is valid from {} to {}: renew it with \
             ztssh-ca host-ca --dir {} --renew",
            when(b.not_before, now),
            when(b.not_after, now),
            crate::cadir::shown_path(dir)
        );
    }
    if let Some(why) = crate::revoke::recorded(dir)?.revoked_delegation(b) {
        bail!(
            "this host CA is revoked in the CA's records ({why}, host-ca.delegation serial {}): \
             it signs no more hosts; make a new one with ztssh-ca host-ca --dir {} (a key \
             file: move host-ca.key aside first), then give clients its known-hosts line",
            b.serial,
            crate::cadir::shown_path(dir)
        );
    }
    Ok(())
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
    let config = CaConfig::load(dir)?;
    if ttl > config.caps.host_certificate {
        crate::caconfig::refuse_above_cap(
            "host certificate",
            ttl,
            config.caps.host_certificate,
            Some(dir),
        )?;
    }
    if config.host_ca.is_some() {
        in_force(dir, now)?;
    }
    let key = read_host_key(host_key)?;
    let (ca, holder) = host_ca(dir, &config)?;
    let cert = ca
        .certify_openssh(&key, hostnames, now, ttl, &mut UnwrapErr(SysRng))
        .map_err(|e| match e {
            HostCertError::BadHostKey(_) => anyhow::anyhow!("{}: {e}", host_key.display()),
            other => other.into(),
        })?;
    crate::issuance::audit(
        dir,
        now,
        "host-certificate",
        &format!(
            "serial={} hostnames={} not_before={} not_after={}",
            cert.serial,
            hostnames.join(","),
            now.saturating_sub(ztssh_proto::time::CLOCK_SKEW),
            now + ttl
        ),
        &holder,
    )?;
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
pub fn known_hosts(dir: &Path, pattern: &str, now: u64) -> Result<()> {
    let key = host_ca_public(dir)?;
    if CaConfig::load(dir)?.host_ca.is_some() {
        let cert = certification(dir)?;
        // A revoked host CA gets no line to trust it: the line clients
        // need is the one that makes ssh refuse it.
        if let Some(why) = crate::revoke::recorded(dir)?.revoked_delegation(&cert.body) {
            let text = key.to_openssh().map_err(|e| anyhow::anyhow!(e))?;
            bail!(
                "this host CA is revoked in the CA's records ({why}, host-ca.delegation serial {}): \
                 clients must not trust it. Give them this line for their known_hosts instead, so \
                 that ssh refuses every host certificate it signed:\n@revoked * {text}\n\
                 then make a new host CA with ztssh-ca host-ca --dir {} and print its line",
                cert.body.serial,
                crate::cadir::shown_path(dir)
            );
        }
        if now >= cert.body.not_after {
            eprintln!(
                "ztssh-ca: the root's certification of this host CA expired {}: renew it with \
                 ztssh-ca host-ca --dir {} --renew",
                when(cert.body.not_after, now),
                dir.display()
            );
        }
    }
    let bad = pattern.is_empty()
        || pattern
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#');
    if bad {
        return Err(HostCertError::BadPattern(pattern.to_owned()).into());
    }
    let text = key.to_openssh().map_err(|e| anyhow::anyhow!(e))?;
    println!("@cert-authority {pattern} {text}");
    Ok(())
}

/// What `host-ca` is asked for.
pub struct HostCaRequest {
    /// Where the key is to be held; `None`: a new key file `host-ca.key`.
    pub spec: Option<Spec>,
    /// Keep the key `ca.toml` names and only certify it again.
    pub renew: bool,
    /// How long the root's certification lasts.
    pub ttl: Option<String>,
}

/// `host-ca`: a host CA key of its own, certified by the root.
pub fn make_host_ca(dir: &Path, req: HostCaRequest, now: u64) -> Result<()> {
    let mut config = CaConfig::load(dir)?;
    let cap = config.caps.delegation;
    let ttl = match &req.ttl {
        Some(t) => parse_duration(t)
            .filter(|t| *t > 0)
            .with_context(|| format!("--ttl {t:?} is not a duration like 90d"))?,
        None => cap,
    };
    if ttl > cap {
        crate::caconfig::refuse_above_cap("delegation", ttl, cap, Some(dir))?;
    }
    let spec = match (req.renew, req.spec, &config.host_ca) {
        (true, None, Some(spec)) => spec.clone(),
        (true, ..) => {
            bail!("--renew certifies the host CA ca.toml names again; give no key with it")
        }
        (false, Some(spec), _) => spec,
        (false, None, _) => {
            let path = dir.join(HOST_CA_KEY);
            let key = SigningKey::generate(&mut UnwrapErr(SysRng));
            keyfile::write_secret(&path, pem::DELEGATED_KEY, &key.to_seed())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Spec::File(path)
        }
    };
    let held = match &spec {
        Spec::Pkcs11 { module, token, key } => Box::new(signer::pkcs11::Pkcs11Signer::open_for_ca(
            module, token, key,
        )?),
        other => other.open(pem::DELEGATED_KEY)?,
    };
    let public = held
        .ed25519_public()
        .context("a host CA key must be Ed25519 today")?;
    let root = keyfile::read_root_public(&dir.join("root.pub")).map_err(anyhow::Error::msg)?;
    if public == root.id() {
        bail!(
            "{} holds the root key itself: a host CA is a key of its own, so that signing hosts \
             never needs the root; give another key (a new --key label, another agent key)",
            crate::cadir::shown(&held.holder())
        );
    }
    // One signature now, so a key that cannot sign fails here, not at the
    // first host.
    held.sign(b"ztssh-ca host-ca probe\0")?;
    let cert = crate::delegate::certify(dir, Purpose::HostCa, public, Vec::new(), ttl, now)?;
    let text = ztssh_proto::armor::encode(pem::DELEGATION, cert.encoded())?;
    keyfile::write_atomic(
        &dir.join(HOST_CA_CERT),
        text.as_bytes(),
        0o644,
        keyfile::Existing::Replace,
    )?;
    let mut line = ssh_key::PublicKey::new(held.public().key_data().clone(), "ztssh-host-ca")
        .to_openssh()
        .map_err(|e| anyhow::anyhow!(e))?;
    line.push('\n');
    keyfile::write_atomic(
        &dir.join(HOST_CA_PUB),
        line.as_bytes(),
        0o644,
        keyfile::Existing::Replace,
    )?;
    let was_derived = config.host_ca.is_none();
    config.host_ca = Some(spec);
    config.save(dir)?;
    println!(
        "host CA {} held by {}, certified by the root until {} (serial {})",
        held.public().fingerprint(ssh_key::HashAlg::Sha256),
        crate::cadir::shown(&held.holder()),
        when(cert.body.not_after, now),
        cert.body.serial
    );
    if !req.renew {
        println!(
            "  clients trust it with: ztssh-ca known-hosts --dir {}{}",
            crate::cadir::shown_path(dir),
            if was_derived {
                " (replace the derived host CA's line: certificates it signed are trusted \
                 only while that line stays in known_hosts)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
