//! Signed lists: verifying one from its PEM text, and whether one offered
//! may replace the one in force.

use thiserror::Error;

use crate::ProtoError;
use crate::crl::Crl;
use crate::delegation;
use crate::error::Malformed;
use crate::labels::pem;
use crate::time::UnixTime;

/// Why a list's PEM text was refused.
#[derive(Debug, Error)]
pub enum ListError {
    /// Not PEM armour, or armour of another kind of file.
    #[error("not a revocation list: {0}")]
    NotPem(Malformed),
    /// The list does not parse or does not verify under the root.
    #[error(transparent)]
    Invalid(ProtoError),
}

/// Checks a list as fetched or read: PEM of the right kind, then a list
/// signed by the pinned `root`, or by a `revocations` delegation's key
/// with the delegation beside it in the file
/// ([`crate::delegation::verify_list`]; every signature is verified before
/// what it signs is parsed).
pub fn verify_pem(
    text: &[u8],
    root: &crate::rootkey::RootKey,
    now: UnixTime,
) -> Result<Crl, ListError> {
    let (der, delegation) = delegation::split_pem(text, pem::CRL).map_err(ListError::NotPem)?;
    delegation::verify_list(root, &der, delegation.as_deref(), now).map_err(ListError::Invalid)
}

/// A revocation list kept on this machine (the pull's cache, the
/// operator's `revocation_list` file), read at start-up or on SIGHUP: as
/// [`verify_pem`], except that a `revocations` delegation that has ended
/// by `now` does not refuse it ([`delegation::kept_time`]): what it
/// revokes was revoked when it went into force, and a restart must not
/// forget it (nor go back to an older version).
pub fn verify_pem_kept(
    text: &[u8],
    root: &crate::rootkey::RootKey,
    now: UnixTime,
) -> Result<Crl, ListError> {
    let (der, delegation) = delegation::split_pem(text, pem::CRL).map_err(ListError::NotPem)?;
    let at = delegation::kept_time(root, delegation.as_deref(), now).map_err(ListError::Invalid)?;
    delegation::verify_list(root, &der, delegation.as_deref(), at).map_err(ListError::Invalid)
}

/// What to do with a revocation list offered to replace the loaded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListUpdate {
    /// Newer: it replaces the loaded list.
    Replace,
    /// The same version with the same contents: nothing changes.
    Same,
    /// The same version as the loaded list with other contents: two lists
    /// were signed under one version (a signing mistake, or a CA directory
    /// copied and used in two places). Refused: the one in force stays,
    /// since verifiers that loaded the other would never move off it either;
    /// the CA has to issue a newer version that holds every revocation.
    Forked {
        /// The version both lists carry.
        version: u64,
    },
    /// Older than the loaded list, but not older than what its own source
    /// gave before: that source merely lags (another source, or this one's
    /// earlier answer, got here first). Refused like a rollback, since the
    /// older list would resurrect revoked identities, but nothing failed.
    Behind {
        /// The version in force.
        loaded: u64,
        /// The version offered.
        offered: u64,
    },
    /// Older: refused, since a rollback would resurrect revoked identities.
    Rollback {
        /// The version in force.
        loaded: u64,
        /// The version offered.
        offered: u64,
    },
}

/// A signed list with a version that only goes up: the revocation list
/// and the access list ([`crate::access::AccessList`]).
pub trait Versioned: PartialEq {
    /// The list's version.
    fn list_version(&self) -> u64;

    /// Whether this list may not replace `current` because a delegated
    /// key signed it and it does what only the root may: a revocation
    /// list that leaves out entries of `current`, or any list that raises
    /// the version by more than [`crate::crl::MAX_DELEGATED_VERSION_JUMP`].
    /// Lists the root signs never do.
    fn overreaches(&self, _current: &Self) -> bool {
        false
    }

    /// Whether a delegated key signed the list (not the root).
    fn delegated(&self) -> bool {
        false
    }
}

/// The highest version a list a delegated key signed may carry, whatever
/// is in force: the top [`crate::crl::MAX_DELEGATED_VERSION_JUMP`]
/// versions stay the root's, so that a stolen key's list offered where no
/// list is in force yet (a new proxy, a first fetch) cannot take the
/// version out of the root's reach either.
pub const MAX_DELEGATED_VERSION: u64 = u64::MAX - crate::crl::MAX_DELEGATED_VERSION_JUMP;

impl Versioned for Crl {
    fn list_version(&self) -> u64 {
        self.list_version
    }

    fn delegated(&self) -> bool {
        self.delegation.is_some()
    }

    fn overreaches(&self, current: &Self) -> bool {
        self.delegation.is_some()
            && (!self.revoked.contains_all(&current.revoked)
                || self.list_version
                    > current
                        .list_version
                        .saturating_add(crate::crl::MAX_DELEGATED_VERSION_JUMP))
    }
}

