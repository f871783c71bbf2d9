//! `ztssh-ca show`: print any ztssh file readably.

use std::path::Path;

use anyhow::{Result, bail};
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::cert::{ClientCert, Licence, LicenceRequest};
use ztssh_proto::keys::{NoiseKeypair, PublicKey, Secret, hex, to_array};
use ztssh_proto::labels::pem;
use ztssh_proto::time::when;

/// Prints `file`. A licence's signature is checked against `root` (the
/// CA's `root.pub`) when one is given; without it the status says so
/// plainly, never "valid". Reads at most [`keyfile::MAX_PEM_FILE`] bytes,
/// as the proxy does, from a regular file only.
pub fn show(file: &Path, root: Option<&Path>, now: u64) -> Result<()> {
    let root = root
        .map(keyfile::read_root_public)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let text = keyfile::read_regular(file, keyfile::MAX_PEM_FILE).map_err(anyhow::Error::msg)?;
    let (label, bytes) =
        armor::decode(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    match label.as_str() {
        pem::ROOT_PUBLIC => {
            let key = PublicKey(to_array(&bytes, "root public key")?);
            println!(
                "ztssh root public key\n  fingerprint: {}\n  key: {}",
                key.fingerprint(),
                hex(&key.0)
            );
        }
        pem::ROOT_KEY | pem::SUBCA_KEY => {
            let key = keyfile::read_signing_key(
                file,
                if label == pem::ROOT_KEY {
                    pem::ROOT_KEY
                } else {
                    pem::SUBCA_KEY
                },
            )
            .map_err(anyhow::Error::msg)?;
            println!(
                "{} (private; not printed)\n  public fingerprint: {}",
                label.to_lowercase(),
                key.public().fingerprint()
            );
        }
        pem::NOISE_KEY => {
            let secret = keyfile::read_secret(file, pem::NOISE_KEY).map_err(anyhow::Error::msg)?;
            let pair = NoiseKeypair::from_private(Secret::new(*secret.expose()));
            println!(
                "ztssh noise key (private; not printed)\n  public: {}",
                hex(&pair.public())
            );
        }
        pem::REQUEST => {
            let req = LicenceRequest::decode_verified(&bytes)?;
            println!("ztssh licence request (proof of possession: valid)");
            println!(
                "  sub-CA key: {} ({})",
                req.subca_key.fingerprint(),
                hex(&req.subca_key.0)
            );
            println!("  noise key:  {}", hex(&req.noise_key));
            println!("  created:    {}", when(req.created, now));
        }
        pem::LICENCE => {
            let lic = Licence::decode(&bytes)?;
            let status = licence_status(&lic, root.as_ref(), now);
            let b = &lic.body;
            println!("ztssh server licence");
            println!("  serial:     {}", b.serial);
            println!("  server id:  {}", b.server_id);
            println!("  hostnames:  {}", b.hostnames.join(", "));
            println!(
                "  sub-CA key: {} ({})",
                b.subca_key.fingerprint(),
                hex(&b.subca_key.0)
            );
            println!("  noise key:  {}", hex(&b.noise_key));
            println!("  issuer:     {}", b.issuer.fingerprint());
            println!("  not before: {}", when(b.not_before, now));
            println!("  not after:  {}", when(b.not_after, now));
            println!("  status:     {status}");
        }
        pem::CLIENT_CERT => {
            let c = ClientCert::decode(&bytes)?;
            println!("ztssh client certificate");
            println!("  serial:      {}", c.serial);
            println!(
                "  session:     {} (revoke this serial to end the session, however often it renewed)",
                c.session
            );
            println!("  principal:   {}", c.principal);
            println!("  session key: {}", c.session_key.fingerprint());
            println!("  issuer:      {}", c.issuer.fingerprint());
            println!("  not before:  {}", when(c.not_before, now));
            println!("  not after:   {}", when(c.not_after, now));
        }
        pem::CRL => {
            let (list, signed_by) = crl_unverified(&bytes)?;
            let signed_by = match root.as_ref() {
                Some(r) if list.issuer != *r => format!(
                    "INVALID: signed by {}, not by root {}",
                    list.issuer.fingerprint(),
                    r.fingerprint()
                ),
                Some(_) => format!("{signed_by}, the given root"),
                None => format!("{signed_by}; the root itself NOT checked (pass --dir or --root)"),
            };
            println!("ztssh revocation list (signature: {signed_by})");
            println!("  version:     {}", list.list_version);
            println!("  issued:      {}", when(list.issued, now));
            println!(
                "  next update: {}{}",
                when(list.next_update, now),
                if list.is_stale(now) { " STALE" } else { "" }
            );
            let mut p: Vec<_> = list.revoked.principals.iter().collect();
            p.sort();
            let mut s: Vec<_> = list.revoked.servers.iter().collect();
            s.sort();
            println!(
                "  principals:  {}",
                if p.is_empty() {
                    "-".into()
                } else {
                    p.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ")
                }
            );
            println!(
                "  servers:     {}",
                if s.is_empty() {
                    "-".into()
                } else {
                    s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ")
                }
            );
            for serial in &list.revoked.serials {
                println!("  serial:      {serial}");
            }
            let mut keys: Vec<_> = list.revoked.user_keys.iter().collect();
            keys.sort();
            for key in keys {
                println!("  user key:    {}", ssh_key::Fingerprint::Sha256(*key));
            }
            for (what, set) in [
                ("noise key:  ", &list.revoked.noise_keys),
                ("sub-CA key: ", &list.revoked.subca_keys),
            ] {
                let mut keys: Vec<_> = set.iter().collect();
                keys.sort();
                for key in keys {
                    println!("  {what} {}", hex(key));
                }
            }
        }
        other => bail!("{}: unknown ztssh file type {other:?}", file.display()),
    }
    Ok(())
}

/// A licence's status line: checked against `root` when given (a forged
/// or foreign signature is named as such), else the window alone and the
/// words "signature NOT checked".
fn licence_status(lic: &Licence, root: Option<&PublicKey>, now: u64) -> String {
    let b = &lic.body;
    let window = if now >= b.not_after {
        "EXPIRED"
    } else if now < b.not_before {
        "not yet valid"
    } else {
        "within its validity window"
    };
    let Some(root) = root else {
        return format!(
            "{window}; signature NOT checked (pass --root root.pub, or --dir CA-DIR, to check it)"
        );
    };
    if b.issuer != *root {
        return format!(
            "INVALID: issued by {}, not by root {}",
            b.issuer.fingerprint(),
            root.fingerprint()
        );
    }
    // At not_before the window passes, so this checks issuer and signature.
    match lic.verify(root, b.not_before) {
        Ok(_) if window == "within its validity window" => {
            format!(
                "valid (signature checked against root {})",
                root.fingerprint()
            )
        }
        Ok(_) => format!(
            "{window} (signature checked against root {})",
            root.fingerprint()
        ),
        Err(e) => format!("INVALID: {e} (checked against root {})", root.fingerprint()),
    }
}

/// Decodes a list, checking its signature under the issuer it names (the
/// pinned root is checked by the proxies).
fn crl_unverified(bytes: &[u8]) -> Result<(ztssh_proto::crl::Crl, String)> {
    let issuer = bytes
        .get(4 + 1 + 24..4 + 1 + 24 + 32)
        .ok_or_else(|| anyhow::anyhow!("revocation list is truncated"))?;
    let issuer = PublicKey(to_array(issuer, "issuer")?);
    let list = ztssh_proto::crl::Crl::decode_verified(bytes, &issuer)?;
    Ok((list, format!("valid, by root {}", issuer.fingerprint())))
}
