//! Why a session ends: one enum for every reason, so logs, metrics and the
//! TERMINATE sent to the client all come from the same value.

use crate::control::TerminateCode;

/// Every reason the proxy ends a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndKind {
    /// No proof before the challenge's deadline.
    ProofLate,
    /// A proof with no challenge outstanding.
    ProofUnsolicited,
    /// A proof for another challenge.
    ProofWrongSeq,
    /// A proof whose certificate does not parse or is outside its window.
    ProofBadCert,
    /// A proof carrying a certificate that is not this session's.
    ProofWrongCert,
    /// A proof whose signature does not verify (relayed, or a wrong key).
    ProofBadSignature,
    /// The client certificate expired (renewal failed).
    CertExpired,
    /// A renewal tried to become another principal.
    RenewPrincipalSwitch,
    /// A renewal whose signatures do not verify.
    RenewBadSignature,
    /// More early renewals for one certificate than the proxy ignores
    /// ([`crate::identity::MAX_EARLY_RENEWALS`]).
    RenewTooEarly,
    /// The Sub-CA could not issue.
    IssueFailed,
    /// A control message the client may not send.
    UnexpectedControl,
    /// The principal is banned by the revocation list.
    PrincipalBanned,
    /// The certificate serial is revoked.
    SerialRevoked,
    /// The user key is revoked by the revocation list.
    UserKeyRevoked,
    /// The key is not (or no longer) authorized for the principal.
    NotAuthorized,
    /// The user key or its signature on the handshake was refused (a key
    /// type or size ztssh does not accept, SHA-1, a bad signature, a
    /// security key's missing touch).
    UserKeyRefused,
    /// The user's OpenSSH certificate was refused (untrusted CA, another
    /// principal, an unknown critical option, outside its source-address).
    UserCertRefused,
    /// The user's OpenSSH certificate expired (its valid-before passed).
    UserCertExpired,
    /// A platform OIDC token was refused, at admission or during a session
    /// (a bad signature, another audience, no rule for the principal, a
    /// replay, an issuer or rule withdrawn); see [`crate::trust::workload`].
    WorkloadTokenRefused,
    /// The platform token in force expired and no newer one came.
    WorkloadTokenExpired,
    /// A renewal of a session admitted on a platform token came without one.
    WorkloadTokenMissing,
    /// The proxy could not judge a platform token: the issuer's key set is
    /// missing or overdue, or the replay cache is full. The proxy's own
    /// trouble, never counted against the source.
    WorkloadCheckUnavailable,
    /// The proxy's own licence is revoked.
    LicenceRevoked,
    /// The proxy's own licence expired.
    LicenceExpired,
    /// The proxy's own licence is not valid yet.
    LicenceNotYetValid,
    /// The proxy's revocation list is past its next-update time plus grace
    /// and its staleness policy refuses the session.
    RevocationListStale,
    /// The access policy does not (or no longer) allow the session.
    PolicyDenied,
    /// The principal already has as many sessions as the policy allows.
    MaxSessions,
    /// A record failed to open or broke the record rules.
    BadRecord,
    /// The client sent TERMINATE.
    ClientTerminated,
    /// The client closed TCP without a CLOSE record.
    ClientVanished,
    /// The client socket failed.
    ClientIo,
    /// The client read nothing for longer than the write bound.
    ClientStalled,
    /// The sshd socket failed.
    UpstreamIo,
    /// sshd read nothing for longer than the write bound.
    UpstreamStalled,
    /// The proxy could not reach sshd.
    UpstreamUnavailable,
    /// sshd closed the connection before sending a byte: it refused the
    /// login (a burst past its `MaxStartups`, or a penalty of its own).
    UpstreamRefused,
    /// The proxy is shutting down.
    Shutdown,
}

/// Whom an end counts against: the source address's penalty score
/// (`bad_handshake_secs`, `failed_auth_secs`, `refused_key_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// Not the client's doing (a full cap, an unreachable sshd, an overdue
    /// list, a shutdown, a broken socket): never counts.
    Nobody,
    /// The client's identity or its rights: counts when it refuses a session
    /// before it starts (softly when the user key was proven, since a sidecar
    /// tries its agent keys in turn), never when it ends a live one.
    Identity,
    /// The client's conduct at the record layer: counts whenever it happens,
    /// authenticated or not.
    Conduct,
}

/// One row of the table of ends: everything the binaries do with an
/// [`EndKind`] comes from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRow {
    /// Stable label: the `reason` of log lines and the `reason` label of
    /// `ztssh_sessions_terminated_total`.
    pub label: &'static str,
    /// The coarse code sent in TERMINATE.
    pub code: TerminateCode,
    /// Whether a TERMINATE is worth sending: not to a client whose
    /// connection is broken, silent or hostile at the record layer.
    pub tells_client: bool,
    /// Whether, and when, it counts against the source.
    pub blame: Blame,
    /// Whether it is a failed challenge (also counted in
    /// `ztssh_challenges_total{result="failed"}`).
    pub challenge_failure: bool,
}

