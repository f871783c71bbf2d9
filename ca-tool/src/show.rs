//! `ztssh-ca show`: print any ztssh file readably.

use std::path::Path;

use anyhow::{Result, bail};
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::cert::{ClientCert, Licence, LicenceRequest};
use ztssh_proto::delegation::{self, Delegation, Purpose};
use ztssh_proto::keys::{NoiseKeypair, PublicKey, Secret, hex, to_array};
use ztssh_proto::labels::pem;
use ztssh_proto::rootkey::RootKey;
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
    let (label, bytes, delegation) = split(&text, file)?;
    if let Some(d) = &delegation {
        show_delegation(d, root.as_ref(), now);
        chain_status(&label, &bytes, d, root.as_ref(), now);
    }
    match label.as_str() {
        pem::DELEGATION => {
            show_delegation(&bytes, root.as_ref(), now);
        }
        pem::DELEGATED_PUBLIC => {
            let key = PublicKey(to_array(&bytes, "delegated public key")?);
            println!(
                "ztssh delegated public key\n  fingerprint: {}\n  key: {}",
                key.fingerprint(),
                hex(&key.0)
            );
        }
        pem::DELEGATED_KEY => {
            let key =
                keyfile::read_signing_key(file, pem::DELEGATED_KEY).map_err(anyhow::Error::msg)?;
            println!(
                "ztssh delegated key (private; not printed)\n  public fingerprint: {}",
                key.public().fingerprint()
            );
        }
        pem::ROOT_PUBLIC => {
            let key = RootKey::decode(&bytes)?;
            println!(
                "ztssh root public key\n  algorithm: {}\n  fingerprint: {}\n  key: {}",
                key.algorithm(),
                key.fingerprint(),
                hex(&key.id().0)
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
            let status = match &delegation {
                Some(_) => "see the chain above".to_owned(),
                None => licence_status(&lic, root.as_ref(), now),
            };
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
            let checked = root.as_ref().filter(|_| delegation.is_none());
            let (list, signed_by) = crl_checked(&bytes, checked)?;
            let signed_by = match root.as_ref() {
                _ if delegation.is_some() => format!(
                    "valid, by the delegated key {}; see the chain above",
                    list.issuer.fingerprint()
                ),
                Some(r) if list.issuer != r.id() => format!(
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
                ("delegation: ", &list.revoked.delegated_keys),
            ] {
                let mut keys: Vec<_> = set.iter().collect();
                keys.sort();
                for key in keys {
                    println!("  {what} {}", hex(key));
                }
            }
        }
        pem::ACCESS => crate::access::show(&bytes, root.as_ref(), delegation.is_some(), now)?,
        other => bail!("{}: unknown ztssh file type {other:?}", file.display()),
    }
    Ok(())
}

/// A file's label and object, and the delegation beside it if any (a
/// licence or list a delegated key signed).
fn split(text: &[u8], file: &Path) -> Result<(String, Vec<u8>, Option<Vec<u8>>)> {
    for label in [pem::LICENCE, pem::CRL, pem::ACCESS] {
        if let Ok((object, Some(d))) = delegation::split_pem(text, label) {
            return Ok((label.to_owned(), object, Some(d)));
        }
    }
    let (label, bytes) =
        armor::decode(text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((label, bytes, None))
}

/// Prints a delegation, checked against `root` when given.
fn show_delegation(bytes: &[u8], root: Option<&RootKey>, now: u64) {
    let d = match Delegation::decode(bytes) {
        Ok(d) => d,
        Err(e) => {
            println!("delegation: INVALID: {e}");
            return;
        }
    };
    let b = &d.body;
    let status = match root {
        None => {
            "signature NOT checked (pass --root root.pub, or --dir CA-DIR, to check it)".to_owned()
        }
        Some(r) => match Delegation::decode_verified(bytes, r)
            .map_err(|e| e.to_string())
            .and_then(|d| d.check_in_force(None, now).map_err(|e| e.to_string()))
        {
            Ok(()) => format!("valid (signature checked against root {})", r.fingerprint()),
            Err(e) => format!("INVALID: {e} (checked against root {})", r.fingerprint()),
        },
    };
    println!("ztssh delegation");
    println!("  serial:     {}", b.serial);
    println!("  purpose:    {}", b.purpose);
    println!("  key:        {} ({})", b.key.fingerprint(), hex(&b.key.0));
    if b.purpose != Purpose::Revocations {
        println!(
            "  servers:    {}",
            if b.servers.is_empty() {
                "any".to_owned()
            } else {
                b.servers.join(", ")
            }
        );
    }
    println!("  issuer:     {}", b.issuer.fingerprint());
    println!("  not before: {}", when(b.not_before, now));
    println!("  not after:  {}", when(b.not_after, now));
    println!("  status:     {status}");
}

/// The whole chain root -> delegation -> object, checked as a proxy
/// checks it when a root is given.
fn chain_status(label: &str, object: &[u8], d: &[u8], root: Option<&RootKey>, now: u64) {
    let Some(root) = root else {
        println!("chain: NOT checked (pass --root root.pub, or --dir CA-DIR, to check it)");
        return;
    };
    let result = match label {
        pem::LICENCE => delegation::verify_licence(root, object, Some(d), None, now).map(|_| ()),
        pem::ACCESS => ztssh_proto::access::verify_access(root, object, Some(d), None, now)
            .map(|_| ())
            .map_err(|e| match e {
                ztssh_proto::access::AccessError::NotDelegated(e)
                | ztssh_proto::access::AccessError::Invalid(e) => e,
                ztssh_proto::access::AccessError::NotPem(m) => m.into(),
            }),
        _ => delegation::verify_list(root, object, Some(d), now).map(|_| ()),
    };
    match result {
        Ok(()) => println!(
            "chain: valid (root {} -> delegation -> {})",
            root.fingerprint(),
            label.to_lowercase()
        ),
        Err(e) => println!("chain: INVALID: {e}"),
    }
}

/// A licence's status line: checked against `root` when given (a forged
/// or foreign signature is named as such), else the window alone and the
/// words "signature NOT checked".
fn licence_status(lic: &Licence, root: Option<&RootKey>, now: u64) -> String {
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
    if b.issuer != root.id() {
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

/// Decodes a list, checking its signature under `root` when given, else
/// under the Ed25519 issuer it names (the pinned root is checked by the
/// proxies; a hybrid list needs `root` to be checked).
fn crl_checked(bytes: &[u8], root: Option<&RootKey>) -> Result<(ztssh_proto::crl::Crl, String)> {
    let issuer = bytes
        .get(4 + 1 + 24..4 + 1 + 24 + 32)
        .ok_or_else(|| anyhow::anyhow!("revocation list is truncated"))?;
    let issuer = PublicKey(to_array(issuer, "issuer")?);
    // The given root when it is the issuer (a hybrid list needs it to be
    // checked); another issuer is checked under its own Ed25519 key, and
    // the caller says it is not the root.
    let key = match root {
        Some(r) if r.id() == issuer => r.clone(),
        _ => RootKey::Ed25519(issuer),
    };
    let list = ztssh_proto::crl::Crl::decode_verified(bytes, &key)?;
    Ok((list, format!("valid, by root {}", issuer.fingerprint())))
}
