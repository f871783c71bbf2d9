//! `authorize-server`: one licence, or a batch (every request in a
//! directory, one licence each, for a daily CI job), signed by the root or
//! by a `licences` delegation. No licence is ever signed for a Noise or
//! Sub-CA key that the CA's records or the list in force (`--crl`) revoke,
//! so a stolen proxy key is not re-licensed the next morning.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::cert::{LicenceBody, LicenceRequest, Serial};
use ztssh_proto::crl::Crl;
use ztssh_proto::delegation::{self, Purpose};
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration};

use crate::delegate::Delegated;
use crate::{issuance, revoke};

/// Longest licence the CA will sign: 24 h, as `docs/THREAT_MODEL.md`
/// assumes (a stolen proxy identity that no list reaches dies within a day).
const MAX_LICENCE_TTL: u64 = 86_400;
/// Most requests one batch signs.
const MAX_BATCH: usize = 10_000;

/// Who signs, and what it must check first.
pub struct Signer<'a> {
    dir: Option<&'a Path>,
    key: Box<dyn crate::signer::Signer>,
    delegated: Option<Delegated>,
    /// The longest licence this CA signs (`ca.toml`'s caps.licence).
    cap: u64,
    list: Option<(Crl, PathBuf)>,
}

impl<'a> Signer<'a> {
    /// The root (from `dir`), or the delegated key; `crl` is the list in
    /// force, verified under the root (`dir`'s root.pub, or the
    /// delegation's issuer).
    pub fn load(
        dir: Option<&'a Path>,
        delegation: Option<&Path>,
        key: Option<&Path>,
        crl: Option<&Path>,
        now: u64,
    ) -> Result<Self> {
        let (key, delegated, root) = match (delegation, key) {
            (Some(d), Some(k)) => {
                let d = Delegated::load(d, k, Purpose::Licences, dir, now)?;
                let root = d.delegation.body.issuer.into();
                let key: Box<dyn crate::signer::Signer> =
                    Box::new(crate::signer::file::FileSigner::new(d.key_copy(), k));
                (key, Some(d), root)
            }
            _ => {
                let Some(dir) = dir else {
                    bail!("give --dir CA (the root signs), or --delegation FILE --key FILE");
                };
                let root = crate::signer::root(dir)?;
                let public =
                    keyfile::read_root_public(&dir.join("root.pub")).map_err(anyhow::Error::msg)?;
                (root, None, public)
            }
        };
        if delegated.is_some() && dir.is_none() && crl.is_none() {
            bail!(
                "a delegated signer needs the revocation list in force (--crl crl.pem) or the CA's \
                 records (--dir): it must never license a key a revocation names"
            );
        }
        let list = match crl {
            Some(path) => {
                let text = keyfile::read_regular(path, keyfile::MAX_PEM_FILE)
                    .map_err(anyhow::Error::msg)?;
                let crl = ztssh_proto::trust::verify_pem(&text, &root, now)
                    .with_context(|| format!("{}", path.display()))?;
                if let Some(d) = &delegated {
                    d.delegation
                        .check_in_force(Some(&crl.revoked), now)
                        .with_context(|| {
                            format!(
                                "{} revokes this signer's delegation: ask the root for a new one",
                                path.display()
                            )
                        })?;
                }
                Some((crl, path.to_owned()))
            }
            None => None,
        };
        let cap = match dir {
            Some(dir) => crate::caconfig::CaConfig::load(dir)?.caps.licence,
            None => MAX_LICENCE_TTL,
        };
        Ok(Self {
            dir,
            key,
            delegated,
            list,
            cap,
        })
    }

    fn refuse_revoked(&self, req: &LicenceRequest) -> Result<()> {
        if let Some(dir) = self.dir {
            revoke::refuse_revoked_proxy_keys(dir, &req.noise_key, &req.subca_key.0)?;
        }
        if let Some((crl, path)) = &self.list {
            revoke::refuse_listed_proxy_keys(
                &crl.revoked,
                &path.display().to_string(),
                &req.noise_key,
                &req.subca_key.0,
            )?;
        }
        Ok(())
    }
}

/// One licence to sign.
pub struct Job<'p> {
    /// The request file.
    pub request: &'p Path,
    /// The server id.
    pub server_id: String,
    /// Its host names.
    pub hostnames: Vec<String>,
    /// Where the licence goes.
    pub out: &'p Path,
}

fn parse_ttl(ttl: &str, signer: &Signer<'_>) -> Result<u64> {
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
    if ttl > signer.cap {
        crate::caconfig::refuse_above_cap("licence", ttl, signer.cap, signer.dir)?;
    }
    Ok(ttl)
}

/// Signs one licence.
pub fn authorize(signer: &Signer<'_>, job: Job<'_>, ttl: &str, now: u64) -> Result<()> {
    let ttl = parse_ttl(ttl, signer)?;
    sign_one(signer, job, ttl, now)
}

