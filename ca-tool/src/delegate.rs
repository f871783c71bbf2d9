//! `delegate`, `keygen` and the delegated signer: the root certifies an
//! online key for one purpose (`licences`, `access`, `revocations`), so
//! the daily licence job and an on-call ban need no root.
//!
//! Every delegation the root signs is logged in `CA/issued.log`:
//!
//! ```text
//! TIME delegation SERIAL purpose=P key=HEX servers=G1,G2 not_before=N not_after=N
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::cert::Serial;
use ztssh_proto::delegation::{Delegation, DelegationBody, Purpose, check_glob};
use ztssh_proto::keys::{PublicKey, SigningKey, hex, to_array};
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration, when};

use crate::issuance;

/// Longest delegation the root signs: a year. Rotate well before.
pub const MAX_DELEGATION_TTL: u64 = 366 * 86_400;

/// A delegated key and its delegation, ready to sign.
pub struct Delegated {
    key: SigningKey,
    /// The root's delegation to the key.
    pub delegation: Delegation,
}

impl Delegated {
    /// [`Self::load`] when both `--delegation` and `--key` are given (clap
    /// requires them together); `None` signs with the root.
    pub fn load_given(
        delegation: Option<&Path>,
        key: Option<&Path>,
        purpose: Purpose,
        dir: &Path,
        now: u64,
    ) -> Result<Option<Self>> {
        match (delegation, key) {
            (Some(d), Some(k)) => Self::load(d, k, purpose, Some(dir), now).map(Some),
            _ => Ok(None),
        }
    }

    /// Loads `--delegation FILE --key FILE` and checks they belong
    /// together, that the delegation is for `purpose` and still valid at
    /// `now`, and, when a CA directory with `root.pub` is given, that its
    /// root signed it.
    pub fn load(
        delegation: &Path,
        key: &Path,
        purpose: Purpose,
        dir: Option<&Path>,
        now: u64,
    ) -> Result<Self> {
        let delegation = read_delegation(delegation, dir)?;
        let key = keyfile::read_signing_key(key, pem::DELEGATED_KEY).map_err(anyhow::Error::msg)?;
        let b = &delegation.body;
        if key.public() != b.key {
            bail!(
                "the key file is not the delegated key of this delegation (it delegates {}, the \
                 key is {})",
                b.key.fingerprint(),
                key.public().fingerprint()
            );
        }
        if b.purpose != purpose {
            bail!(
                "this delegation is for {}, not {purpose}: every proxy would refuse what it signs",
                b.purpose
            );
        }
        if now >= b.not_after || now < b.not_before {
            bail!(
                "this delegation is valid from {} to {}: ask the root for a new one \
                 (ztssh-ca delegate; docs/OPERATOR.md, rotating a delegation)",
                when(b.not_before, now),
                when(b.not_after, now)
            );
        }
        Ok(Self { key, delegation })
    }

    /// A copy of the delegated signing key.
    pub fn key_copy(&self) -> SigningKey {
        SigningKey::from_seed(&self.key.to_seed())
    }
}

/// Reads a delegation file. With a CA directory holding `root.pub`, the
/// root's signature is checked; without one, the signature is checked
/// under the issuer it names (the proxies check their pinned root).
pub fn read_delegation(path: &Path, dir: Option<&Path>) -> Result<Delegation> {
    let bytes = keyfile::read_pem(path, pem::DELEGATION).map_err(anyhow::Error::msg)?;
    let root = match dir.map(|d| d.join("root.pub")).filter(|p| p.exists()) {
        Some(p) => keyfile::read_root_public(&p).map_err(anyhow::Error::msg)?,
        None => Delegation::decode(&bytes)
            .with_context(|| format!("{} is not a delegation", path.display()))?
            .body
            .issuer
            .into(),
    };
    Delegation::decode_verified(&bytes, &root)
        .with_context(|| format!("{} is not a delegation this root signed", path.display()))
}

/// `keygen --out KEY`: a delegated key pair, KEY (0600) and KEY.pub.
pub fn keygen(out: &Path) -> Result<()> {
    let key = SigningKey::generate(&mut UnwrapErr(SysRng));
    keyfile::write_secret(out, pem::DELEGATED_KEY, &key.to_seed())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let pub_path = out.with_extension("pub");
    let text = ztssh_proto::armor::encode(pem::DELEGATED_PUBLIC, &key.public().0)?;
    keyfile::write_atomic(&pub_path, text.as_bytes(), 0o644, keyfile::Existing::Refuse)?;
    println!(
        "delegated key {} written to {} (private, 0600) and {}: have the root delegate it \
         (ztssh-ca delegate --key {})",
        key.public().fingerprint(),
        out.display(),
        pub_path.display(),
        pub_path.display()
    );
    Ok(())
}

