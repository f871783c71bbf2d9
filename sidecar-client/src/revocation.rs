//! The revocation list a sidecar was given (`revocation_list`): the same
//! root-signed list the proxies enforce. The sidecar refuses a server whose
//! licence it revokes, by server id or serial, right after the licence is
//! verified and before anything about the user is sent.

use std::path::{Path, PathBuf};

use ztssh_proto::cert::Licence;
use ztssh_proto::crl::Crl;
use ztssh_proto::end::EndKind;
use ztssh_proto::keys::PublicKey;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{UnixTime, human};
use ztssh_proto::{keyfile, trust};

/// A verified list and where it came from.
pub struct Revocations {
    path: PathBuf,
    crl: Crl,
}

impl Revocations {
    /// Reads the list and verifies it under the pinned root. A list that is
    /// configured but unusable stops the sidecar: it fails closed.
    pub fn load(path: &Path, root: &PublicKey) -> Result<Self, String> {
        let unusable = |e: String| {
            format!(
                "cannot use the revocation list {}: {e}; fetch the current list from your \
                 administrators, or remove revocation_list from sidecar.toml to connect without it",
                path.display()
            )
        };
        let bytes = keyfile::read_pem(path, pem::CRL).map_err(unusable)?;
        let crl = Crl::decode_verified(&bytes, root).map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            crl,
        })
    }

    /// A warning when the list is past its next-update time.
    pub fn stale_warning(&self, now: UnixTime) -> Option<String> {
        self.crl.is_stale(now).then(|| {
            format!(
                "warning: the revocation list {} (version {}) is {} past its next update; \
                 servers revoked since are not known to it: fetch a newer one",
                self.path.display(),
                self.crl.list_version,
                human(now - self.crl.next_update)
            )
        })
    }

    /// Refuses a licence the list revokes, with what the user can do.
    pub fn check(&self, licence: &Licence, host: &str, now: UnixTime) -> Result<(), String> {
        match trust::check_licence(licence, Some(&self.crl), now) {
            Err(e) if e.kind == EndKind::LicenceRevoked => {
                let b = &licence.body;
                Err(format!(
                    "refusing to connect to {host}: its server licence ({}, serial {}) is revoked by \
                     the revocation list {} (version {}). Nothing about you was sent. The server may \
                     be compromised: do not use it, and tell its operators. If it was re-licensed \
                     since, get the newest list (ztssh-ca crl, or the published copy) and retry",
                    b.server_id,
                    b.serial,
                    self.path.display(),
                    self.crl.list_version
                ))
            }
            // Expiry and validity are judged by the handshake itself.
            _ => Ok(()),
        }
    }
}
