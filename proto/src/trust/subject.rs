//! Who is judged, by what, and where in a session's life.

use crate::cert::Serial;

/// Where in a session's life trust is judged: each caller names its
/// checkpoint, and the rules that differ between them (the staleness
/// policy, a certificate serial, the wording of a refusal) follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint<'a> {
    /// A new session: at its authorization after the handshake, and again
    /// when its first certificate is issued.
    Admit,
    /// A live session under its current certificate: at every proof,
    /// renewal and reload. Every serial the session was issued is judged.
    Live(Issued<'a>),
    /// sshd's key lookup (`AuthorizedKeysCommand`) for a session that is
    /// already live: judged by the rules for live sessions (an overdue list
    /// under `refuse-new` does not refuse it), and by every serial the
    /// session was issued: a list that revokes one is enforced here from
    /// the moment it is loaded, before the session's own recheck has ended
    /// it.
    SshdLogin(Issued<'a>),
}

impl<'a> Checkpoint<'a> {
    /// Whether the session is new (not yet admitted).
    pub fn is_new(self) -> bool {
        match self {
            Self::Admit => true,
            Self::Live(_) | Self::SshdLogin(_) => false,
        }
    }

    /// The certificates the session was issued, where they are checked.
    pub fn issued(self) -> Option<Issued<'a>> {
        match self {
            Self::Live(issued) | Self::SshdLogin(issued) => Some(issued),
            Self::Admit => None,
        }
    }
}

/// The serials a live session was issued: a revocation list that names
/// any of them ends it, however often it has renewed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued<'a> {
    /// The session serial, which every certificate of the session carries
    /// (signed): the serial of its first certificate, and the one the
    /// audit log shows on every line of the session.
    pub session: &'a Serial,
    /// The certificate it holds now.
    pub current: &'a Serial,
    /// The serials of the certificates between the first and the current
    /// one, oldest first (the proxy keeps the most recent
    /// [`crate::identity::MAX_SERIAL_HISTORY`]).
    pub earlier: &'a [Serial],
}

impl<'a> Issued<'a> {
    /// A session that holds only its first certificate.
    pub fn first(serial: &'a Serial) -> Self {
        Self {
            session: serial,
            current: serial,
            earlier: &[],
        }
    }

    /// Every serial, the session's first, then the current one.
    pub fn all(self) -> impl Iterator<Item = &'a Serial> {
        [self.session, self.current]
            .into_iter()
            .chain(self.earlier.iter())
    }
}

/// What vouches, after the handshake verified it, that the client may act
/// as its principal. One variant per identity source (see the module docs
/// of [`crate::trust`] for adding one); deliberately not `non_exhaustive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// The user's OpenSSH key, which signed the handshake transcript; the
    /// proxy's authorized principals say which principals it may be.
    UserKey(&'a ssh_key::PublicKey),
    /// An OpenSSH user certificate from a user CA the proxy trusts, for
    /// the key that signed the handshake; it vouches for its principals.
    UserCert(&'a super::usercert::UserCertVerified),
    /// A workload's platform token (an OIDC JWT) verified under an issuer
    /// the proxy trusts, whose matched rule names the principal; `key` is
    /// the workload's throwaway key that signed the handshake.
    Workload {
        /// The verified token.
        token: &'a super::workload::TokenVerified,
        /// The key that signed the handshake.
        key: &'a ssh_key::PublicKey,
    },
}

/// A session's claimed principal and the credential that proved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The principal the session acts as.
    pub principal: &'a str,
    /// What proved it.
    pub credential: Credential<'a>,
}

impl<'a> Subject<'a> {
    /// `principal`, proven by `user_key`'s signature on the handshake.
    pub fn user_key(principal: &'a str, user_key: &'a ssh_key::PublicKey) -> Self {
        Self {
            principal,
            credential: Credential::UserKey(user_key),
        }
    }

    /// `principal`, vouched for by a verified workload token; `key` signed
    /// the handshake.
    pub fn workload(
        principal: &'a str,
        token: &'a super::workload::TokenVerified,
        key: &'a ssh_key::PublicKey,
    ) -> Self {
        Self {
            principal,
            credential: Credential::Workload { token, key },
        }
    }

    /// `principal`, vouched for by a verified user certificate.
    pub fn user_cert(principal: &'a str, cert: &'a super::usercert::UserCertVerified) -> Self {
        Self {
            principal,
            credential: Credential::UserCert(cert),
        }
    }
}
