//! OpenSSH host certificates vouched for by the ztssh root (`ztssh-ca
//! sign-host`, `ztssh-ca known-hosts`).
//!
//! The certificates are signed by the *host CA key*: an Ed25519 key derived
//! from the root key's seed as `SHA-256(KDF_HOST_CA || root seed)`. It is a
//! key of its own, so an OpenSSH certificate signature can never be
//! mistaken for a ztssh root signature, or the reverse, whatever the two
//! formats become. It needs no file and no backup of its own: whoever holds
//! `root.key` can re-derive it, and a CA directory made before this
//! feature existed certifies hosts as it is. Clients trust it through one
//! `@cert-authority PATTERN KEY` line in known_hosts.
//!
//! A CA whose root is held in hardware has no seed to derive from: its
//! host CA is then a key of its own ([`HostCa::held`], any
//! [`HostSigner`]), which the root certifies with a delegation of purpose
//! `host-ca` (`crate::delegation::Purpose::HostCa`).
//!
//! IO-free: callers pass the host key, the names and `now`, and a signer
//! that does whatever IO its key needs.

use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::private::{Ed25519Keypair, PrivateKey};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::keys::{CryptoRng, SignerFailed, SigningKey, random_bytes};
use crate::labels::KDF_HOST_CA;
use crate::time::CLOCK_SKEW;

/// Default validity of a host certificate: 30 days.
pub const DEFAULT_HOST_CERT_TTL: u64 = 30 * 86_400;
/// Longest validity the CA signs: 90 days. Clients are not told of a stolen
/// host key's revocation unless their known_hosts gains a `@revoked` line,
/// so expiry is the backstop.
pub const MAX_HOST_CERT_TTL: u64 = 90 * 86_400;
/// Most host names in one certificate.
pub const MAX_HOSTNAMES: usize = 64;
/// Longest host name (DNS's limit).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Why a host certificate or known_hosts line was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HostCertError {
    /// No host name: sshd 10.3+ rejects such a certificate, and older
    /// clients would accept it for any host.
    #[error(
        "at least one --hostname is required: the names clients type (ssh checks the certificate against them)"
    )]
    NoHostnames,
    /// More names than [`MAX_HOSTNAMES`].
    #[error("{0} host names; at most {MAX_HOSTNAMES} in one certificate")]
    TooManyHostnames(usize),
    /// A name ssh could never match, or a wildcard.
    #[error("host name {name:?}: {why}")]
    BadHostname {
        /// The name as given.
        name: String,
        /// Human reason.
        why: &'static str,
    },
    /// A zero validity.
    #[error("the validity must be at least one second")]
    ZeroTtl,
    /// A validity above [`MAX_HOST_CERT_TTL`].
    #[error(
        "validity of {ttl} s is longer than the {MAX_HOST_CERT_TTL} s (90d) maximum; renew host certificates instead"
    )]
    TtlTooLong {
        /// Requested validity in seconds.
        ttl: u64,
    },
    /// A known_hosts pattern that would not parse as one field.
    #[error(
        "pattern {0:?} must be one known_hosts field: non-empty, no spaces or control characters"
    )]
    BadPattern(String),
    /// The host key is not an OpenSSH public key.
    #[error(
        "not an OpenSSH public key ({0}); give sshd's host public key, such as /etc/ssh/ssh_host_ed25519_key.pub (not the private key, not a certificate)"
    )]
    BadHostKey(String),
    /// The host CA key's holder did not sign.
    #[error("the host CA key did not sign: {0}")]
    Signer(String),
    /// ssh-key refused to build, sign or encode.
    #[error("OpenSSH certificate encoding failed: {0}")]
    Encoding(String),
}

/// A signed host certificate, ready to write.
#[derive(Debug, Clone)]
pub struct SignedHostCert {
    /// The certificate in OpenSSH's one-line format, with a final newline.
    pub text: String,
    /// Its serial (random).
    pub serial: u64,
    /// The host key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
}

/// Whatever holds a host CA key of its own (`ztssh-ca host-ca`): a key
/// file, ssh-agent or a PKCS#11 token. It signs OpenSSH's to-be-signed
/// certificate bytes and returns an OpenSSH signature.
pub trait HostSigner {
    /// The key's public half.
    fn public_key(&self) -> ssh_key::public::KeyData;
    /// Signs `data` (an OpenSSH certificate's to-be-signed bytes).
    fn sign_ssh(&self, data: &[u8]) -> Result<ssh_key::Signature, SignerFailed>;
}

