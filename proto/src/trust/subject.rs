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
    /// renewal and reload.
    Live(&'a Serial),
    /// sshd's key lookup (`AuthorizedKeysCommand`) for a session that is
    /// already live: judged by the rules for live sessions (an overdue list
    /// under `refuse-new` does not refuse it). sshd sees the user key, not
    /// the certificate, so no serial is checked: a revoked serial has ended
    /// the session already.
    SshdLogin,
}

impl<'a> Checkpoint<'a> {
    /// Whether the session is new (not yet admitted).
    pub fn is_new(self) -> bool {
        match self {
            Self::Admit => true,
            Self::Live(_) | Self::SshdLogin => false,
        }
    }

    /// The certificate the session holds, where one is checked.
    pub fn serial(self) -> Option<&'a Serial> {
        match self {
            Self::Live(serial) => Some(serial),
            Self::Admit | Self::SshdLogin => None,
        }
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
}
