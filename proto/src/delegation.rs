//! Delegations: the root certifying an online key for one kind of object,
//! so the root can stay offline. One function, [`verify_chain`], checks
//! every chain root → delegation → object, for every verifier.
//!
//! ```text
//! Delegation = "ZTDG" ver=1 serial[16] purpose:u8 key[32]
//!              n:u8 server_glob:str8 * n        ; licences and access only; none: any server
//!              not_before:u64 not_after:u64 issuer[32]
//!              signature[64]                     ; by the root, context CTX_DELEGATION
//! purpose    = 1 licences | 2 access | 3 revocations | 4 host-ca
//! ```
//!
//! A delegated key signs its objects exactly as the root signs them (same
//! format, same context string, its own key as the issuer); the delegation
//! travels beside the object: a second PEM block (`ZTSSH DELEGATION`) in a
//! licence or list file, and the optional last field of handshake message 2.
//! An object the root signed has no delegation and verifies as before.
//!
//! What [`verify_chain`] checks, in this order, nothing parsed before the
//! signature over it verified: the delegation's signature under the pinned
//! root (its issuer must be the root: a delegated key cannot delegate), its
//! window at `now`, its purpose equal to the object's, the delegation not
//! revoked (by key or serial) by the list in force; then the object's
//! signature under the delegated key; then that the object stays inside
//! the delegation's server globs ([`Delegable::within`]): for a licence,
//! its server id **and every host name** (the names a sidecar checks), for
//! an access list, every server each grant names (a grant for every server
//! is refused under a delegation with globs); and, for a revocation list,
//! the delegation not revoked by the list itself.
//!
//! How a glob covers a name ([`Delegation::allows_host`]): `*` any run of
//! characters (dots included), `?` one character. A server id is matched
//! as it is (a server id is an exact name everywhere). A host name is
//! matched as the sidecar compares it: ASCII case ignored, and the name and
//! the glob each taken without one trailing dot (`db1.` is `db1`). A host
//! name a resolver would read as a numeric IPv4 address in any spelling
//! but the canonical dotted quad (`127.1`, `0x7f.0.0.1`, `2130706433`,
//! `010.0.0.1`) is refused under a delegation: one spelling could name an
//! address another glob was meant to keep out.

use crate::cert::{Licence, LicenceVerified, MAX_SERVER_ID, Serial, check_tag, check_window};
use crate::codec::{Reader, Writer};
use crate::crl::{Crl, Revocations};
use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, SignError, SigningKey};
use crate::labels::{self, magic, pem};
use crate::rootkey::{RootKey, RootSigner};
use crate::time::UnixTime;
use crate::{ProtoError, armor};

const VERSION: u8 = 1;
/// Most server globs in one delegation.
pub const MAX_GLOBS: usize = 16;
/// Longest delegation: every glob at its longest.
pub const MAX_DELEGATION_LEN: usize = 4
    + 1
    + 16
    + 1
    + 32
    + 1
    + MAX_GLOBS * (1 + MAX_SERVER_ID)
    + 8
    + 8
    + 32
    + crate::rootkey::HYBRID_SIG_LEN;
/// The shortest delegation: no globs.
const MIN_DELEGATION_LEN: usize = 4 + 1 + 16 + 1 + 32 + 1 + 8 + 8 + 32 + 64;
/// Where the issuer starts, counted from the end.
const ISSUER_FROM_END: usize = 32 + 64;

/// What a delegated key may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Server licences (optionally only for some server ids).
    Licences,
    /// Signed access lists.
    Access,
    /// Revocation lists.
    Revocations,
    /// OpenSSH host certificates: the root certifies a host CA key of its
    /// own (`ztssh-ca host-ca`), which signs them with OpenSSH's format.
    /// No ztssh object verifies under such a key (its purpose matches none).
    HostCa,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Self::Licences,
        Self::Access,
        Self::Revocations,
        Self::HostCa,
    ];

    fn wire(self) -> u8 {
        match self {
            Self::Licences => 1,
            Self::Access => 2,
            Self::Revocations => 3,
            Self::HostCa => 4,
        }
    }

    fn from_wire(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.wire() == b)
    }

    /// The word the CA tool and `show` use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Licences => "licences",
            Self::Access => "access",
            Self::Revocations => "revocations",
            Self::HostCa => "host-ca",
        }
    }

    /// Parses [`Purpose::label`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.label() == text)
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The fields the root signs into a delegation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationBody {
    /// Unique serial (revocable in the list's serial section).
    pub serial: Serial,
    /// What the delegated key may sign.
    pub purpose: Purpose,
    /// The delegated (online) key.
    pub key: PublicKey,
    /// For licences: the server ids and host names it may license; for
    /// access lists: the servers its grants may name; as globs (`*` any
    /// run, `?` one character); empty: any server.
    pub servers: Vec<String>,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    /// The root that signed it.
    pub issuer: PublicKey,
}