const fn row(
    label: &'static str,
    code: TerminateCode,
    tells_client: bool,
    blame: Blame,
    challenge_failure: bool,
) -> EndRow {
    EndRow {
        label,
        code,
        tells_client,
        blame,
        challenge_failure,
    }
}

/// Told in TERMINATE.
const TELL: bool = true;
/// No TERMINATE.
const SILENT: bool = false;
/// Counted as a failed challenge.
const CHALLENGE: bool = true;
/// Not a failed challenge.
const OTHER: bool = false;

impl EndKind {
    /// Every kind, in table order.
    pub const ALL: [EndKind; 39] = [
        Self::ProofLate,
        Self::ProofUnsolicited,
        Self::ProofWrongSeq,
        Self::ProofBadCert,
        Self::ProofWrongCert,
        Self::ProofBadSignature,
        Self::CertExpired,
        Self::RenewPrincipalSwitch,
        Self::RenewBadSignature,
        Self::RenewTooEarly,
        Self::IssueFailed,
        Self::UnexpectedControl,
        Self::PrincipalBanned,
        Self::SerialRevoked,
        Self::UserKeyRevoked,
        Self::NotAuthorized,
        Self::UserKeyRefused,
        Self::UserCertRefused,
        Self::UserCertExpired,
        Self::WorkloadTokenRefused,
        Self::WorkloadTokenExpired,
        Self::WorkloadTokenMissing,
        Self::WorkloadCheckUnavailable,
        Self::LicenceRevoked,
        Self::LicenceExpired,
        Self::LicenceNotYetValid,
        Self::RevocationListStale,
        Self::PolicyDenied,
        Self::MaxSessions,
        Self::BadRecord,
        Self::ClientTerminated,
        Self::ClientVanished,
        Self::ClientIo,
        Self::ClientStalled,
        Self::UpstreamIo,
        Self::UpstreamStalled,
        Self::UpstreamUnavailable,
        Self::UpstreamRefused,
        Self::Shutdown,
    ];

