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
    /// The proxy is shutting down.
    Shutdown,
}

impl EndKind {
    /// Stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::ProofLate => "proof_late",
            Self::ProofUnsolicited => "proof_unsolicited",
            Self::ProofWrongSeq => "proof_wrong_seq",
            Self::ProofBadCert => "proof_bad_cert",
            Self::ProofWrongCert => "proof_wrong_cert",
            Self::ProofBadSignature => "proof_bad_signature",
            Self::CertExpired => "cert_expired",
            Self::RenewPrincipalSwitch => "renew_principal_switch",
            Self::RenewBadSignature => "renew_bad_signature",
            Self::RenewTooEarly => "renew_too_early",
            Self::IssueFailed => "issue_failed",
            Self::UnexpectedControl => "unexpected_control",
            Self::PrincipalBanned => "principal_banned",
            Self::SerialRevoked => "serial_revoked",
            Self::UserKeyRevoked => "user_key_revoked",
            Self::NotAuthorized => "not_authorized",
            Self::UserKeyRefused => "user_key_refused",
            Self::LicenceRevoked => "licence_revoked",
            Self::LicenceExpired => "licence_expired",
            Self::LicenceNotYetValid => "licence_not_yet_valid",
            Self::RevocationListStale => "revocation_list_stale",
            Self::PolicyDenied => "policy_denied",
            Self::MaxSessions => "max_sessions",
            Self::BadRecord => "bad_record",
            Self::ClientTerminated => "client_terminated",
            Self::ClientVanished => "client_vanished",
            Self::ClientIo => "client_io",
            Self::ClientStalled => "client_stalled",
            Self::UpstreamIo => "upstream_io",
            Self::UpstreamStalled => "upstream_stalled",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::Shutdown => "shutdown",
        }
    }

    /// The coarse code sent in TERMINATE.
    pub fn code(self) -> TerminateCode {
        match self {
            // A revoked user key is a key the proxy will not take, like an
            // unauthorized one: before ACCEPT the sidecar tries its next
            // agent key.
            Self::NotAuthorized | Self::UserKeyRefused | Self::UserKeyRevoked => {
                TerminateCode::NotAuthorized
            }
            Self::PolicyDenied | Self::MaxSessions => TerminateCode::PolicyDenied,
            Self::UpstreamUnavailable | Self::UpstreamIo | Self::UpstreamStalled => {
                TerminateCode::UpstreamUnavailable
            }
            Self::Shutdown => TerminateCode::Shutdown,
            Self::RevocationListStale => TerminateCode::RevocationListStale,
            Self::IssueFailed
            | Self::UnexpectedControl
            | Self::RenewTooEarly
            | Self::BadRecord
            | Self::ClientTerminated
            | Self::ClientVanished
            | Self::ClientIo
            | Self::ClientStalled => TerminateCode::ProtocolError,
            _ => TerminateCode::IdentityRevoked,
        }
    }

    /// Whether the session failed a challenge (counted as a failed challenge).
    pub fn is_challenge_failure(self) -> bool {
        matches!(
            self,
            Self::ProofLate
                | Self::ProofUnsolicited
                | Self::ProofWrongSeq
                | Self::ProofBadCert
                | Self::ProofWrongCert
                | Self::ProofBadSignature
        )
    }

    /// Whether a TERMINATE is worth sending: not to a client whose
    /// connection is broken, silent or hostile at the record layer.
    pub fn tells_client(self) -> bool {
        !matches!(
            self,
            Self::BadRecord
                | Self::ClientTerminated
                | Self::ClientVanished
                | Self::ClientIo
                | Self::ClientStalled
        )
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
