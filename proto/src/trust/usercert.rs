//! OpenSSH user certificates from a user CA the proxy trusts, as an
//! identity source (`docs/PROTOCOL.md` §2.3.1): [`verify`] turns the
//! certificate bytes a client sent in message 3 into a [`UserCertVerified`],
//! which only it makes, or an [`Ended`] whose reason a user can act on.
//!
//! # Verify before parse
//!
//! An OpenSSH certificate is signed over every byte before its final
//! `string signature`. The bytes are decoded only to split them into that
//! signed prefix, the CA key and the signature (ssh-key's bounded decoder,
//! under [`MAX_USER_CERT`]); then, before any other field is read:
//! 1. the encoding must be canonical: the decoded certificate re-encodes to
//!    exactly the received bytes, so every field read later is a field of
//!    the signed prefix;
//! 2. the CA key is compared with the trusted set;
//! 3. the signature must use an algorithm the CA key may sign with (never
//!    SHA-1 `ssh-rsa`) and verify.
//!
//! Only then are the type, validity window, principals, key and critical
//! options read.

use std::net::IpAddr;

use ssh_key::certificate::{CertType, Certificate};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg};

use crate::end::{EndKind, Ended};
use crate::time::{CLOCK_SKEW, UnixTime, when};
use crate::userkey;

/// Largest certificate accepted in message 3 (an RSA-4096 key certified by
/// an RSA-4096 CA, with room for principals and options).
pub const MAX_USER_CERT: usize = 4096;
/// Most trusted CA keys a proxy loads.
pub const MAX_USER_CAS: usize = 256;
/// Most entries in a certificate's `source-address` option.
pub const MAX_SOURCE_ADDRESSES: usize = 64;

/// The critical options ztssh understands and enforces; a certificate with
/// any other is refused, as sshd refuses one it does not know.
pub const KNOWN_CRITICAL_OPTIONS: [&str; 3] =
    ["force-command", "source-address", "verify-required"];

/// The user CAs a proxy trusts (sshd's `TrustedUserCAKeys`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCas {
    keys: Vec<KeyData>,
}

impl UserCas {
    /// Reads CA keys in `authorized_keys` format, one per line (options
    /// before the key are refused; comments and blank lines skipped).
    /// `Err` is (1-based line, what is wrong and what to do).
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = n + 1;
            let key = ssh_key::PublicKey::from_openssh(line).map_err(|e| {
                (
                    at,
                    format!(
                        "not an OpenSSH public key ({e}): write one CA key per line, \
                         as in sshd's TrustedUserCAKeys file, without options"
                    ),
                )
            })?;
            check_ca_key(key.key_data()).map_err(|why| (at, why))?;
            if keys.len() >= MAX_USER_CAS {
                return Err((at, format!("more than {MAX_USER_CAS} CA keys")));
            }
            keys.push(key.key_data().clone());
        }
        if keys.is_empty() {
            return Err((
                1,
                "no CA key in the file: add the user CA's public key (ssh-keygen -y -f CA)".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// How many CA keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is one of the trusted CA keys.
    pub fn trusts(&self, key: &KeyData) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

/// Whether ztssh accepts `key` as a user CA key: the key types sshd takes
/// in `TrustedUserCAKeys` (Ed25519, ECDSA, RSA, and security keys).
fn check_ca_key(key: &KeyData) -> Result<(), String> {
    match key {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => Ok(()),
        KeyData::Rsa(k) if userkey::rsa_bits(k) >= userkey::MIN_RSA_BITS => Ok(()),
        KeyData::Rsa(k) => Err(format!(
            "RSA CA key of {} bits refused: use at least {}",
            userkey::rsa_bits(k),
            userkey::MIN_RSA_BITS
        )),
        other => Err(format!(
            "{} CA keys are not supported: use Ed25519, ECDSA or RSA",
            other.algorithm()
        )),
    }
}

/// One `source-address` entry: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceNet {
    addr: IpAddr,
    prefix: u8,
}

impl SourceNet {
    fn parse(text: &str) -> Option<Self> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
    }
}

impl std::fmt::Display for SourceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A user certificate that passed every check of [`verify`]. Only
/// [`verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCertVerified {
    cert: Certificate,
    ca_fp: String,
    source: Option<Vec<SourceNet>>,
}

impl UserCertVerified {
    /// The CA key that signed it.
    pub fn ca_key(&self) -> &KeyData {
        self.cert.signature_key()
    }

