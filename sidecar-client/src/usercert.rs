//! The OpenSSH user certificate the sidecar presents with its key: the
//! `KEY-cert.pub` beside `--identity KEY`, as ssh finds it, or else one
//! that ssh-agent holds for the key (ssh-add loads `KEY-cert.pub` with
//! `KEY`). The proxy decides whether it vouches for anything; the sidecar
//! only picks the certificate of the key it signs with.

use std::path::{Path, PathBuf};

use ztssh_proto::trust::usercert::MAX_USER_CERT;

/// Where ssh looks for the certificate of identity `path`: `KEY-cert.pub`
/// (also for `--identity KEY.pub`).
pub fn cert_path(path: &Path) -> PathBuf {
    let text = path.as_os_str().to_string_lossy();
    let stem = text.strip_suffix(".pub").unwrap_or(&text);
    PathBuf::from(format!("{stem}-cert.pub"))
}

/// The certificate's binary form to present with `key`, when the identity
/// file has one beside it that certifies `key`. A certificate file that
/// cannot be used is said on stderr and left aside (the key alone is sent,
/// as ssh does).
pub fn find(
    identity: Option<&Path>,
    agent: Option<&Path>,
    key: &ssh_key::PublicKey,
    principal: &str,
    verbose: bool,
) -> Option<Vec<u8>> {
    find_from(identity, agent, key, principal, None, verbose)
}

/// [`find`], taking only a user certificate signed by `ca` when given:
/// a renewal during a session comes from the CA the proxy took at login,
/// so another CA's (or a host certificate) never stands in for it, even
/// lasting longer.
pub fn find_from(
    identity: Option<&Path>,
    agent: Option<&Path>,
    key: &ssh_key::PublicKey,
    principal: &str,
    ca: Option<&ssh_key::public::KeyData>,
    verbose: bool,
) -> Option<Vec<u8>> {
    let bytes = match identity {
        Some(path) => from_file(path, key, verbose),
        None => from_agent(agent?, key, principal, ca, verbose),
    }?;
    let cert = ssh_key::Certificate::from_bytes(&bytes).ok()?;
    let fits = cert.cert_type() == ssh_key::certificate::CertType::User
        && ca.is_none_or(|ca| cert.signature_key() == ca);
    fits.then_some(bytes)
}

/// The certificate ssh-agent holds for `key` that names `principal`, is
/// valid now on this machine's clock and lasts longest; none when the
/// agent holds none (or cannot be asked: the key alone is sent).
fn from_agent(
    sock: &Path,
    key: &ssh_key::PublicKey,
    principal: &str,
    ca: Option<&ssh_key::public::KeyData>,
    verbose: bool,
) -> Option<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let certs = ztssh_sidecar::agent::Agent::connect(sock)
        .and_then(|mut a| a.certificates())
        .ok()?;
    let cert = certs
        .into_iter()
        .filter(|c| {
            c.public_key() == key.key_data()
                && c.cert_type() == ssh_key::certificate::CertType::User
                && ca.is_none_or(|ca| c.signature_key() == ca)
                && c.valid_principals().iter().any(|p| p == principal)
                && c.valid_after() <= now
                && now < c.valid_before()
        })
        .max_by_key(ssh_key::Certificate::valid_before)?;
    let bytes = cert.to_bytes().ok().filter(|b| b.len() <= MAX_USER_CERT)?;
    if verbose {
        eprintln!(
            "ztssh: presenting ssh-agent's certificate (key id {:?}, serial {}, principals {})",
            cert.key_id(),
            cert.serial(),
            cert.valid_principals().join(",")
        );
    }
    Some(bytes)
}

fn from_file(identity: &Path, key: &ssh_key::PublicKey, verbose: bool) -> Option<Vec<u8>> {
    let path = cert_path(identity);
    let text = match ztssh_keyfile::read_regular(&path, 64 * 1024) {
        Ok(t) => t,
        Err(_) if !path.exists() => return None,
        Err(e) => {
            eprintln!("ztssh: warning: not presenting {}: {e}", path.display());
            return None;
        }
    };
    let cert = String::from_utf8(text)
        .ok()
        .and_then(|t| ssh_key::Certificate::from_openssh(t.trim()).ok());
    let Some(cert) = cert else {
        eprintln!(
            "ztssh: warning: not presenting {}: not an OpenSSH certificate",
            path.display()
        );
        return None;
    };
    if cert.public_key() != key.key_data() {
        eprintln!(
            "ztssh: warning: not presenting {}: it certifies another key than {}",
            path.display(),
            key.fingerprint(ssh_key::HashAlg::Sha256)
        );
        return None;
    }
    let bytes = cert.to_bytes().ok()?;
    if bytes.len() > MAX_USER_CERT {
        eprintln!(
            "ztssh: warning: not presenting {}: larger than {MAX_USER_CERT} bytes",
            path.display()
        );
        return None;
    }
    if verbose {
        eprintln!(
            "ztssh: presenting certificate {} (key id {:?}, serial {}, principals {})",
            path.display(),
            cert.key_id(),
            cert.serial(),
            cert.valid_principals().join(",")
        );
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_looked_for_where_ssh_looks() {
        let p = |s: &str| cert_path(Path::new(s)).display().to_string();
        assert_eq!(
            p("/home/a/.ssh/id_ed25519"),
            "/home/a/.ssh/id_ed25519-cert.pub"
        );
        assert_eq!(
            p("/home/a/.ssh/id_ed25519.pub"),
            "/home/a/.ssh/id_ed25519-cert.pub"
        );
    }
}
