//! The signed access list: one list of principals, their OpenSSH public
//! keys, and optionally the servers (server ids or globs) and local
//! accounts each may use, for a fleet without an SSH CA. A proxy pulls it
//! like the revocation list and authorizes what it grants alongside its
//! `authorized_principals` file.
//!
//! ```text
//! AccessList = "ZTAL" ver=1 list_version:u64 issued:u64 valid_until:u64 issuer[32]
//!       n:u32 Entry * n        ; principals strictly ascending (bytes)
//!       signature[64]          ; by the signer, context CTX_ACCESS
//! Entry = principal:str8
//!       k:u8  key:var16 * k    ; 1..=MAX_KEYS OpenSSH wire blobs, ascending
//!       s:u8  server:str8 * s  ; 0 = every server; ids or globs, ascending
//!       a:u8  account:str8 * a ; 0 = not narrowed; ascending
//! ```
//!
//! The signer's key sits at a fixed offset and the signature is the last
//! 64 bytes, so a forged list costs one signature check and nothing it
//! claims is parsed before that check ([`AccessList::decode_verified`]).
//!
//! Who may sign one: the root, or a key an `access` delegation certifies,
//! the delegation beside the list in its PEM file; [`verify_access`] (and
//! [`verify_pem`]) is the one way in, through
//! [`crate::delegation::verify_chain`]. What a delegated list may not do
//! that the root's may, each refused, never narrowed:
//! - reach beyond the delegation's server globs: under a delegation with
//!   globs, every grant must name its servers, each within one of them
//!   ([`crate::delegation::glob_within`]); a grant for every server is
//!   refused;
//! - raise the version by more than
//!   [`crate::crl::MAX_DELEGATED_VERSION_JUMP`] over the list in force
//!   (a stolen key's list at `u64::MAX` would leave the root no newer one);
//! - outlive its delegation: it grants only while its delegation is in
//!   force ([`AccessList::check_signer`], asked at every checkpoint), so
//!   a revocation list revoking the delegation, or its expiry, withdraws
//!   the list in force and ends the sessions only it granted.

use std::collections::{BTreeMap, BTreeSet};

use ssh_key::public::KeyData;

use crate::ProtoError;
use crate::cert::{MAX_PRINCIPAL, MAX_SERVER_ID, check_name};
use crate::codec::{Reader, Writer};
use crate::crl::Revocations;
use crate::delegation::{self, Delegable, Delegation, Purpose};
use crate::error::{AuthError, Malformed};
use crate::keys::{PublicKey, SignError, SigningKey};
use crate::labels::{self, magic, pem};
use crate::rootkey::{RootKey, RootSigner};
use crate::time::UnixTime;

const VERSION: u8 = 1;
/// Where the signer's key starts: after the magic, the format version and
/// the three u64 fields.
const ISSUER_AT: usize = 4 + 1 + 3 * 8;
/// Most principals in one list (10,000 is the figure it is sized for; see
/// docs/BENCHMARKS.md).
pub const MAX_PRINCIPALS: usize = 100_000;
/// Most keys for one principal.
pub const MAX_KEYS: usize = 32;
/// Most server ids or globs for one principal.
pub const MAX_SERVERS: usize = 64;
/// Most accounts for one principal.
pub const MAX_ACCOUNTS: usize = 64;
/// Longest OpenSSH wire encoding of one key (an RSA-4096 key takes 535).
pub const MAX_KEY_BLOB: usize = 2048;
/// Longest account name (what useradd accepts).
pub const MAX_ACCOUNT: usize = 32;
/// The smallest encoding of one entry: a 1-byte name, one key of 1 byte,
/// no servers, no accounts. Bounds the count against the bytes left.
const MIN_ENTRY: usize = 2 + 1 + 3 + 1 + 1;

const WHAT: &str = "access list";

/// What the list grants one principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The keys that may act as the principal (at least one).
    pub keys: Vec<KeyData>,
    /// Server ids or globs (`*`, `?`) it may use; empty: every server.
    pub servers: BTreeSet<String>,
    /// Local accounts it may log in as, narrowing what each proxy's
    /// policy allows; empty: not narrowed.
    pub accounts: BTreeSet<String>,
}