/// Where the host CA key is.
enum HostKey {
    /// Derived from the root's seed (every CA made before host CAs of
    /// their own existed, and file roots that never made one).
    Derived(Box<PrivateKey>),
    /// A key of its own, certified by the root.
    Held(Box<dyn HostSigner>),
}

/// The host CA key: derived from the root key, or a key of its own.
pub struct HostCa {
    key: HostKey,
}

/// [`HostSigner`] as ssh-key's certificate builder takes it; keeps the
/// signer's error, which ssh-key's own error type cannot carry.
struct BuilderSigner<'a> {
    inner: &'a dyn HostSigner,
    failed: std::cell::RefCell<Option<SignerFailed>>,
}

impl ed25519_dalek::Signer<ssh_key::Signature> for BuilderSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<ssh_key::Signature, ed25519_dalek::SignatureError> {
        self.inner.sign_ssh(msg).map_err(|e| {
            *self.failed.borrow_mut() = Some(e);
            ed25519_dalek::SignatureError::new()
        })
    }
}

impl From<&BuilderSigner<'_>> for ssh_key::public::KeyData {
    fn from(s: &BuilderSigner<'_>) -> Self {
        s.inner.public_key()
    }
}

impl std::fmt::Debug for HostCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostCa(<secret>)")
    }
}

impl HostCa {
    /// Derives the host CA key from the root signing key.
    pub fn from_root(root: &SigningKey) -> Self {
        use sha2::Digest;
        let seed = root.to_seed();
        let mut h = sha2::Sha256::new();
        h.update(KDF_HOST_CA);
        h.update(seed.expose());
        let derived = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        let keypair = Ed25519Keypair::from_seed(&derived);
        Self {
            key: HostKey::Derived(Box::new(PrivateKey::from(keypair))),
        }
    }

    /// A host CA key of its own, wherever it is held.
    pub fn held(signer: Box<dyn HostSigner>) -> Self {
        Self {
            key: HostKey::Held(signer),
        }
    }

    /// Whether the key is derived from the root's seed.
    pub fn is_derived(&self) -> bool {
        matches!(self.key, HostKey::Derived(_))
    }

    /// The host CA's public key.
    pub fn public_key(&self) -> ssh_key::PublicKey {
        let data = match &self.key {
            HostKey::Derived(k) => k.public_key().key_data().clone(),
            HostKey::Held(s) => s.public_key(),
        };
        ssh_key::PublicKey::new(data, "ztssh-host-ca")
    }

