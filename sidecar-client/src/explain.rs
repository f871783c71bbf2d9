//! What the user reads when a session cannot start or ends: one error
//! enum, each variant a sentence the user can act on.

use ztssh_proto::conn::ClientEnd;
use ztssh_proto::control::TerminateCode;
use ztssh_proto::time::human;
use ztssh_proto::{AuthError, ProtoError};

/// Why the sidecar stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings, keys or files are missing or wrong.
    #[error("{0}")]
    Setup(String),
    /// The proxy could not be reached or the handshake failed.
    #[error("{0}")]
    Connect(String),
    /// The proxy refused the session before accepting it.
    #[error("{server} refused the session: {reason}")]
    Refused {
        /// The server id.
        server: String,
        /// The proxy's code.
        code: TerminateCode,
        /// The proxy's reason.
        reason: String,
    },
    /// The proxy refused the user key before accepting the session.
    #[error("{server} refused the session: {reason}")]
    KeyRefused {
        /// The server id.
        server: String,
        /// The proxy's reason.
        reason: String,
    },
    /// The proxy refused every key tried.
    #[error(
        "{server} refused every key tried for principal {principal}:{}{}{}",
        list(tried),
        skipped_list(skipped),
        hint_line(hint)
    )]
    NoKeyAccepted {
        /// The server id.
        server: String,
        /// The principal.
        principal: String,
        /// Each key tried, with the proxy's reason.
        tried: Vec<String>,
        /// Each agent key not tried, with why.
        skipped: Vec<String>,
        /// How to offer keys held back from this server, or empty.
        hint: String,
    },
    /// The proxy ended an accepted session.
    #[error("session terminated by {server}: {reason}")]
    Terminated {
        /// The server id.
        server: String,
        /// The proxy's code.
        code: TerminateCode,
        /// The proxy's reason.
        reason: String,
    },
    /// A record from the proxy failed to open.
    #[error("tunnel integrity failure from {server}: {detail}; session closed")]
    Integrity {
        /// The server id.
        server: String,
        /// What failed.
        detail: String,
    },
    /// The proxy broke the continuous-identity protocol.
    #[error("{server} broke the protocol: {detail}; session closed")]
    Protocol {
        /// The server id.
        server: String,
        /// What happened.
        detail: String,
    },
    /// The connection closed without an end-of-session record.
    #[error("connection to {server} lost (closed without an end-of-session record)")]
    Lost {
        /// The server id.
        server: String,
    },
    /// The connection failed.
    #[error("connection to {server} lost: {detail}")]
    Io {
        /// The server id.
        server: String,
        /// The socket error.
        detail: String,
    },
    /// The proxy read nothing for too long.
    #[error("{server} read nothing for {secs}s; session closed")]
    Stalled {
        /// The server id.
        server: String,
        /// The write bound.
        secs: u64,
    },
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Self::Setup(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Self::Setup(s.to_owned())
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  {i}")).collect()
}

fn hint_line(hint: &str) -> String {
    match hint {
        "" => String::new(),
        h => format!("\n{h}"),
    }
}

fn skipped_list(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  skipped {i}")).collect()
}

/// The error for a session that the core ended with `end`.
pub fn ended(server: &str, end: ClientEnd) -> Error {
    let server = server.to_owned();
    match end {
        ClientEnd::Refused(t) => Error::Refused {
            server,
            code: t.code,
            reason: t.reason,
        },
        // Always code 1 (not authorized): another key may do.
        ClientEnd::KeyRefused(t) => Error::KeyRefused {
            server,
            reason: t.reason,
        },
        ClientEnd::Terminated(t) => Error::Terminated {
            server,
            code: t.code,
            reason: t.reason,
        },
        ClientEnd::Integrity(detail) => Error::Integrity { server, detail },
        ClientEnd::Protocol(detail) => Error::Protocol { server, detail },
        ClientEnd::Lost => Error::Lost { server },
        ClientEnd::Stalled(secs) => Error::Stalled { server, secs },
    }
}

/// Turns a handshake failure into a sentence the user can act on.
pub fn explain(e: ProtoError, host: &str, root_path: &std::path::Path) -> String {
    match e {
        ProtoError::Auth(AuthError::Expired { secs, .. }) => {
            format!(
                "server licence for {host} expired {} ago: the server's operator must renew it \
                 (ztssh-ca licence); nothing on your side can fix this",
                human(secs)
            )
        }
        ProtoError::Auth(AuthError::NotYetValid { secs, .. }) => {
            format!(
                "server licence for {host} is not valid for another {} (check both clocks)",
                human(secs)
            )
        }
        ProtoError::Auth(AuthError::WrongIssuer(_) | AuthError::BadSignature(_)) => {
            format!(
                "host key not certified by your root CA ({}); refusing to talk to {host}",
                root_path.display()
            )
        }
        ProtoError::Auth(AuthError::NotHybrid(_)) => format!(
            "{host}'s licence carries no post-quantum (ML-DSA-65) signature, but your root ({}) \
             is hybrid and requires both halves: it was stripped in transit or issued by another \
             root; refusing to talk to {host} (its operator must install a licence from the \
             hybrid root)",
            root_path.display()
        ),
        ProtoError::Auth(AuthError::BadPqSignature(_)) => format!(
            "the post-quantum (ML-DSA-65) signature of {host}'s licence does not verify under \
             your root ({}): the licence was altered or pieced together; refusing to talk to \
             {host}",
            root_path.display()
        ),
        ProtoError::Auth(AuthError::UnexpectedHybrid(_)) => format!(
            "{host}'s licence is from a hybrid (Ed25519 + ML-DSA-65) root, but your root ({}) is \
             Ed25519: refusing to talk to {host}; if your organisation moved to a post-quantum \
             root, pin its root.pub",
            root_path.display()
        ),
        ProtoError::Auth(AuthError::HostNotCovered { covered, .. }) => {
            format!(
                "the server's licence does not cover {host:?} (it covers: {covered}); check the host name"
            )
        }
        ProtoError::Auth(AuthError::KeyMismatch) => {
            format!(
                "{host} presented a licence for a different tunnel key: possible impersonation, refusing"
            )
        }
        ProtoError::Noise(_) => format!(
            "tunnel handshake with {host} failed: not a ztssh proxy, a proxy licensed by a hybrid \
             (post-quantum) root while your root ({}) is Ed25519, or the connection was tampered \
             with",
            root_path.display()
        ),
        other => format!("handshake with {host} failed: {other}"),
    }
}