impl Grant {
    /// Whether this grant covers server `server_id`.
    pub fn covers(&self, server_id: &str) -> bool {
        self.servers.is_empty() || self.servers.iter().any(|g| glob_matches(g, server_id))
    }

    /// Whether `key` is one of this grant's keys.
    pub fn has_key(&self, key: &KeyData) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

/// A decoded access list; [`AccessList::decode_verified`] checks the
/// signature before parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessList {
    /// Monotonic list version; proxies refuse to go backwards.
    pub list_version: u64,
    /// When it was signed.
    pub issued: UnixTime,
    /// When it is due to be replaced; after this it is stale.
    pub valid_until: UnixTime,
    /// The key that signed it.
    pub issuer: PublicKey,
    /// Principal to grant.
    pub principals: BTreeMap<String, Grant>,
    /// The root's delegation to the key that signed the list, when a
    /// delegated key did (set by [`verify_access`]; never encoded in the
    /// list: it travels beside it in the PEM file).
    pub delegation: Option<Delegation>,
}

impl crate::trust::Versioned for AccessList {
    fn list_version(&self) -> u64 {
        self.list_version
    }

    fn delegated(&self) -> bool {
        self.delegation.is_some()
    }

    fn overreaches(&self, current: &Self) -> bool {
        self.delegation.is_some()
            && self.list_version
                > current
                    .list_version
                    .saturating_add(crate::crl::MAX_DELEGATED_VERSION_JUMP)
    }
}

impl Delegable for AccessList {
    const PURPOSE: Purpose = Purpose::Access;
    const WHAT: &'static str = WHAT;
    fn verify_under(bytes: &[u8], key: &RootKey) -> Result<Self, ProtoError> {
        AccessList::decode_verified(bytes, key)
    }
    fn within(&self, d: &Delegation) -> Result<(), String> {
        let globs = &d.body.servers;
        if globs.is_empty() {
            return Ok(());
        }
        let serial = &d.body.serial;
        let shown = globs.join(", ");
        for (name, g) in &self.principals {
            if g.servers.is_empty() {
                return Err(format!(
                    "it grants principal {name} every server, but its signer's delegation \
                     {serial} covers servers {shown} only: name the servers (servers = [...]) \
                     inside them"
                ));
            }
            if let Some(s) = g
                .servers
                .iter()
                .find(|s| !globs.iter().any(|o| delegation::glob_within(s, o)))
            {
                return Err(format!(
                    "it grants principal {name} servers {s}, but its signer's delegation \
                     {serial} covers servers {shown} only"
                ));
            }
        }
        Ok(())
    }
}

fn key_blob(key: &KeyData) -> Result<Vec<u8>, Malformed> {
    ssh_key::PublicKey::new(key.clone(), "")
        .to_bytes()
        .map_err(|_| Malformed::Invalid {
            what: WHAT,
            why: "a key cannot be encoded",
        })
}

const NOT_CANONICAL: Malformed = Malformed::Invalid {
    what: WHAT,
    why: "not in canonical form",
};

/// Checks one server id or glob: the characters of a server id, plus `*`
/// and `?`.
pub fn check_server_glob(glob: &str) -> Result<(), Malformed> {
    if glob.is_empty() || glob.len() > MAX_SERVER_ID {
        return Err(Malformed::Invalid {
            what: "server glob",
            why: "empty or too long",
        });
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '*' | '?');
    if !glob.chars().all(ok) || glob.starts_with(['.', '-']) {
        return Err(Malformed::Invalid {
            what: "server glob",
            why: "only letters, digits, . _ @ - and the wildcards * ? are allowed",
        });
    }
    Ok(())
}

/// Checks one account name: 1 to 32 of `A-Z a-z 0-9 . _ -`, not starting
/// with `-` (as the policy file's accounts).
pub fn check_account(name: &str) -> Result<(), Malformed> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_ACCOUNT || name.starts_with('-') || !name.chars().all(ok)
    {
        return Err(Malformed::Invalid {
            what: "account",
            why: "1-32 of A-Z a-z 0-9 . _ -, not starting with -",
        });
    }
    Ok(())
}