    /// The table: one row per kind, and no default, so a new kind must
    /// say what it is called, what the client hears and whom it counts
    /// against. A revoked user key is a key the proxy will not take, like
    /// an unauthorized one (code 1): before ACCEPT the sidecar tries its
    /// next agent key.
    #[rustfmt::skip]
    pub const fn row(self) -> EndRow {
        use Blame::{Conduct, Identity, Nobody};
        use TerminateCode as C;
        match self {
            Self::ProofLate => row("proof_late", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::ProofUnsolicited => row("proof_unsolicited", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::ProofWrongSeq => row("proof_wrong_seq", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::ProofBadCert => row("proof_bad_cert", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::ProofWrongCert => row("proof_wrong_cert", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::ProofBadSignature => row("proof_bad_signature", C::IdentityRevoked, TELL, Identity, CHALLENGE),
            Self::CertExpired => row("cert_expired", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::RenewPrincipalSwitch => row("renew_principal_switch", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::RenewBadSignature => row("renew_bad_signature", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::RenewTooEarly => row("renew_too_early", C::ProtocolError, TELL, Identity, OTHER),
            Self::IssueFailed => row("issue_failed", C::ProtocolError, TELL, Identity, OTHER),
            Self::UnexpectedControl => row("unexpected_control", C::ProtocolError, TELL, Conduct, OTHER),
            Self::PrincipalBanned => row("principal_banned", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::SerialRevoked => row("serial_revoked", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::UserKeyRevoked => row("user_key_revoked", C::NotAuthorized, TELL, Identity, OTHER),
            Self::NotAuthorized => row("not_authorized", C::NotAuthorized, TELL, Identity, OTHER),
            Self::UserKeyRefused => row("user_key_refused", C::NotAuthorized, TELL, Identity, OTHER),
            Self::UserCertRefused => row("user_cert_refused", C::NotAuthorized, TELL, Identity, OTHER),
            Self::UserCertExpired => row("user_cert_expired", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::WorkloadTokenRefused => row("workload_token_refused", C::NotAuthorized, TELL, Identity, OTHER),
            Self::WorkloadTokenExpired => row("workload_token_expired", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::WorkloadTokenMissing => row("workload_token_missing", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::WorkloadCheckUnavailable => row("workload_check_unavailable", C::NotAuthorized, TELL, Nobody, OTHER),
            Self::LicenceRevoked => row("licence_revoked", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::LicenceExpired => row("licence_expired", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::LicenceNotYetValid => row("licence_not_yet_valid", C::IdentityRevoked, TELL, Identity, OTHER),
            Self::RevocationListStale => row("revocation_list_stale", C::RevocationListStale, TELL, Nobody, OTHER),
            Self::PolicyDenied => row("policy_denied", C::PolicyDenied, TELL, Identity, OTHER),
            Self::MaxSessions => row("max_sessions", C::PolicyDenied, TELL, Nobody, OTHER),
            Self::BadRecord => row("bad_record", C::ProtocolError, SILENT, Conduct, OTHER),
            Self::ClientTerminated => row("client_terminated", C::ProtocolError, SILENT, Nobody, OTHER),
            Self::ClientVanished => row("client_vanished", C::ProtocolError, SILENT, Nobody, OTHER),
            Self::ClientIo => row("client_io", C::ProtocolError, SILENT, Nobody, OTHER),
            Self::ClientStalled => row("client_stalled", C::ProtocolError, SILENT, Nobody, OTHER),
            Self::UpstreamIo => row("upstream_io", C::UpstreamUnavailable, TELL, Nobody, OTHER),
            Self::UpstreamStalled => row("upstream_stalled", C::UpstreamUnavailable, TELL, Nobody, OTHER),
            Self::UpstreamUnavailable => row("upstream_unavailable", C::UpstreamUnavailable, TELL, Nobody, OTHER),
            Self::UpstreamRefused => row("upstream_refused", C::UpstreamUnavailable, TELL, Nobody, OTHER),
            Self::Shutdown => row("shutdown", C::Shutdown, TELL, Nobody, OTHER),
        }
    }

    /// Stable label for logs and metrics.
    pub const fn label(self) -> &'static str {
        self.row().label
    }

    /// The coarse code sent in TERMINATE.
    pub const fn code(self) -> TerminateCode {
        self.row().code
    }

    /// Whether the session failed a challenge (counted as a failed challenge).
    pub const fn is_challenge_failure(self) -> bool {
        self.row().challenge_failure
    }

    /// Whether a TERMINATE is worth sending: not to a client whose
    /// connection is broken, silent or hostile at the record layer.
    pub const fn tells_client(self) -> bool {
        self.row().tells_client
    }

    /// Whom this end counts against.
    pub const fn blame(self) -> Blame {
        self.row().blame
    }
}

/// Why a session must end: the kind and a sentence for logs and the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// What happened.
    pub kind: EndKind,
    /// Reason for logs and for the user.
    pub reason: String,
}

impl Ended {
    /// An end of `kind` with `reason`.
    pub fn new(kind: EndKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// The coarse code for TERMINATE.
    pub fn code(&self) -> TerminateCode {
        self.kind.code()
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A TERMINATE as the client received it: the proxy's code and sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// The coarse code.
    pub code: TerminateCode,
    /// The proxy's reason.
    pub reason: String,
}

impl Termination {
    /// A TERMINATE with `code` and `reason`.
    pub fn new(code: TerminateCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_kind_has_one_row_and_its_own_label() {
        let labels: HashSet<&str> = EndKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), EndKind::ALL.len(), "labels are unique");
        let kinds: HashSet<EndKind> = EndKind::ALL.into_iter().collect();
        assert_eq!(kinds.len(), EndKind::ALL.len(), "ALL lists each kind once");
    }

    #[test]
    fn codes_are_the_ones_the_protocol_gives() {
        // docs/PROTOCOL.md, TERMINATE codes.
        let code = |k: EndKind| k.code() as u8;
        for k in [
            EndKind::NotAuthorized,
            EndKind::UserKeyRefused,
            EndKind::UserKeyRevoked,
        ] {
            assert_eq!(code(k), 1, "{k:?}");
        }
        for k in [EndKind::PolicyDenied, EndKind::MaxSessions] {
            assert_eq!(code(k), 6, "{k:?}");
        }
        assert_eq!(code(EndKind::UpstreamUnavailable), 3);
        assert_eq!(code(EndKind::UpstreamRefused), 3);
        assert_eq!(code(EndKind::Shutdown), 4);
        assert_eq!(code(EndKind::RevocationListStale), 7);
        assert_eq!(code(EndKind::ProofLate), 5);
        assert_eq!(code(EndKind::LicenceRevoked), 5);
        assert_eq!(code(EndKind::BadRecord), 2);
        for k in EndKind::ALL {
            assert_ne!(k.code(), TerminateCode::Other, "{k:?}");
            // Only record-layer ends go untold.
            assert_eq!(
                k.tells_client(),
                k.code() != TerminateCode::ProtocolError
                    || matches!(
                        k,
                        EndKind::IssueFailed | EndKind::UnexpectedControl | EndKind::RenewTooEarly
                    ),
                "{k:?}"
            );
        }
    }

    #[test]
    fn the_proxys_own_trouble_never_counts_against_the_source() {
        for k in [
            EndKind::MaxSessions,
            EndKind::UpstreamUnavailable,
            EndKind::RevocationListStale,
            EndKind::Shutdown,
            EndKind::WorkloadCheckUnavailable,
        ] {
            assert_eq!(k.blame(), Blame::Nobody, "{k:?}");
        }
        for k in [EndKind::BadRecord, EndKind::UnexpectedControl] {
            assert_eq!(k.blame(), Blame::Conduct, "{k:?}");
        }
        assert_eq!(EndKind::NotAuthorized.blame(), Blame::Identity);
    }
}