/// Only a newer list replaces the one in force (`current`; none yet, and
/// any list replaces it); one of the same version must be the same list.
/// Every place that replaces a list asks this.
///
/// A list a delegated key signed may only add to the list in force
/// ([`Versioned::overreaches`]): one that leaves out any of its
/// entries would resurrect revoked identities (or its own revoked
/// delegation, which the list in force names), so it is refused as a
/// [`ListUpdate::Rollback`]. Only the root removes entries. Nor may it
/// raise the version by more than [`crate::crl::MAX_DELEGATED_VERSION_JUMP`]:
/// a stolen key's list at `u64::MAX` would leave the root no newer version
/// to revoke it with; nor, whatever is in force (none at all, say), above
/// [`MAX_DELEGATED_VERSION`].
pub fn offer<L: Versioned>(current: Option<&L>, offered: &L) -> ListUpdate {
    if offered.delegated() && offered.list_version() > MAX_DELEGATED_VERSION {
        return ListUpdate::Rollback {
            loaded: current.map_or(0, L::list_version),
            offered: offered.list_version(),
        };
    }
    let Some(cur) = current else {
        return ListUpdate::Replace;
    };
    if offered.overreaches(cur) {
        return ListUpdate::Rollback {
            loaded: cur.list_version(),
            offered: offered.list_version(),
        };
    }
    match offered.list_version().cmp(&cur.list_version()) {
        std::cmp::Ordering::Greater => ListUpdate::Replace,
        std::cmp::Ordering::Equal if offered == cur => ListUpdate::Same,
        std::cmp::Ordering::Equal => ListUpdate::Forked {
            version: cur.list_version(),
        },
        std::cmp::Ordering::Less => ListUpdate::Rollback {
            loaded: cur.list_version(),
            offered: offered.list_version(),
        },
    }
}

/// [`offer`], for a list from a source (a file, a URL) whose newest list
/// so far was version `source_newest` (`None`: this source gave none yet).
/// A list older than the one in force is refused either way; it is a
/// [`ListUpdate::Rollback`] only if its own source went back, and
/// [`ListUpdate::Behind`] if the source is merely not as far as the list in
/// force (which came from elsewhere, or from an answer of the same source
/// that overtook this one). A delegated list refused by
/// [`Versioned::overreaches`] is never merely behind: it is not older,
/// it overreaches, and is a [`ListUpdate::Rollback`] (logged as an error).
pub fn offer_from<L: Versioned>(
    current: Option<&L>,
    offered: &L,
    source_newest: Option<u64>,
) -> ListUpdate {
    match offer(current, offered) {
        ListUpdate::Rollback { loaded, offered: v }
            if v < loaded && source_newest.is_none_or(|newest| v >= newest) =>
        {
            ListUpdate::Behind { loaded, offered: v }
        }
        update => update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::armor;
    use crate::crl::Revocations;
    use crate::keys::PublicKey;
    use crate::keys::{SigningKey, TestRng};

    /// Version `version` of one root's list, the same contents each time.
    fn list(version: u64) -> Crl {
        Crl {
            list_version: version,
            issued: 10,
            next_update: 20,
            issuer: PublicKey([1; 32]),
            revoked: Revocations::default(),
            delegation: None,
        }
    }

    #[test]
    fn an_older_list_is_a_rollback_only_if_its_own_source_went_back() {
        let loaded = list(7);
        // Never applied in any case.
        let rollback = ListUpdate::Rollback {
            loaded: 7,
            offered: 5,
        };
        let behind = ListUpdate::Behind {
            loaded: 7,
            offered: 5,
        };
        assert_eq!(offer(Some(&loaded), &list(5)), rollback);
        assert_eq!(offer_from(Some(&loaded), &list(5), Some(6)), rollback);
        assert_eq!(offer_from(Some(&loaded), &list(5), Some(5)), behind);
        assert_eq!(offer_from(Some(&loaded), &list(5), Some(4)), behind);
        assert_eq!(offer_from(Some(&loaded), &list(5), None), behind);
        // Newer and equal lists are what `offer` says, whatever the source did.
        assert_eq!(
            offer_from(Some(&loaded), &list(8), Some(9)),
            ListUpdate::Replace
        );
        assert_eq!(
            offer_from(Some(&loaded), &list(7), Some(9)),
            ListUpdate::Same
        );
        assert_eq!(offer_from(None, &list(1), Some(9)), ListUpdate::Replace);
    }

    #[test]
    fn the_same_version_with_other_contents_is_a_fork_never_the_same() {
        let loaded = list(7);
        assert_eq!(offer(Some(&loaded), &loaded.clone()), ListUpdate::Same);
        let forked = ListUpdate::Forked { version: 7 };
        // Anything that differs under one version: the entries, the times,
        // the issuer.
        let mut other = loaded.clone();
        other.revoked.principals.insert("mallory".into());
        assert_eq!(offer(Some(&loaded), &other), forked);
        // The loaded one is refused the other way round too.
        assert_eq!(offer(Some(&other), &loaded), forked);
        let mut later = loaded.clone();
        later.next_update += 1;
        assert_eq!(offer(Some(&loaded), &later), forked);
        let mut issued = loaded.clone();
        issued.issued -= 1;
        assert_eq!(offer(Some(&loaded), &issued), forked);
        // Whatever the source did before.
        for newest in [None, Some(6), Some(7), Some(8)] {
            assert_eq!(offer_from(Some(&loaded), &other, newest), forked);
        }
        // Newer still replaces, older is still refused as before.
        assert_eq!(offer(Some(&other), &list(8)), ListUpdate::Replace);
    }

    #[test]
    fn a_list_is_verified_from_its_pem_under_the_root() {
        let root = SigningKey::generate(&mut TestRng);
        let crl = Crl {
            list_version: 4,
            issued: 10,
            next_update: 20,
            issuer: root.public(),
            revoked: Revocations::default(),
            delegation: None,
        };
        let text = armor::encode(pem::CRL, &crl.sign(&root).expect("sign")).expect("armour");
        assert_eq!(
            verify_pem(text.as_bytes(), &root.public().into(), 15).expect("verify"),
            crl
        );
        let other = SigningKey::generate(&mut TestRng).public();
        assert!(matches!(
            verify_pem(text.as_bytes(), &other.into(), 15),
            Err(ListError::Invalid(_))
        ));
        let licence = armor::encode(pem::LICENCE, b"x").expect("armour");
        let e = verify_pem(licence.as_bytes(), &root.public().into(), 15).expect_err("wrong kind");
        assert!(e.to_string().starts_with("not a revocation list: "), "{e}");
    }
}