/// Whether `name` matches `glob`, where `*` is any run of characters and
/// `?` one character. Iterative with one backtrack point, so linear in
/// practice and never recursive.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == n.get(ni) => {
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

impl AccessList {
    /// The grant for `principal` with `key` on server `server_id`, if the
    /// list has one.
    pub fn grant(&self, principal: &str, key: &KeyData, server_id: &str) -> Option<&Grant> {
        self.principals
            .get(principal)
            .filter(|g| g.has_key(key) && g.covers(server_id))
    }

    /// Whether the list is past its valid-until time.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        now >= self.valid_until
    }

    /// How many keys the list holds in all.
    pub fn keys(&self) -> usize {
        self.principals.values().map(|g| g.keys.len()).sum()
    }

    fn check(&self) -> Result<(), Malformed> {
        let too_many =
            |what: &'static str, len: usize, max: usize| Malformed::TooLong { what, len, max };
        if self.principals.len() > MAX_PRINCIPALS {
            return Err(too_many(
                "access list principals",
                self.principals.len(),
                MAX_PRINCIPALS,
            ));
        }
        for (name, g) in &self.principals {
            check_name(name, MAX_PRINCIPAL, "principal")?;
            if g.keys.is_empty() {
                return Err(Malformed::Invalid {
                    what: WHAT,
                    why: "a principal has no key",
                });
            }
            if g.keys.len() > MAX_KEYS {
                return Err(too_many("access list keys", g.keys.len(), MAX_KEYS));
            }
            if g.servers.len() > MAX_SERVERS {
                return Err(too_many(
                    "access list servers",
                    g.servers.len(),
                    MAX_SERVERS,
                ));
            }
            if g.accounts.len() > MAX_ACCOUNTS {
                return Err(too_many(
                    "access list accounts",
                    g.accounts.len(),
                    MAX_ACCOUNTS,
                ));
            }
            for k in &g.keys {
                crate::userkey::check_key(k).map_err(|_| Malformed::Invalid {
                    what: WHAT,
                    why: "a key is of a type or size ztssh refuses",
                })?;
                let blob = key_blob(k)?;
                if blob.len() > MAX_KEY_BLOB {
                    return Err(too_many("access list key", blob.len(), MAX_KEY_BLOB));
                }
            }
            for s in &g.servers {
                check_server_glob(s)?;
            }
            for a in &g.accounts {
                check_account(a)?;
            }
        }
        Ok(())
    }

    fn tbs(&self) -> Result<Vec<u8>, Malformed> {
        let mut w = Writer::new();
        w.bytes(magic::ACCESS)
            .u8(VERSION)
            .u64(self.list_version)
            .u64(self.issued)
            .u64(self.valid_until)
            .bytes(&self.issuer.0);
        w.u32(u32::try_from(self.principals.len()).unwrap_or(u32::MAX));
        for (name, g) in &self.principals {
            w.str8(name);
            let mut blobs = g.keys.iter().map(key_blob).collect::<Result<Vec<_>, _>>()?;
            blobs.sort();
            blobs.dedup();
            w.u8(u8::try_from(blobs.len()).unwrap_or(u8::MAX));
            for b in &blobs {
                w.var16(b);
            }
            for set in [&g.servers, &g.accounts] {
                w.u8(u8::try_from(set.len()).unwrap_or(u8::MAX));
                for s in set {
                    w.str8(s);
                }
            }
        }
        Ok(w.into_vec())
    }

    /// Signs and encodes the list (the signer's key must be the issuer).
    pub fn sign(&self, signer: &SigningKey) -> Result<Vec<u8>, Malformed> {
        self.sign_with(signer).map_err(|e| e.into_malformed(WHAT))
    }

    /// [`Self::sign`] with the key wherever it is held.
    pub fn sign_with(&self, signer: &(impl RootSigner + ?Sized)) -> Result<Vec<u8>, SignError> {
        self.check()?;
        if signer.root_key().id() != self.issuer {
            return Err(Malformed::Invalid {
                what: WHAT,
                why: "issuer is not the signing key",
            }
            .into());
        }
        let mut out = self.tbs()?;
        let sig = signer.try_sign_root(labels::CTX_ACCESS, &out)?;
        sig.encode_into(&mut out);
        Ok(out)
    }

    /// Verifies that `root` (or the delegated key [`verify_access`]
    /// passes) signed the list, then parses it.
    ///
    /// Nothing the signature covers is parsed before it verifies; the
    /// parse then requires the canonical encoding [`AccessList::sign`]
    /// writes (every set strictly ascending, no trailing bytes).
    pub fn decode_verified(bytes: &[u8], root: &RootKey) -> Result<Self, ProtoError> {
        let (tbs, signature) = root.split_signed(bytes, WHAT)?;
        if tbs.len() < ISSUER_AT + 32 {
            return Err(Malformed::Truncated(WHAT).into());
        }
        let mut r = Reader::new(tbs, WHAT);
        r.expect(magic::ACCESS)?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(Malformed::BadVersion {
                what: WHAT,
                version,
            }
            .into());
        }
        if tbs.get(ISSUER_AT..ISSUER_AT + 32) != Some(&root.id().0[..]) {
            return Err(AuthError::WrongIssuer(WHAT).into());
        }
        root.verify(labels::CTX_ACCESS, tbs, &signature, WHAT)?;
        Ok(Self::decode_signed(r)?)
    }

    /// Parses the signed bytes after the format version.
    fn decode_signed(mut r: Reader<'_>) -> Result<Self, Malformed> {
        let list_version = r.u64()?;
        let issued = r.u64()?;
        let valid_until = r.u64()?;
        let issuer = PublicKey(r.array()?);
        let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if count > MAX_PRINCIPALS || count.saturating_mul(MIN_ENTRY) > r.remaining() {
            return Err(Malformed::TooLong {
                what: "access list principals",
                len: count,
                max: MAX_PRINCIPALS,
            });
        }
        let mut principals = BTreeMap::new();
        let mut last: Option<&[u8]> = None;
        for _ in 0..count {
            let name = r.str8(MAX_PRINCIPAL)?;
            check_name(name, MAX_PRINCIPAL, "principal")?;
            if last.is_some_and(|l| l >= name.as_bytes()) {
                return Err(NOT_CANONICAL);
            }
            last = Some(name.as_bytes());
            let grant = read_grant(&mut r)?;
            principals.insert(name.to_owned(), grant);
        }
        r.finish()?;
        Ok(Self {
            list_version,
            issued,
            valid_until,
            issuer,
            principals,
            delegation: None,
        })
    }

    /// Why the list may not grant now, if it may not: a delegated list's
    /// delegation outside its window at `now` or revoked by `revocations`
    /// (the revocation list in force). A root-signed list always may.
    pub fn check_signer(
        &self,
        revocations: Option<&Revocations>,
        now: UnixTime,
    ) -> Result<(), ProtoError> {
        match &self.delegation {
            Some(d) => d.check_in_force(revocations, now),
            None => Ok(()),
        }
    }
}