    /// The CA key's SHA-256 fingerprint (`SHA256:...`).
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fp
    }

    /// The CA's serial number.
    pub fn serial(&self) -> u64 {
        self.cert.serial()
    }

    /// The CA's key id.
    pub fn key_id(&self) -> &str {
        self.cert.key_id()
    }

    /// The principals it vouches for (never empty).
    pub fn principals(&self) -> &[String] {
        self.cert.valid_principals()
    }

    /// Unix second from which it is no longer valid.
    pub fn valid_before(&self) -> UnixTime {
        self.cert.valid_before()
    }

    /// The user key it certifies (the key that signed the handshake).
    pub fn user_key(&self) -> &KeyData {
        self.cert.public_key()
    }

    /// The `force-command` critical option.
    pub fn force_command(&self) -> Option<&str> {
        self.cert
            .critical_options()
            .get("force-command")
            .map(String::as_str)
    }

    /// Whether the `verify-required` critical option is set.
    pub fn verify_required(&self) -> bool {
        self.cert.critical_options().contains_key("verify-required")
    }

    /// The `source-address` networks, if the option is set.
    pub fn source_address(&self) -> Option<&[SourceNet]> {
        self.source.as_deref()
    }

    /// Whether extension `name` (`permit-pty`, ...) is granted.
    pub fn permits(&self, name: &str) -> bool {
        self.cert.extensions().contains_key(name)
    }

    /// Whether `other` grants exactly what this one does: the same
    /// critical options and extensions. sshd applied a session's first
    /// certificate's at login, so a successor with other terms (wider or
    /// narrower) cannot take its place in that session.
    pub fn same_terms(&self, other: &Self) -> bool {
        self.cert.critical_options() == other.cert.critical_options()
            && self.cert.extensions() == other.cert.extensions()
    }

    /// The certificate's encoding (as it came, verified).
    pub fn encoded(&self) -> Vec<u8> {
        self.cert.to_bytes().unwrap_or_default()
    }

    /// A short description for logs: key id, serial and CA fingerprint.
    pub fn describe(&self) -> String {
        format!(
            "key id {:?}, serial {}, CA {}",
            self.key_id(),
            self.serial(),
            self.ca_fp
        )
    }

    /// The checks that hold for a live session at every checkpoint: its CA
    /// still trusted, still valid at `now`, and `peer` (the client's real
    /// address, when known) inside its `source-address`.
    pub fn check(&self, cas: &UserCas, peer: Option<IpAddr>, now: UnixTime) -> Result<(), Ended> {
        if !cas.trusts(self.ca_key()) {
            return Err(refuse(format!(
                "certificate signed by an untrusted CA {}: this server no longer trusts it",
                self.ca_fp
            )));
        }
        if now >= self.valid_before() {
            return Err(Ended::new(
                EndKind::UserCertExpired,
                format!(
                    "certificate expired at {} ({}): get a new one from your SSH CA",
                    crate::time::date(self.valid_before()),
                    when(self.valid_before(), now)
                ),
            ));
        }
        if let (Some(nets), Some(ip)) = (&self.source, peer)
            && !nets.iter().any(|n| n.contains(ip))
        {
            let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
            return Err(refuse(format!(
                "your address {ip} is not in the certificate's source-address ({})",
                list.join(",")
            )));
        }
        Ok(())
    }
}

fn refuse(reason: String) -> Ended {
    Ended::new(EndKind::UserCertRefused, reason)
}

fn malformed(why: &str) -> Ended {
    refuse(format!("malformed user certificate ({why})"))
}

/// Whether `sig` may come from CA key `ca` (RSA: SHA-2 only).
fn sig_algorithm_ok(ca: &KeyData, sig: &Algorithm) -> bool {
    match (ca.algorithm(), sig) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { hash }) => {
            matches!(hash, Some(HashAlg::Sha256 | HashAlg::Sha512))
        }
        (k, s) => &k == s,
    }
}

