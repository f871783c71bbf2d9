//! What the user CA's KRL (OpenSSH's own revocation list, [`crate::krl`])
//! withdraws: a session whose key, or whose certificate, it revokes ends,
//! at every checkpoint, as a ban does.

use ssh_key::public::KeyData;

use crate::end::{EndKind, Ended};
use crate::krl::{Krl, KrlHit};
use crate::trust::{Credential, Subject};

fn ended(krl: &Krl, what: String, hit: KrlHit) -> Ended {
    Ended::new(
        EndKind::UserKeyRevoked,
        format!(
            "{what} was revoked by your SSH CA's KRL (version {}, by {}); ask your SSH CA for a new one",
            krl.krl_version,
            hit.describe()
        ),
    )
}

/// Refuses a session whose credential the user CA's KRL revokes (no KRL:
/// nothing is refused). The same at every [`crate::trust::Checkpoint`]:
/// sshd itself would refuse the key at its next login.
pub fn check_krl(krl: Option<&Krl>, who: &Subject<'_>) -> Result<(), Ended> {
    let Some(krl) = krl else { return Ok(()) };
    match who.credential {
        Credential::UserKey(user_key) => match krl.revokes_key(user_key.key_data()) {
            None => Ok(()),
            Some(hit) => {
                let fp = user_key.fingerprint(ssh_key::HashAlg::Sha256);
                Err(ended(krl, format!("your key {fp}"), hit))
            }
        },
        // A certificate: by its key, serial or key id under its CA (or any
        // CA), or its CA key, as sshd decides it.
        Credential::UserCert(cert) => check_krl_cert(
            Some(krl),
            cert.ca_key(),
            cert.serial(),
            cert.key_id(),
            cert.user_key(),
        ),
        // sshd checks every key against its RevokedKeys, a workload's
        // throwaway key too.
        Credential::Workload { key, .. } => match krl.revokes_key(key.key_data()) {
            None => Ok(()),
            Some(hit) => {
                let fp = key.fingerprint(ssh_key::HashAlg::Sha256);
                Err(ended(krl, format!("the workload key {fp}"), hit))
            }
        },
    }
}

/// Refuses an OpenSSH user certificate the KRL revokes, as sshd decides
/// it: by its key, its serial or key id under `ca_key` (or under any CA),
/// or its CA key: the user-certificate arm of [`check_krl`].
pub fn check_krl_cert(
    krl: Option<&Krl>,
    ca_key: &KeyData,
    serial: u64,
    key_id: &str,
    key: &KeyData,
) -> Result<(), Ended> {
    let Some(krl) = krl else { return Ok(()) };
    match krl.revokes_cert(ca_key, serial, key_id, key) {
        None => Ok(()),
        Some(hit) => Err(ended(
            krl,
            format!(
                "your certificate (key id \"{}\", serial {serial})",
                key_id.escape_debug()
            ),
            hit,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::krl::write::{self, KrlWriter};
    use crate::trust::Subject;
    use ssh_key::encoding::Encode;
    use ssh_key::public::Ed25519PublicKey;

    fn key(seed: u8) -> ssh_key::PublicKey {
        ssh_key::PublicKey::from(Ed25519PublicKey([seed; 32]))
    }

    #[test]
    fn a_key_or_certificate_the_krl_revokes_is_refused_with_words_a_user_can_act_on() {
        let bad = key(1);
        let ca = key(9);
        let blob = bad.key_data().encode_vec().expect("blob");
        let ca_blob = ca.key_data().encode_vec().expect("blob");
        let krl = Krl::decode(
            &KrlWriter::new(7, 0, b"")
                .keys(&[blob])
                .certs(&ca_blob, &[write::serial_list(&[12])])
                .finish(),
        )
        .expect("krl");
        let e = check_krl(Some(&krl), &Subject::user_key("alice", &bad)).expect_err("revoked");
        assert_eq!(e.kind, EndKind::UserKeyRevoked);
        assert!(e.reason.contains("SSH CA's KRL (version 7"), "{e}");
        assert!(e.reason.contains("SHA256:"), "{e}");
        assert!(check_krl(Some(&krl), &Subject::user_key("alice", &key(2))).is_ok());
        assert!(check_krl(None, &Subject::user_key("alice", &bad)).is_ok());
        let good = key(2);
        let e = check_krl_cert(Some(&krl), ca.key_data(), 12, "alice", good.key_data())
            .expect_err("serial");
        assert!(
            e.reason.contains("serial 12") && e.reason.contains("serial)"),
            "{e}"
        );
        assert!(check_krl_cert(Some(&krl), ca.key_data(), 13, "alice", good.key_data()).is_ok());
    }
}
