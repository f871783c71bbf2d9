//! Signed lists: verifying one from its PEM text, and whether one offered
//! may replace the one in force.

use thiserror::Error;

use crate::ProtoError;
use crate::crl::Crl;
use crate::delegation;
use crate::error::Malformed;
use crate::keys::PublicKey;
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
pub fn verify_pem(text: &[u8], root: &PublicKey, now: UnixTime) -> Result<Crl, ListError> {
    let (der, delegation) = delegation::split_pem(text, pem::CRL).map_err(ListError::NotPem)?;
    delegation::verify_list(root, &der, delegation.as_deref(), now).map_err(ListError::Invalid)
}

/// What to do with a revocation list offered to replace the loaded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListUpdate {
    /// Newer: it replaces the loaded list.
    Replace,
    /// The same version: nothing changes.
    Same,
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

/// Only a newer list replaces the one in force (`current`; none yet, and
/// any list replaces it). Every place that replaces a list asks this.
///
/// A list a delegated key signed may only add to the list in force: one
/// that leaves out any of its entries would resurrect revoked identities
/// (or its own revoked delegation, which the list in force names), so it
/// is refused as a [`ListUpdate::Rollback`]. Only the root removes entries.
pub fn offer(current: Option<&Crl>, offered: &Crl) -> ListUpdate {
    let Some(cur) = current else {
        return ListUpdate::Replace;
    };
    if offered.delegation.is_some() && !offered.revoked.contains_all(&cur.revoked) {
        return ListUpdate::Rollback {
            loaded: cur.list_version,
            offered: offered.list_version,
        };
    }
    match offered.list_version.cmp(&cur.list_version) {
        std::cmp::Ordering::Greater => ListUpdate::Replace,
        std::cmp::Ordering::Equal => ListUpdate::Same,
        std::cmp::Ordering::Less => ListUpdate::Rollback {
            loaded: cur.list_version,
            offered: offered.list_version,
        },
    }
}

/// [`offer`], for a list from a source (a file, a URL) whose newest list
/// so far was version `source_newest` (`None`: this source gave none yet).
/// A list older than the one in force is refused either way; it is a
/// [`ListUpdate::Rollback`] only if its own source went back, and
/// [`ListUpdate::Behind`] if the source is merely not as far as the list in
/// force (which came from elsewhere, or from an answer of the same source
/// that overtook this one).
pub fn offer_from(current: Option<&Crl>, offered: &Crl, source_newest: Option<u64>) -> ListUpdate {
    match offer(current, offered) {
        ListUpdate::Rollback { loaded, offered: v }
            if source_newest.is_none_or(|newest| v >= newest) =>
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
    use crate::keys::{SigningKey, TestRng};

    fn list(version: u64) -> Crl {
        Crl {
            list_version: version,
            issued: 10,
            next_update: 20,
            issuer: SigningKey::generate(&mut TestRng).public(),
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
        let text = armor::encode(pem::CRL, &crl.sign(&root).expect("sign"));
        assert_eq!(
            verify_pem(text.as_bytes(), &root.public(), 15).expect("verify"),
            crl
        );
        let other = SigningKey::generate(&mut TestRng).public();
        assert!(matches!(
            verify_pem(text.as_bytes(), &other, 15),
            Err(ListError::Invalid(_))
        ));
        let licence = armor::encode(pem::LICENCE, b"x");
        let e = verify_pem(licence.as_bytes(), &root.public(), 15).expect_err("wrong kind");
        assert!(e.to_string().starts_with("not a revocation list: "), "{e}");
    }
}