fn read_grant(r: &mut Reader<'_>) -> Result<Grant, Malformed> {
    let k = usize::from(r.u8()?);
    if k == 0 || k > MAX_KEYS {
        return Err(Malformed::TooLong {
            what: "access list keys",
            len: k,
            max: MAX_KEYS,
        });
    }
    let mut keys = Vec::with_capacity(k);
    let mut last: Option<&[u8]> = None;
    for _ in 0..k {
        let blob = r.var16(MAX_KEY_BLOB)?;
        if last.is_some_and(|l| l >= blob) {
            return Err(NOT_CANONICAL);
        }
        last = Some(blob);
        let key = ssh_key::PublicKey::from_bytes(blob).map_err(|_| Malformed::Invalid {
            what: WHAT,
            why: "a key is not an OpenSSH public key",
        })?;
        let data = key.key_data().clone();
        if key_blob(&data)? != blob {
            return Err(NOT_CANONICAL);
        }
        crate::userkey::check_key(&data).map_err(|_| Malformed::Invalid {
            what: WHAT,
            why: "a key is of a type or size ztssh refuses",
        })?;
        keys.push(data);
    }
    let servers = read_set(r, MAX_SERVERS, MAX_SERVER_ID, "access list servers", |s| {
        check_server_glob(s)
    })?;
    let accounts = read_set(r, MAX_ACCOUNTS, MAX_ACCOUNT, "access list accounts", |s| {
        check_account(s)
    })?;
    Ok(Grant {
        keys,
        servers,
        accounts,
    })
}