/// What `delegate` is asked for.
pub struct Request<'a> {
    /// `--purpose`.
    pub purpose: &'a str,
    /// `--key`: the delegated public key file.
    pub key: &'a Path,
    /// `--ttl`.
    pub ttl: &'a str,
    /// `--servers`.
    pub servers: Vec<String>,
    /// `--out`.
    pub out: &'a Path,
}

/// The root signs a delegation of `purpose` to `key` for `ttl` from `now`,
/// recorded in the audit log before it exists anywhere else.
pub fn certify(
    dir: &Path,
    purpose: Purpose,
    key: PublicKey,
    servers: Vec<String>,
    ttl: u64,
    now: u64,
) -> Result<Delegation> {
    let held = crate::signer::root(dir)?;
    let root = crate::signer::RootSigning::new(held.as_ref())?;
    let delegation = DelegationBody {
        serial: Serial::random(&mut UnwrapErr(SysRng)),
        purpose,
        key,
        servers,
        not_before: now,
        not_after: now + ttl,
        issuer: ztssh_proto::rootkey::RootSigner::root_key(&root).id(),
    }
    .sign_with(&root)?;
    let b = &delegation.body;
    issuance::audit(
        dir,
        now,
        "delegation",
        &format!(
            "serial={} purpose={} key={} not_before={} not_after={}",
            b.serial,
            b.purpose,
            hex(&b.key.0),
            b.not_before,
            b.not_after
        ),
        &root.holder(),
    )?;
    Ok(delegation)
}

/// `delegate`: the root signs a delegation, logged before it is written.
pub fn delegate(dir: &Path, req: Request<'_>, now: u64) -> Result<()> {
    let Some(purpose) = Purpose::parse(req.purpose) else {
        bail!(
            "--purpose {:?} is not one of licences, access, revocations",
            req.purpose
        );
    };
    let Some(ttl) = parse_duration(req.ttl).filter(|t| *t > 0 && *t <= MAX_DELEGATION_TTL) else {
        bail!(
            "--ttl {:?} must be a duration like 90d, at most {}",
            req.ttl,
            human(MAX_DELEGATION_TTL)
        );
    };
    if !req.servers.is_empty() && purpose == Purpose::Revocations {
        bail!(
            "--servers limits a licences or access delegation; a revocations delegation covers \
             every server (a list is for the whole fleet)"
        );
    }
    for g in &req.servers {
        check_glob(g).with_context(|| format!("--servers {g:?}"))?;
    }
    if purpose == Purpose::HostCa {
        bail!("a host CA of its own is made with `ztssh-ca host-ca --dir DIR`, not delegate");
    }
    // Under a hybrid root every verifier refuses a licences, access or
    // revocations delegation (verify_chain: the delegated key is Ed25519
    // alone): refused here rather than issued to be refused everywhere
    // (the issue 25 review's F3).
    let pinned = dir.join("root.pub");
    if pinned.exists()
        && ztssh_keyfile::read_root_public(&pinned)
            .map_err(anyhow::Error::msg)?
            .is_hybrid()
    {
        bail!(
            "this root is hybrid (Ed25519 + ML-DSA-65), and every proxy and sidecar pinning it \
             refuses what a delegated Ed25519 key signs: sign {purpose} with the root itself \
             (delegations under a hybrid root are not built yet)"
        );
    }
    let cap = crate::caconfig::CaConfig::load(dir)?.caps.delegation;
    if ttl > cap {
        crate::caconfig::refuse_above_cap("delegation", ttl, cap, Some(dir))?;
    }
    let bytes = keyfile::read_pem(req.key, pem::DELEGATED_PUBLIC).map_err(anyhow::Error::msg)?;
    let key = PublicKey(to_array(&bytes, "delegated public key")?);
    let delegation = certify(dir, purpose, key, req.servers, ttl, now)?;
    let b = &delegation.body;
    issuance::append(
        dir,
        &format!(
            "{now} delegation {} purpose={} key={} servers={} not_before={} not_after={}\n",
            b.serial,
            b.purpose,
            hex(&b.key.0),
            if b.servers.is_empty() {
                "*".into()
            } else {
                b.servers.join(",")
            },
            b.not_before,
            b.not_after
        ),
    )?;
    let text = ztssh_proto::armor::encode(pem::DELEGATION, delegation.encoded())?;
    keyfile::write_atomic(req.out, text.as_bytes(), 0o644, keyfile::Existing::Replace)?;
    println!(
        "delegation {} lets key {} sign {}{} for {}, written to {}",
        b.serial,
        b.key.fingerprint(),
        b.purpose,
        if b.servers.is_empty() {
            String::new()
        } else {
            format!(" for servers {}", b.servers.join(", "))
        },
        human(ttl),
        req.out.display()
    );
    Ok(())
}