    /// The known_hosts line that makes ssh trust this CA's host
    /// certificates for hosts matching `pattern` (`*` for every host).
    pub fn known_hosts_line(&self, pattern: &str) -> Result<String, HostCertError> {
        let bad = pattern.is_empty()
            || pattern
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '#');
        if bad {
            return Err(HostCertError::BadPattern(pattern.to_owned()));
        }
        let key = self
            .public_key()
            .to_openssh()
            .map_err(|e| HostCertError::Encoding(e.to_string()))?;
        Ok(format!("@cert-authority {pattern} {key}"))
    }

    /// [`HostCa::certify`] for a host key in OpenSSH's one-line format
    /// (the contents of `ssh_host_*_key.pub`); returns the certificate in
    /// the same format.
    pub fn certify_openssh(
        &self,
        host_key: &str,
        hostnames: &[String],
        now: u64,
        ttl: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<SignedHostCert, HostCertError> {
        let key = ssh_key::PublicKey::from_openssh(host_key.trim())
            .map_err(|e| HostCertError::BadHostKey(e.to_string()))?;
        let cert = self.certify(&key, hostnames, now, ttl, rng)?;
        let mut text = cert
            .to_openssh()
            .map_err(|e| HostCertError::Encoding(e.to_string()))?;
        text.push('\n');
        Ok(SignedHostCert {
            text,
            serial: cert.serial(),
            algorithm: key.algorithm().to_string(),
        })
    }

    /// Signs a host certificate for `host_key`, valid for `hostnames`
    /// from `now` (less [`CLOCK_SKEW`], for clients whose clocks lag) for
    /// `ttl` seconds, with a serial and nonce from `rng`.
    pub fn certify(
        &self,
        host_key: &ssh_key::PublicKey,
        hostnames: &[String],
        now: u64,
        ttl: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Certificate, HostCertError> {
        check_hostnames(hostnames)?;
        if ttl == 0 {
            return Err(HostCertError::ZeroTtl);
        }
        if ttl > MAX_HOST_CERT_TTL {
            return Err(HostCertError::TtlTooLong { ttl });
        }
        let enc = |e: ssh_key::Error| HostCertError::Encoding(e.to_string());
        let nonce = random_bytes::<32>(rng);
        let valid_after = now.saturating_sub(CLOCK_SKEW);
        let valid_before = now.saturating_add(ttl);
        let mut b = Builder::new(
            nonce.to_vec(),
            host_key.key_data().clone(),
            valid_after,
            valid_before,
        )
        .map_err(enc)?;
        // Never 0: OpenSSH cannot revoke serial 0 in a KRL.
        b.serial(u64::from_be_bytes(random_bytes::<8>(rng)).max(1))
            .map_err(enc)?;
        b.cert_type(CertType::Host).map_err(enc)?;
        b.key_id(format!("ztssh host {}", hostnames.join(",")))
            .map_err(enc)?;
        for name in hostnames {
            b.valid_principal(name.clone()).map_err(enc)?;
        }
        b.comment(host_key.comment().clone()).map_err(enc)?;
        match &self.key {
            HostKey::Derived(k) => b.sign(k.as_ref()).map_err(enc),
            HostKey::Held(inner) => {
                let signer = BuilderSigner {
                    inner: inner.as_ref(),
                    failed: std::cell::RefCell::new(None),
                };
                b.sign(&signer).map_err(|e| match signer.failed.take() {
                    Some(failed) => HostCertError::Signer(failed.0),
                    None => enc(e),
                })
            }
        }
    }
}

/// Refuses an empty list, too many names, duplicates, and names ssh would
/// never match: it lower-cases the host name it checks, and matches a
/// certificate's names exactly (no wildcards).
fn check_hostnames(hostnames: &[String]) -> Result<(), HostCertError> {
    if hostnames.is_empty() {
        return Err(HostCertError::NoHostnames);
    }
    if hostnames.len() > MAX_HOSTNAMES {
        return Err(HostCertError::TooManyHostnames(hostnames.len()));
    }
    for (i, name) in hostnames.iter().enumerate() {
        let bad = |why| {
            Err(HostCertError::BadHostname {
                name: name.clone(),
                why,
            })
        };
        if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
            return bad("must be 1 to 253 characters");
        }
        if name.contains(['*', '?']) {
            return bad("no wildcards: name each host");
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return bad("use lower case: ssh lower-cases the host name it checks");
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if !name.chars().all(ok) {
            return bad("only letters, digits, '.', '-', '_' and ':' (IPv6)");
        }
        if hostnames.iter().take(i).any(|n| n == name) {
            return bad("given twice");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::Secret;
    use crate::keys::TestRng;

    fn host_key() -> ssh_key::PublicKey {
        let kp = Ed25519Keypair::from_seed(&[7; 32]);
        PrivateKey::from(kp).public_key().clone()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A host CA key of its own, held outside (the test's: in memory, or
    /// one that refuses).
    struct Held(Option<PrivateKey>);

    impl HostSigner for Held {
        fn public_key(&self) -> ssh_key::public::KeyData {
            let kp = Ed25519Keypair::from_seed(&[3; 32]);
            PrivateKey::from(kp).public_key().key_data().clone()
        }
        fn sign_ssh(&self, data: &[u8]) -> Result<ssh_key::Signature, SignerFailed> {
            use ed25519_dalek::Signer as _;
            match &self.0 {
                Some(k) => k.try_sign(data).map_err(|e| SignerFailed(e.to_string())),
                None => Err(SignerFailed("token removed".into())),
            }
        }
    }

    #[test]
    fn a_held_host_ca_signs_and_its_failure_is_reported() {
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[3; 32]));
        let ca = HostCa::held(Box::new(Held(Some(key))));
        assert!(!ca.is_derived());
        let cert = ca
            .certify(
                &host_key(),
                &names(&["web1"]),
                1_000_000,
                3600,
                &mut TestRng,
            )
            .unwrap();
        let fp = ca.public_key().fingerprint(Default::default());
        cert.validate_at(1_000_000, &[fp]).unwrap();
        let failing = HostCa::held(Box::new(Held(None)));
        let e = failing
            .certify(
                &host_key(),
                &names(&["web1"]),
                1_000_000,
                3600,
                &mut TestRng,
            )
            .unwrap_err();
        assert_eq!(e, HostCertError::Signer("token removed".into()));
        assert!(
            e.to_string()
                .contains("the host CA key did not sign: token removed")
        );
    }

    #[test]
    fn derivation_is_stable_and_separate_from_the_root() {
        let root = SigningKey::from_seed(&Secret::new([1; 32]));
        let a = HostCa::from_root(&root).public_key();
        let b = HostCa::from_root(&SigningKey::from_seed(&Secret::new([1; 32]))).public_key();
        assert_eq!(a.key_data(), b.key_data());
        let ed = a.key_data().ed25519().unwrap();
        assert_ne!(ed.0, root.public().0, "the host CA key is not the root key");
        let other = HostCa::from_root(&SigningKey::from_seed(&Secret::new([2; 32])));
        assert_ne!(other.public_key().key_data(), a.key_data());
    }

    #[test]
    fn certificate_fields() {
        let ca = HostCa::from_root(&SigningKey::generate(&mut TestRng));
        let now = 1_800_000_000;
        let cert = ca
            .certify(
                &host_key(),
                &names(&["web1", "web1.example.com"]),
                now,
                3600,
                &mut TestRng,
            )
            .unwrap();
        assert_eq!(cert.cert_type(), CertType::Host);
        assert_eq!(cert.valid_principals(), ["web1", "web1.example.com"]);
        assert_eq!(cert.key_id(), "ztssh host web1,web1.example.com");
        assert_eq!(cert.valid_after(), now - CLOCK_SKEW);
        assert_eq!(cert.valid_before(), now + 3600);
        assert_eq!(cert.public_key(), host_key().key_data());
        let ca_fp = ca.public_key().fingerprint(Default::default());
        cert.validate_at(now, [&ca_fp]).unwrap();
        cert.validate_at(now + 3601, [&ca_fp]).unwrap_err();
        let again = ca
            .certify(&host_key(), &names(&["web1"]), now, 60, &mut TestRng)
            .unwrap();
        assert_ne!(cert.serial(), again.serial(), "serials are random");
    }

    #[test]
    fn refusals() {
        let ca = HostCa::from_root(&SigningKey::generate(&mut TestRng));
        let k = host_key();
        let err = |list: &[&str], ttl| {
            ca.certify(&k, &names(list), 1000, ttl, &mut TestRng)
                .unwrap_err()
        };
        assert_eq!(err(&[], 60), HostCertError::NoHostnames);
        for bad in ["", "Web1", "*.example.com", "a b", "web1,web2", "web1\n"] {
            assert!(
                matches!(err(&[bad], 60), HostCertError::BadHostname { .. }),
                "{bad:?}"
            );
        }
        assert!(matches!(
            err(&["a", "a"], 60),
            HostCertError::BadHostname { .. }
        ));
        assert_eq!(err(&["a"], 0), HostCertError::ZeroTtl);
        assert!(matches!(
            err(&["a"], MAX_HOST_CERT_TTL + 1),
            HostCertError::TtlTooLong { .. }
        ));
        let many: Vec<String> = (0..=MAX_HOSTNAMES).map(|i| format!("h{i}")).collect();
        assert!(matches!(
            ca.certify(&k, &many, 1000, 60, &mut TestRng).unwrap_err(),
            HostCertError::TooManyHostnames(_)
        ));
        assert!(
            ca.certify(&k, &names(&["::1", "10.0.0.1"]), 1000, 60, &mut TestRng)
                .is_ok()
        );
        let line = k.to_openssh().unwrap();
        let signed = ca
            .certify_openssh(&line, &names(&["a"]), 1000, 60, &mut TestRng)
            .unwrap();
        assert!(signed.text.starts_with("ssh-ed25519-cert-v01@openssh.com "));
        assert!(signed.text.ends_with('\n'));
        for bad in ["", "garbage", signed.text.as_str()] {
            assert!(matches!(
                ca.certify_openssh(bad, &names(&["a"]), 1000, 60, &mut TestRng)
                    .unwrap_err(),
                HostCertError::BadHostKey(_)
            ));
        }
    }

    #[test]
    fn known_hosts_line() {
        let ca = HostCa::from_root(&SigningKey::generate(&mut TestRng));
        let line = ca.known_hosts_line("*.example.com").unwrap();
        assert!(line.starts_with("@cert-authority *.example.com ssh-ed25519 AAAA"));
        assert!(line.ends_with(" ztssh-host-ca"));
        for bad in ["", "a b", "a\tb", "#x"] {
            assert!(ca.known_hosts_line(bad).is_err(), "{bad:?}");
        }
    }
}