/// A root-signed delegation. Only [`Delegation::decode_verified`] (the
/// root's signature checked first) and [`DelegationBody::sign`] make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    /// Signed fields.
    pub body: DelegationBody,
    encoded: Vec<u8>,
}

/// A server glob: a server id's characters, plus `*` and `?`.
pub fn check_glob(glob: &str) -> Result<(), Malformed> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '*' | '?');
    if glob.is_empty() || glob.len() > MAX_SERVER_ID || !glob.chars().all(ok) {
        return Err(Malformed::Invalid {
            what: "delegation server glob",
            why: "1 to 64 letters, digits, . _ @ - and the wildcards * ?",
        });
    }
    Ok(())
}

/// Whether `name` matches `glob` (`*`: any run, `?`: one byte). Linear
/// in the lengths (the classic backtracking over the last `*`).
pub fn glob_matches(glob: &str, name: &str) -> bool {
    glob_matches_by(glob.as_bytes(), name.as_bytes(), |g, n| g == b'?' || g == n)
}

/// The star-backtracking match with `one(glob_byte, name_byte)` deciding
/// whether a glob byte other than `*` takes one name byte.
fn glob_matches_by(g: &[u8], n: &[u8], one: impl Fn(u8, u8) -> bool) -> bool {
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = n.get(ni) {
        match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&p) if one(p, c) => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Whether every name glob `inner` matches is matched by `outer` too
/// (sound, not complete: when unsure, no). `outer`'s `*` takes any run of
/// `inner` (wildcards included), its `?` one character of `inner` other
/// than `*`, and its other characters only themselves, never a wildcard
/// of `inner`. So `web1` and `web-*` are within `web*`; `w*` and `web*`
/// are not within `web?`.
pub fn glob_within(inner: &str, outer: &str) -> bool {
    glob_matches_by(outer.as_bytes(), inner.as_bytes(), |o, i| match o {
        b'?' => i != b'*',
        _ => o == i && i != b'*' && i != b'?',
    })
}

/// A host name or glob as the sidecar compares names: lower case, without
/// one trailing dot.
fn host_form(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Whether a resolver (`inet_aton`, which `getaddrinfo` uses) would read
/// `host` as an IPv4 address in a spelling other than the canonical
/// dotted quad: one to four parts, each decimal, octal (leading `0`) or
/// hex (`0x`), not exactly four plain decimal parts without leading zeros.
fn is_odd_ipv4_spelling(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    let numeric = |p: &&str| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("0x") {
            Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if parts.is_empty() || parts.len() > 4 || !parts.iter().all(numeric) {
        return false;
    }
    host.parse::<std::net::Ipv4Addr>().is_err()
}

impl DelegationBody {
    fn encode_tbs(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(magic::DELEGATION)
            .u8(VERSION)
            .bytes(&self.serial.0)
            .u8(self.purpose.wire())
            .bytes(&self.key.0);
        w.u8(u8::try_from(self.servers.len()).unwrap_or(u8::MAX));
        for s in &self.servers {
            w.str8(s);
        }
        w.u64(self.not_before)
            .u64(self.not_after)
            .bytes(&self.issuer.0);
        w.into_vec()
    }

    fn validate(&self) -> Result<(), Malformed> {
        let invalid = |why| Malformed::Invalid {
            what: "delegation",
            why,
        };
        if self.servers.len() > MAX_GLOBS {
            return Err(invalid("at most 16 server globs"));
        }
        if !self.servers.is_empty() && self.purpose == Purpose::Revocations {
            return Err(invalid(
                "a revocations delegation names no servers (a list is for every server)",
            ));
        }
        for g in &self.servers {
            check_glob(g)?;
        }
        if self.not_after <= self.not_before {
            return Err(invalid("not_after is not after not_before"));
        }
        if self.key == self.issuer {
            return Err(invalid("the root cannot be delegated to itself"));
        }
        Ok(())
    }

    /// Signs the delegation with the root key.
    pub fn sign(self, root: &SigningKey) -> Result<Delegation, Malformed> {
        self.sign_with(root)
            .map_err(|e| e.into_malformed("delegation"))
    }

    /// Signs the delegation with the root's key wherever it is held.
    pub fn sign_with(self, root: &(impl RootSigner + ?Sized)) -> Result<Delegation, SignError> {
        self.validate()?;
        if root.root_key().id() != self.issuer {
            return Err(Malformed::Invalid {
                what: "delegation",
                why: "issuer is not the signing key",
            }
            .into());
        }
        let mut encoded = self.encode_tbs();
        let signature = root.try_sign_root(labels::CTX_DELEGATION, &encoded)?;
        signature.encode_into(&mut encoded);
        Ok(Delegation {
            body: self,
            encoded,
        })
    }
}

fn refused(why: String) -> ProtoError {
    AuthError::NotDelegated {
        what: "delegation",
        why,
    }
    .into()
}

impl Delegation {
    /// Verifies the root's signature over `bytes` (its issuer, at a fixed
    /// offset from the end, must be `root`), then parses them. The window,
    /// purpose and revocation are [`verify_chain`]'s to check.
    pub fn decode_verified(bytes: &[u8], root: &RootKey) -> Result<Self, ProtoError> {
        if bytes.len() > MAX_DELEGATION_LEN {
            return Err(Malformed::TooLong {
                what: "delegation",
                len: bytes.len(),
                max: MAX_DELEGATION_LEN,
            }
            .into());
        }
        check_tag(bytes, magic::DELEGATION, "delegation")?;
        crate::cert::verify_signed_tail(
            bytes,
            MIN_DELEGATION_LEN,
            ISSUER_FROM_END,
            root,
            labels::CTX_DELEGATION,
            "delegation",
        )?;
        Ok(Self::decode(bytes)?)
    }

    /// Parses a delegation without verifying it (for `show`, and after
    /// [`Delegation::decode_verified`] checked the signature).
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_DELEGATION_LEN {
            return Err(Malformed::TooLong {
                what: "delegation",
                len: bytes.len(),
                max: MAX_DELEGATION_LEN,
            });
        }
        let mut r = Reader::new(bytes, "delegation");
        r.expect(magic::DELEGATION)?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(Malformed::BadVersion {
                what: "delegation",
                version,
            });
        }
        let serial = Serial(r.array()?);
        let purpose = Purpose::from_wire(r.u8()?).ok_or(Malformed::Invalid {
            what: "delegation",
            why: "unknown purpose",
        })?;
        let key = PublicKey(r.array()?);
        let count = usize::from(r.u8()?);
        if count > MAX_GLOBS {
            return Err(Malformed::TooLong {
                what: "delegation server globs",
                len: count,
                max: MAX_GLOBS,
            });
        }
        let mut servers = Vec::with_capacity(count);
        for _ in 0..count {
            servers.push(r.str8(MAX_SERVER_ID)?.to_owned());
        }
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        let issuer = PublicKey(r.array()?);
        crate::cert::read_root_signature(&mut r, "delegation")?;
        r.finish()?;
        let body = DelegationBody {
            serial,
            purpose,
            key,
            servers,
            not_before,
            not_after,
            issuer,
        };
        body.validate()?;
        Ok(Self {
            body,
            encoded: bytes.to_vec(),
        })
    }

    /// The exact encoded bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Whether a licence for `server_id` is within the delegation (the
    /// server id matched as it is).
    pub fn allows_server(&self, server_id: &str) -> bool {
        self.body.servers.is_empty() || self.body.servers.iter().any(|g| glob_matches(g, server_id))
    }

    /// Whether the host name `host` is within the delegation, matched as
    /// the sidecar compares names (see the module docs).
    pub fn allows_host(&self, host: &str) -> bool {
        if self.body.servers.is_empty() {
            return true;
        }
        if is_odd_ipv4_spelling(host) {
            return false;
        }
        let host = host_form(host);
        self.body
            .servers
            .iter()
            .any(|g| glob_matches(&host_form(g), &host))
    }

    fn globs(&self) -> String {
        self.body.servers.join(", ")
    }

    /// Why a licence for `server_id` with `hostnames` is outside the
    /// delegation, if it is: the server id and every host name must be
    /// matched by one of its globs. The CA tool asks this before it signs;
    /// [`verify_chain`] asks it of every licence.
    pub fn check_licence_names(&self, server_id: &str, hostnames: &[String]) -> Result<(), String> {
        let serial = &self.body.serial;
        if !self.allows_server(server_id) {
            return Err(format!(
                "its signer's delegation {serial} covers servers {}, not {server_id}",
                self.globs()
            ));
        }
        if let Some(h) = hostnames.iter().find(|h| !self.allows_host(h)) {
            let odd = if is_odd_ipv4_spelling(h) {
                " (a numeric address must be written as a dotted quad, like 10.0.0.7)"
            } else {
                ""
            };
            return Err(format!(
                "its signer's delegation {serial} covers servers {}, not the host name {h}{odd}: \
                 a delegated licence's server id and every host name must match one of them",
                self.globs()
            ));
        }
        Ok(())
    }

    /// Checks the delegation at `now` against the list in force (`list`,
    /// if any): its window, and no revocation of its key or serial.
    /// Called by [`verify_chain`] and, for a licence in use, by
    /// [`crate::trust::check_licence`] at every checkpoint.
    pub fn check_in_force(
        &self,
        list: Option<&Revocations>,
        now: UnixTime,
    ) -> Result<(), ProtoError> {
        check_window(self.body.not_before, self.body.not_after, now, "delegation")?;
        if let Some(why) = list.and_then(|r| r.revoked_delegation(&self.body)) {
            return Err(refused(format!(
                "the {} delegation {} is revoked ({why})",
                self.body.purpose, self.body.serial
            )));
        }
        Ok(())
    }
}

/// An object a delegated key may sign in the root's place.
pub trait Delegable: Sized {
    /// The purpose a delegation must have to sign it.
    const PURPOSE: Purpose;
    /// Its name in messages.
    const WHAT: &'static str;
    /// Verifies that `key` signed `bytes` (the signature over the bytes as
    /// received, before anything is parsed) and parses them. The window,
    /// if the object has one, is the caller's to check.
    fn verify_under(bytes: &[u8], key: &RootKey) -> Result<Self, ProtoError>;
    /// Why the object reaches beyond the delegation's server globs, if
    /// it does (a licence's server id and host names; an access list's
    /// grants). Objects that name no server never do.
    fn within(&self, _delegation: &Delegation) -> Result<(), String> {
        Ok(())
    }
    /// Revocations the object itself carries (a list): the delegation
    /// that signed it must not be among them.
    fn revocations(&self) -> Option<&Revocations> {
        None
    }
}

impl Delegable for Licence {
    const PURPOSE: Purpose = Purpose::Licences;
    const WHAT: &'static str = "server licence";
    fn verify_under(bytes: &[u8], key: &RootKey) -> Result<Self, ProtoError> {
        Licence::decode_signed_by(bytes, key)
    }
    fn within(&self, d: &Delegation) -> Result<(), String> {
        d.check_licence_names(&self.body.server_id, &self.body.hostnames)
    }
}

impl Delegable for Crl {
    const PURPOSE: Purpose = Purpose::Revocations;
    const WHAT: &'static str = "revocation list";
    fn verify_under(bytes: &[u8], key: &RootKey) -> Result<Self, ProtoError> {
        Crl::decode_verified(bytes, key)
    }
    fn revocations(&self) -> Option<&Revocations> {
        Some(&self.revoked)
    }
}

/// An object and the delegation its signer holds (`None`: the root signed).
#[derive(Debug)]
pub struct Chained<T> {
    /// The verified object.
    pub object: T,
    /// The delegation, when a delegated key signed it.
    pub delegation: Option<Delegation>,
}

/// The one check of a chain root → delegation → object (see the module
/// docs for the order). `delegation: None` means the root signed the
/// object itself, checked exactly as before delegations existed. `list`
/// is the revocation list in force, if any.
pub fn verify_chain<T: Delegable>(
    root: &RootKey,
    object: &[u8],
    delegation: Option<&[u8]>,
    list: Option<&Revocations>,
    now: UnixTime,
) -> Result<Chained<T>, ProtoError> {
    let Some(delegation) = delegation else {
        return Ok(Chained {
            object: T::verify_under(object, root)?,
            delegation: None,
        });
    };
    let d = Delegation::decode_verified(delegation, root)?;
    d.check_in_force(list, now)?;
    if d.body.purpose != T::PURPOSE {
        return Err(AuthError::NotDelegated {
            what: T::WHAT,
            why: format!(
                "its signer's delegation {} is for {}, not {}",
                d.body.serial,
                d.body.purpose,
                T::PURPOSE
            ),
        }
        .into());
    }
    if root.is_hybrid() {
        return Err(AuthError::NotDelegated {
            what: T::WHAT,
            why: format!(
                "it is signed by the delegated key of delegation {}, but the pinned root is \
                 hybrid (Ed25519 + ML-DSA-65) and delegated keys are Ed25519 only, so the \
                 object would lose its post-quantum signature: sign it with the root itself",
                d.body.serial
            ),
        }
        .into());
    }
    let object = T::verify_under(object, &RootKey::Ed25519(d.body.key))?;
    if let Err(why) = object.within(&d) {
        return Err(AuthError::NotDelegated { what: T::WHAT, why }.into());
    }
    if let Some(why) = object
        .revocations()
        .and_then(|r| r.revoked_delegation(&d.body))
    {
        return Err(refused(format!(
            "the list's own signer is revoked by it ({why}): a delegated key cannot sign once revoked"
        )));
    }
    Ok(Chained {
        object,
        delegation: Some(d),
    })
}

/// A licence from the root or a `licences` delegation, checked by
/// [`verify_chain`] and then in its window at `now`: the way to take a
/// licence from anyone else (the sidecar, from message 2; the proxy, from
/// its file or URL).
pub fn verify_licence(
    root: &RootKey,
    licence: &[u8],
    delegation: Option<&[u8]>,
    list: Option<&Revocations>,
    now: UnixTime,
) -> Result<LicenceVerified, ProtoError> {
    let chained = verify_chain::<Licence>(root, licence, delegation, list, now)?;
    Ok(chained.object.into_verified(chained.delegation, now)?)
}

/// A revocation list from the root or a `revocations` delegation; its
/// delegation is kept in [`Crl::delegation`], for
/// [`crate::trust::offer`]'s rule that a delegated list only adds.
pub fn verify_list(
    root: &RootKey,
    list: &[u8],
    delegation: Option<&[u8]>,
    now: UnixTime,
) -> Result<Crl, ProtoError> {
    let chained = verify_chain::<Crl>(root, list, delegation, None, now)?;
    let mut crl = chained.object;
    crl.delegation = chained.delegation;
    Ok(crl)
}

/// The time at which to check the chain of a signed list kept on this
/// machine (a proxy's cache of a list that went into force, or the
/// operator's file): `now`, or, when its delegation (`delegation`, as
/// received) has ended by `now`, the last second of the delegation's
/// window. Such a list was good when it went into force; it still counts
/// for the version it sets (and a revocation list for what it revokes),
/// while what a list grants is checked against its delegation at every
/// use. The delegation's own signature is verified here first.
pub fn kept_time(
    root: &RootKey,
    delegation: Option<&[u8]>,
    now: UnixTime,
) -> Result<UnixTime, ProtoError> {
    let Some(d) = delegation else {
        return Ok(now);
    };
    let d = Delegation::decode_verified(d, root)?;
    Ok(
        if now >= d.body.not_after && d.body.not_after > d.body.not_before {
            d.body.not_after - 1
        } else {
            now
        },
    )
}

/// Most PEM blocks in one object file: the object and its delegation.
const MAX_BLOCKS: usize = 2;

/// Splits a PEM file into the object labelled `label` and the delegation
/// beside it, if any. Anything else (another label, two objects, two
/// delegations, a third block) is refused.
pub fn split_pem(
    text: &[u8],
    label: &'static str,
) -> Result<(Vec<u8>, Option<Vec<u8>>), Malformed> {
    let text = std::str::from_utf8(text).map_err(|_| Malformed::BadUtf8("PEM file"))?;
    let mut object = None;
    let mut delegation = None;
    let mut rest = text;
    for _ in 0..=MAX_BLOCKS {
        let Some(end_at) = rest.find("-----END ") else {
            break;
        };
        let after = rest
            .get(end_at + 9..)
            .and_then(|t| t.find("-----").map(|i| end_at + 9 + i + 5))
            .ok_or_else(|| Malformed::Armor("an END line without its closing dashes".into()))?;
        let (block, tail) = rest.split_at(after);
        rest = tail;
        let (found, bytes) = armor::decode(block.as_bytes())?;
        let slot = if found == label {
            &mut object
        } else if found == pem::DELEGATION {
            &mut delegation
        } else {
            return Err(Malformed::Armor(format!(
                "expected a {label:?} file (and at most a {:?} beside it), found {found:?}",
                pem::DELEGATION
            )));
        };
        if slot.replace(bytes).is_some() {
            return Err(Malformed::Armor(format!(
                "two {found:?} blocks in one file"
            )));
        }
    }
    if !rest.trim().is_empty() {
        return Err(Malformed::Armor(format!(
            "text after the last block, or more than {MAX_BLOCKS} blocks"
        )));
    }
    let object = object.ok_or_else(|| Malformed::Armor(format!("no {label:?} block")))?;
    Ok((object, delegation))
}

/// A PEM file holding `object` under `label`, and its delegation after it
/// when a delegated key signed it.
pub fn encode_pem(
    label: &str,
    object: &[u8],
    delegation: Option<&Delegation>,
) -> Result<String, armor::EncodeError> {
    let mut text = armor::encode(label, object)?;
    if let Some(d) = delegation {
        text.push_str(&armor::encode(pem::DELEGATION, d.encoded())?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