fn sign_one(signer: &Signer<'_>, job: Job<'_>, ttl: u64, now: u64) -> Result<()> {
    let req_bytes = keyfile::read_pem(job.request, pem::REQUEST).map_err(anyhow::Error::msg)?;
    let req = LicenceRequest::decode_verified(&req_bytes)
        .with_context(|| format!("{} is not a valid licence request", job.request.display()))?;
    signer.refuse_revoked(&req)?;
    let mut not_after = now + ttl;
    if let Some(d) = &signer.delegated {
        let b = &d.delegation.body;
        // The chain's own rule, asked before signing: every verifier
        // would refuse a licence outside the delegation's globs.
        if let Err(why) = d
            .delegation
            .check_licence_names(&job.server_id, &job.hostnames)
        {
            bail!(
                "not signed: every proxy and sidecar would refuse this licence, since {why}; \
                 license only names inside the delegation (--server-id, --hostname), or ask the \
                 root for a delegation that covers them (ztssh-ca delegate --servers)"
            );
        }
        // Never past the delegation: proxies would stop at its end anyway.
        not_after = not_after.min(b.not_after);
    }
    let body = LicenceBody {
        serial: Serial::random(&mut UnwrapErr(SysRng)),
        server_id: job.server_id,
        hostnames: job.hostnames,
        subca_key: req.subca_key,
        noise_key: req.noise_key,
        not_before: now,
        not_after,
        issuer: signer.key.ed25519_public()?,
    };
    let root = crate::signer::RootSigning::new(signer.key.as_ref())?;
    let licence = body.sign_with(&root)?;
    // Every proxy would refuse to serve a licence that does not fit the
    // handshake: refused before it is recorded or written (the issue 25
    // review's F4).
    let delegation_len = signer
        .delegated
        .as_ref()
        .map(|d| d.delegation.encoded().len());
    let hybrid = ztssh_proto::rootkey::RootSigner::root_key(&root).is_hybrid();
    if !ztssh_proto::handshake::licence_fits_message_2(
        licence.encoded().len(),
        delegation_len,
        hybrid,
    ) {
        bail!(
            "not signed: the licence ({} bytes{}) is too long for the handshake's message 2, \
             so no proxy would serve it; license fewer or shorter host names (--hostname)",
            licence.encoded().len(),
            delegation_len.map_or_else(String::new, |d| format!(", with a {d}-byte delegation"))
        );
    }
    // Recorded before it exists anywhere else.
    if let Some(dir) = signer.dir {
        issuance::append(dir, &issuance::line(&licence.body, now))?;
        let b = &licence.body;
        issuance::audit(
            dir,
            now,
            "licence",
            &format!(
                "serial={} server={} not_before={} not_after={}",
                b.serial, b.server_id, b.not_before, b.not_after
            ),
            &root.holder(),
        )?;
    }
    let text = delegation::encode_pem(
        pem::LICENCE,
        licence.encoded(),
        signer.delegated.as_ref().map(|d| &d.delegation),
    )?;
    keyfile::write_atomic(job.out, text.as_bytes(), 0o644, keyfile::Existing::Replace)?;
    println!(
        "licence {} for {} ({}) valid {} written to {}{}",
        licence.body.serial,
        licence.body.server_id,
        licence.body.hostnames.join(", "),
        human(not_after - now),
        job.out.display(),
        match &signer.delegated {
            Some(d) => format!(" (signed under delegation {})", d.delegation.body.serial),
            None => String::new(),
        }
    );
    Ok(())
}

/// Signs every `SERVER_ID.pem` request in `requests` into `out_dir`. One
/// bad or revoked request is reported and skipped; the others are signed;
/// the command fails at the end if any was skipped.
pub fn authorize_all(
    signer: &Signer<'_>,
    requests: &Path,
    out_dir: &Path,
    ttl: &str,
    now: u64,
) -> Result<()> {
    let ttl = parse_ttl(ttl, signer)?;
    let mut names = Vec::new();
    let entries = std::fs::read_dir(requests)
        .with_context(|| format!("cannot read {}", requests.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem") {
            names.push(path);
        }
        if names.len() > MAX_BATCH {
            bail!("more than {MAX_BATCH} requests in {}", requests.display());
        }
    }
    names.sort();
    let mut failed = Vec::new();
    for path in &names {
        let Some(server_id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            failed.push(format!("{}: not a UTF-8 name", path.display()));
            continue;
        };
        let hosts_path = path.with_extension("hosts");
        let hostnames = if hosts_path.exists() {
            let text = keyfile::read_regular(&hosts_path, 64 * 1024).map_err(anyhow::Error::msg)?;
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        } else {
            vec![server_id.clone()]
        };
        let out = out_dir.join(format!("{server_id}.pem"));
        let job = Job {
            request: path,
            server_id,
            hostnames,
            out: &out,
        };
        if let Err(e) = sign_one(signer, job, ttl, now) {
            eprintln!(
                "ztssh-ca: {}: {}",
                path.display(),
                crate::cadir::shown(&format!("{e:#}"))
            );
            failed.push(path.display().to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} requests were not licensed: {}",
            failed.len(),
            names.len(),
            failed.join(", ")
        );
    }
    println!("{} licences written to {}", names.len(), out_dir.display());
    Ok(())
}