fn read_set(
    r: &mut Reader<'_>,
    max: usize,
    max_len: usize,
    what: &'static str,
    check: impl Fn(&str) -> Result<(), Malformed>,
) -> Result<BTreeSet<String>, Malformed> {
    let n = usize::from(r.u8()?);
    if n > max {
        return Err(Malformed::TooLong { what, len: n, max });
    }
    let mut out = BTreeSet::new();
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let s = r.str8(max_len)?;
        check(s)?;
        if last.is_some_and(|l| l.as_bytes() >= s.as_bytes()) {
            return Err(NOT_CANONICAL);
        }
        last = Some(s);
        out.insert(s.to_owned());
    }
    Ok(out)
}

/// Why an access list's PEM text was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not PEM armour, or armour of another kind of file.
    #[error("not an access list: {0}")]
    NotPem(Malformed),
    /// The list does not parse or does not verify under the signer.
    #[error(transparent)]
    Invalid(ProtoError),
    /// Its delegation does not let its signer sign it now (revoked,
    /// expired, another purpose, or the list reaches beyond its servers).
    #[error(
        "{0}; sign the list with the root (ztssh-ca access --dir CA) or with an access \
         delegation in force that covers its servers (ztssh-ca access --delegation), and \
         publish it"
    )]
    NotDelegated(ProtoError),
}

/// An access list from the root or an `access` delegation, checked by
/// [`crate::delegation::verify_chain`] against the revocation list in
/// force (`revocations`) at `now`; its delegation is kept in
/// [`AccessList::delegation`].
pub fn verify_access(
    root: &RootKey,
    list: &[u8],
    delegation: Option<&[u8]>,
    revocations: Option<&Revocations>,
    now: UnixTime,
) -> Result<AccessList, AccessError> {
    let chained = delegation::verify_chain::<AccessList>(root, list, delegation, revocations, now)
        .map_err(|e| match e {
            ProtoError::Auth(_) if delegation.is_some() => AccessError::NotDelegated(e),
            e => AccessError::Invalid(e),
        })?;
    let mut list = chained.object;
    list.delegation = chained.delegation;
    Ok(list)
}

/// Checks an access list as fetched or read: PEM of the right kind (the
/// list, and its delegation after it when a delegated key signed it), then
/// [`verify_access`].
pub fn verify_pem(
    text: &[u8],
    root: &RootKey,
    revocations: Option<&Revocations>,
    now: UnixTime,
) -> Result<AccessList, AccessError> {
    let (der, delegation) =
        delegation::split_pem(text, pem::ACCESS).map_err(AccessError::NotPem)?;
    verify_access(root, &der, delegation.as_deref(), revocations, now)
}

/// An access list kept on this machine (the proxy's cache of what went
/// into force, or the operator's `access_list` file), read at start-up or
/// on SIGHUP: checked as [`verify_pem`] (without revocations; the list in
/// force is checked against them at every grant), except that a delegation
/// whose window has ended by `now` does not refuse it. Such a list loads
/// *withdrawn*: [`AccessList::check_signer`] refuses every grant it holds,
/// but its version still bounds what may replace it, so that after a
/// restart an older list (a root-signed one still on the URL, say) cannot
/// re-grant what the expired delegation's list had taken out. Every
/// signature is still verified, the delegation's at a moment inside its
/// window; a delegation that has not begun is refused as before.
pub fn verify_pem_kept(
    text: &[u8],
    root: &RootKey,
    now: UnixTime,
) -> Result<AccessList, AccessError> {
    let (der, delegation) =
        delegation::split_pem(text, pem::ACCESS).map_err(AccessError::NotPem)?;
    let at = delegation::kept_time(root, delegation.as_deref(), now)
        .map_err(AccessError::NotDelegated)?;
    verify_access(root, &der, delegation.as_deref(), None, at)
}

#[cfg(test)]
mod tests;