/// Verifies certificate `bytes` (the binary form, as `KEY-cert.pub`
/// carries it in base64) for a session of `principal` whose handshake
/// `user_key` signed, under the trusted `cas` at `now`. See the module docs
/// for the order of the checks.
pub fn verify(
    cas: &UserCas,
    bytes: &[u8],
    user_key: &ssh_key::PublicKey,
    principal: &str,
    now: UnixTime,
) -> Result<UserCertVerified, Ended> {
    if bytes.len() > MAX_USER_CERT {
        return Err(malformed("too large"));
    }
    let cert = Certificate::from_bytes(bytes).map_err(|_| malformed("does not decode"))?;
    // 1. Canonical: what is read below is exactly what was signed.
    if cert.to_bytes().ok().as_deref() != Some(bytes) {
        return Err(malformed("not canonically encoded"));
    }
    // 2. The CA, before any other field is trusted.
    let ca = cert.signature_key();
    let ca_fp = ca.fingerprint(HashAlg::Sha256).to_string();
    if !cas.trusts(ca) {
        return Err(refuse(format!(
            "certificate signed by an untrusted CA {ca_fp}: this server trusts another user CA"
        )));
    }
    // 3. The signature.
    if !sig_algorithm_ok(ca, &cert.signature().algorithm())
        || !crate::primitives::user_cert_verify(&cert)
    {
        return Err(refuse(format!(
            "certificate signature by CA {ca_fp} does not verify"
        )));
    }
    check_fields(cert, ca_fp, user_key, principal, now)
}

/// The checks on the signed fields, once the signature verified.
fn check_fields(
    cert: Certificate,
    ca_fp: String,
    user_key: &ssh_key::PublicKey,
    principal: &str,
    now: UnixTime,
) -> Result<UserCertVerified, Ended> {
    if cert.cert_type() != CertType::User {
        return Err(refuse(
            "this is a host certificate, not a user certificate (ssh-keygen -s without -h)".into(),
        ));
    }
    if cert.public_key() != user_key.key_data() {
        return Err(refuse(
            "the certificate is for another key than the one that signed in".into(),
        ));
    }
    if now.saturating_add(CLOCK_SKEW) < cert.valid_after() {
        return Err(refuse(format!(
            "certificate not valid until {}",
            when(cert.valid_after(), now)
        )));
    }
    let principals = cert.valid_principals();
    if principals.is_empty() {
        return Err(refuse(
            "certificate names no principal: ztssh refuses a certificate valid for everyone \
             (ssh-keygen -s ... -n NAME)"
                .into(),
        ));
    }
    if !principals.iter().any(|p| p == principal) {
        return Err(refuse(format!(
            "principal {principal} is not in your certificate ({})",
            principals.join(", ")
        )));
    }
    if let Some(unknown) = cert
        .critical_options()
        .keys()
        .find(|k| !KNOWN_CRITICAL_OPTIONS.contains(&k.as_str()))
    {
        return Err(refuse(format!(
            "unknown critical option {unknown:?} in your certificate: ztssh understands only {}",
            KNOWN_CRITICAL_OPTIONS.join(", ")
        )));
    }
    let source = match cert.critical_options().get("source-address") {
        None => None,
        Some(list) => Some(parse_sources(list)?),
    };
    let verified = UserCertVerified {
        cert,
        ca_fp,
        source,
    };
    if now >= verified.valid_before() {
        return Err(Ended::new(
            EndKind::UserCertExpired,
            format!(
                "certificate expired at {}: get a new one from your SSH CA",
                when(verified.valid_before(), now)
            ),
        ));
    }
    Ok(verified)
}

fn parse_sources(list: &str) -> Result<Vec<SourceNet>, Ended> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let net = SourceNet::parse(item.trim()).ok_or_else(|| {
            refuse(format!(
                "certificate's source-address entry {item:?} is not an address or address/prefix"
            ))
        })?;
        if out.len() >= MAX_SOURCE_ADDRESSES {
            return Err(refuse(format!(
                "certificate's source-address has more than {MAX_SOURCE_ADDRESSES} entries"
            )));
        }
        out.push(net);
    }
    Ok(out)
}

/// Fuzzing builds only (crypto stand-ins): `signed` (a certificate's
/// bytes up to its signature) with CA `ca`'s stand-in Ed25519 signature
/// appended, which [`verify`] then accepts.
#[cfg(all(fuzzing, feature = "crypto-standins"))]
#[doc(hidden)]
pub fn standin_sign(signed: &[u8], ca: &KeyData) -> Option<Vec<u8>> {
    use ssh_key::encoding::Encode;
    let tag = crate::primitives::user_cert_tag(ca, signed)?;
    let sig = ssh_key::Signature::new(Algorithm::Ed25519, tag.to_vec()).ok()?;
    let mut out = signed.to_vec();
    sig.encode_vec().ok()?.encode(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
#[path = "usercert_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "usercert_session_tests.rs"]
mod session_tests;
