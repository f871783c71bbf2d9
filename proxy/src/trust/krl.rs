//! The user SSH CA's KRL in force: reading one, and whether one offered
//! replaces it ([`ztssh_proto::krl::offer`]: a newer version, or the same
//! version revoking everything the one in force does and more, as
//! `ssh-keygen -k -u` writes it; KRLs are unsigned, so a lower version is a
//! rollback and a same version that un-revokes anything is refused). The rule
//! that ends sessions is [`ztssh_proto::trust::check_krl`], applied by
//! [`crate::trust::authority::Authority`].

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info};
use ztssh_keyfile as keyfile;
use ztssh_proto::krl::{self, Krl, KrlUpdate, MAX_KRL_BYTES};

use crate::trust::authority::Authority;

/// Reads and decodes a KRL file.
pub fn read_krl(path: &Path) -> Result<Krl, String> {
    let bytes = keyfile::read_regular(path, MAX_KRL_BYTES as u64)?;
    krl_from(path, &bytes)
}

/// [`read_krl`] of the bytes already read from `path`.
pub fn krl_from(path: &Path, bytes: &[u8]) -> Result<Krl, String> {
    Krl::decode(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// How a KRL offer ended, for the `ztssh_user_ca_krl_loads_total` metric.
pub fn result_label(update: &KrlUpdate) -> &'static str {
    match update {
        KrlUpdate::Replace | KrlUpdate::Grown => "ok",
        KrlUpdate::Same => "unchanged",
        KrlUpdate::Changed { .. } => "same_version",
        KrlUpdate::Rollback { .. } => "rollback",
    }
}

/// Decides whether `offered` (from `source`: a file or a URL) replaces the
/// KRL in force, says so, and returns the authority to publish (`None`:
/// keep the current one) with what happened.
pub fn merge_krl(
    current: &Authority,
    offered: Arc<Krl>,
    source: &str,
) -> (Option<Authority>, KrlUpdate) {
    let update = krl::offer(current.krl.as_deref(), &offered);
    let v = offered.krl_version;
    match &update {
        KrlUpdate::Replace | KrlUpdate::Grown => {
            let (cas, serials, ids, keys) = offered.counts();
            info!(
                event = "krl_loaded",
                source,
                krl_version = v,
                ca_scopes = cas,
                serial_entries = serials,
                key_ids = ids,
                keys,
                same_version = %matches!(update, KrlUpdate::Grown),
                "user CA KRL version {v} loaded{}; re-checking every live session",
                if matches!(update, KrlUpdate::Grown) {
                    " (same version, more revoked)"
                } else {
                    ""
                }
            );
            let mut next = current.republish();
            next.krl = Some(offered);
            return (Some(next), update);
        }
        KrlUpdate::Same => {}
        KrlUpdate::Changed { version, unrevokes } => error!(
            event = "krl_refused",
            source,
            krl_version = version,
            unrevoked = unrevokes.count,
            "user CA KRL from {source} has the version in force ({version}) but would un-revoke {unrevokes}; \
             refused, since a replayed older KRL would look the same. A KRL of the same version may only add \
             (ssh-keygen -k -u); to withdraw a revocation on purpose, publish it with a higher version: \
             ssh-keygen -k -z {}",
            version.saturating_add(1)
        ),
        KrlUpdate::Rollback { loaded, offered } => error!(
            event = "krl_refused",
            source,
            loaded,
            offered,
            "user CA KRL version {offered} from {source} is older than the version in force ({loaded}); \
             refused (no rollback)"
        ),
    }
    (None, update)
}

/// Says that a KRL could not be read or decoded; the one in force stays.
pub fn refuse_unreadable(source: &str, e: &str) {
    error!(event = "krl_refused", source, error = %e,
        "user CA KRL from {source} rejected: {e}; the KRL in force stays");
}
