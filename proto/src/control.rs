//! Control messages, carried in CONTROL records (see `docs/PROTOCOL.md` §4).
//! Each fits in one record at the smallest frame size.

use crate::cert::{MAX_PRINCIPAL, MAX_SERVER_ID};
use crate::codec::{Reader, Writer};
use crate::error::Malformed;
use crate::trust::workload::MAX_TOKEN;
use zeroize::Zeroizing;

/// Why a session ended, as sent in TERMINATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum TerminateCode {
    /// The user is not authorized on this proxy.
    NotAuthorized = 1,
    /// The peer broke the protocol.
    ProtocolError = 2,
    /// The proxy could not reach sshd.
    UpstreamUnavailable = 3,
    /// The proxy is shutting down.
    Shutdown = 4,
    /// Identity no longer valid (proof failed, late, revoked).
    IdentityRevoked = 5,
    /// The proxy's access policy does not (or no longer) allow the session.
    PolicyDenied = 6,
    /// The proxy's revocation list is overdue and its staleness policy
    /// refuses sessions until a newer one is published.
    RevocationListStale = 7,
    /// Anything else.
    Other = 255,
}

impl TerminateCode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::NotAuthorized,
            2 => Self::ProtocolError,
            3 => Self::UpstreamUnavailable,
            4 => Self::Shutdown,
            5 => Self::IdentityRevoked,
            6 => Self::PolicyDenied,
            7 => Self::RevocationListStale,
            _ => Self::Other,
        }
    }
}

/// Longest TERMINATE reason text.
pub const MAX_REASON: usize = 200;
/// Longest certificate inside a control message.
pub const MAX_CERT: usize = 320;
/// Longest user signature inside a RENEW (an SSHSIG, or the bare
/// signature of an RSA-4096 key: see [`crate::userkey`]).
pub const MAX_SSHSIG: usize = 600;

/// A bit of ACCEPT's `caps`: the proxy takes a renewed OpenSSH user
/// certificate during the session ([`Control::UserCert`]). Sent only to a
/// client that presented a certificate in the handshake.
pub const ACCEPT_CAP_USER_CERT: u32 = 1;

/// Longest part of a certificate in one USER_CERT message.
pub const MAX_USER_CERT_PART: usize = 640;
/// Most parts a certificate is sent in: [`crate::trust::usercert::MAX_USER_CERT`]
/// bytes in parts of [`MAX_USER_CERT_PART`].
pub const MAX_USER_CERT_PARTS: u8 =
    crate::trust::usercert::MAX_USER_CERT.div_ceil(MAX_USER_CERT_PART) as u8;

/// Most parts a workload token is sent in: [`MAX_TOKEN`] bytes in parts of
/// [`MAX_USER_CERT_PART`].
pub const MAX_TOKEN_PARTS: u8 = MAX_TOKEN.div_ceil(MAX_USER_CERT_PART) as u8;

/// One part of a workload token: a bearer secret, zeroized when dropped and
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPart(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TokenPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenPart(<{} bytes>)", self.0.len())
    }
}

/// Control messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Proxy → client: authorized, connected to sshd.
    Accept {
        /// The proxy's server id (from its licence).
        server_id: String,
        /// What the proxy takes during the session ([`ACCEPT_CAP_USER_CERT`]);
        /// 0 is sent as nothing, so the message is unchanged for clients
        /// that are offered nothing.
        caps: u32,
    },
    /// Either way: the session is over; `reason` is for the user.
    Terminate {
        /// Coarse reason.
        code: TerminateCode,
        /// Human text (printable ASCII, at most [`MAX_REASON`] bytes).
        reason: String,
    },
    /// Proxy → client: a client certificate (first issue or renewal).
    Cert {
        /// Encoded [`crate::cert::ClientCert`].
        cert: Vec<u8>,
        /// Security key sessions only (absent otherwise, so the message is
        /// unchanged for every other key): whether the renewal of this
        /// certificate must carry the user key's signature (a touch), or
        /// may leave `user_sig` empty because the principal's
        /// re-verification interval has not run out (see
        /// [`crate::identity::SkPolicy`]).
        user_sig_due: Option<bool>,
    },
    /// Proxy → client: prove you still hold the session key.
    Challenge {
        /// Strictly increasing per session.
        seq: u64,
        /// Fresh random bytes.
        nonce: [u8; 32],
        /// Seconds the client has to answer.
        deadline_secs: u16,
    },
    /// Client → proxy: the answer to a challenge.
    Proof {
        /// The challenge's sequence number.
        seq: u64,
        /// The current client certificate.
        cert: Vec<u8>,
        /// Session-key signature, see [`crate::identity`].
        sig: [u8; 64],
    },
    /// Proxy → client: the proof was good.
    Ack {
        /// The challenge's sequence number.
        seq: u64,
    },
    /// Client → proxy: a fresh session key, vouched for by the current
    /// session key and by the user's key.
    Renew {
        /// Must equal the session's principal.
        principal: String,
        /// The new session key.
        new_key: [u8; 32],
        /// The new key's signature over the renewal data.
        new_sig: [u8; 64],
        /// The current session key's signature over the renewal data.
        old_sig: [u8; 64],
        /// The user key's SSHSIG over the renewal data; empty when the
        /// last CERT said `user_sig_due: Some(false)`.
        user_sig: Vec<u8>,
    },
    /// Client → proxy, only after an ACCEPT with [`ACCEPT_CAP_USER_CERT`]:
    /// part `part` (from 0) of `parts` of a newer OpenSSH user certificate
    /// for the session's key and principal. The parts are sent in order,
    /// one certificate at a time.
    UserCert {
        /// Which part this is, from 0.
        part: u8,
        /// How many parts the certificate is sent in (1 to
        /// [`MAX_USER_CERT_PARTS`]).
        parts: u8,
        /// The part's bytes (1 to [`MAX_USER_CERT_PART`]).
        bytes: Vec<u8>,
    },
    /// Client → proxy, only in a session that began with a workload token
    /// ([`crate::handshake::CAP_WORKLOAD_TOKEN`]): part `part` (from 0) of
    /// `parts` of the workload's current token, sent before each RENEW
    /// (which needs one since the last CERT) and when the one in force
    /// nears its expiry. In order, one token at a time.
    WorkloadToken {
        /// Which part this is, from 0.
        part: u8,
        /// How many parts the token is sent in (1 to [`MAX_TOKEN_PARTS`]).
        parts: u8,
        /// The part's bytes (1 to [`MAX_USER_CERT_PART`]).
        bytes: TokenPart,
    },
}

const ACCEPT: u8 = 1;
const TERMINATE: u8 = 2;
const CERT: u8 = 3;
const CHALLENGE: u8 = 4;
const PROOF: u8 = 5;
const ACK: u8 = 6;
const RENEW: u8 = 7;
const USER_CERT: u8 = 8;
const WORKLOAD_TOKEN: u8 = 9;

/// Keeps printable ASCII only, capped, so a peer cannot drive the user's terminal.
pub fn sanitize(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// One part of a value sent in parts (USER_CERT, WORKLOAD_TOKEN): its
/// number, the count of parts (1 to `max_parts`) and its bytes (1 to
/// [`MAX_USER_CERT_PART`]).
fn read_part<'a>(
    r: &mut Reader<'a>,
    max_parts: u8,
    what: &'static str,
) -> Result<(u8, u8, &'a [u8]), Malformed> {
    let part = r.u8()?;
    let parts = r.u8()?;
    let bytes = r.var16(MAX_USER_CERT_PART)?;
    if parts == 0 || parts > max_parts || part >= parts || bytes.is_empty() {
        return Err(Malformed::Invalid {
            what,
            why: "bad part, part count or empty part",
        });
    }
    Ok((part, parts, bytes))
}

impl Control {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Accept { server_id, caps } => {
                w.u8(ACCEPT).str8(server_id);
                if *caps != 0 {
                    w.u32(*caps);
                }
            }
            Self::Terminate { code, reason } => {
                w.u8(TERMINATE)
                    .u8(*code as u8)
                    .str8(&sanitize(reason, MAX_REASON));
            }
            Self::Cert { cert, user_sig_due } => {
                w.u8(CERT).var16(cert);
                if let Some(due) = user_sig_due {
                    w.u8(u8::from(*due));
                }
            }
            Self::Challenge {
                seq,
                nonce,
                deadline_secs,
            } => {
                w.u8(CHALLENGE).u64(*seq).bytes(nonce).u16(*deadline_secs);
            }
            Self::Proof { seq, cert, sig } => {
                w.u8(PROOF).u64(*seq).var16(cert).bytes(sig);
            }
            Self::Ack { seq } => {
                w.u8(ACK).u64(*seq);
            }
            Self::Renew {
                principal,
                new_key,
                new_sig,
                old_sig,
                user_sig,
            } => {
                w.u8(RENEW)
                    .str8(principal)
                    .bytes(new_key)
                    .bytes(new_sig)
                    .bytes(old_sig)
                    .var16(user_sig);
            }
            Self::UserCert { part, parts, bytes } => {
                w.u8(USER_CERT).u8(*part).u8(*parts).var16(bytes);
            }
            Self::WorkloadToken { part, parts, bytes } => {
                w.u8(WORKLOAD_TOKEN).u8(*part).u8(*parts).var16(&bytes.0);
            }
        }
        w.into_vec()
    }

    /// Decodes a message; rejects unknown tags, over-long fields and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes, "control message");
        let msg = match r.u8()? {
            ACCEPT => {
                let server_id = r.str8(MAX_SERVER_ID)?.to_owned();
                let caps = match r.remaining() {
                    0 => 0,
                    _ => match r.u32()? {
                        0 => {
                            return Err(Malformed::Invalid {
                                what: "ACCEPT",
                                why: "caps sent as 0",
                            });
                        }
                        caps => caps,
                    },
                };
                Self::Accept { server_id, caps }
            }
            TERMINATE => {
                let code = TerminateCode::from_u8(r.u8()?);
                let reason = sanitize(r.str8(MAX_REASON)?, MAX_REASON);
                Self::Terminate { code, reason }
            }
            CERT => {
                let cert = r.var16(MAX_CERT)?.to_vec();
                let user_sig_due = match r.rest() {
                    [] => None,
                    [0] => Some(false),
                    [1] => Some(true),
                    _ => {
                        return Err(Malformed::Invalid {
                            what: "CERT",
                            why: "bad user_sig_due",
                        });
                    }
                };
                Self::Cert { cert, user_sig_due }
            }
            CHALLENGE => Self::Challenge {
                seq: r.u64()?,
                nonce: r.array()?,
                deadline_secs: r.u16()?,
            },
            PROOF => Self::Proof {
                seq: r.u64()?,
                cert: r.var16(MAX_CERT)?.to_vec(),
                sig: r.array()?,
            },
            ACK => Self::Ack { seq: r.u64()? },
            RENEW => Self::Renew {
                principal: r.str8(MAX_PRINCIPAL)?.to_owned(),
                new_key: r.array()?,
                new_sig: r.array()?,
                old_sig: r.array()?,
                user_sig: r.var16(MAX_SSHSIG)?.to_vec(),
            },
            USER_CERT => {
                let (part, parts, bytes) = read_part(&mut r, MAX_USER_CERT_PARTS, "USER_CERT")?;
                Self::UserCert {
                    part,
                    parts,
                    bytes: bytes.to_vec(),
                }
            }
            WORKLOAD_TOKEN => {
                let (part, parts, bytes) = read_part(&mut r, MAX_TOKEN_PARTS, "WORKLOAD_TOKEN")?;
                Self::WorkloadToken {
                    part,
                    parts,
                    bytes: TokenPart(Zeroizing::new(bytes.to_vec())),
                }
            }
            _ => {
                return Err(Malformed::Invalid {
                    what: "control message",
                    why: "unknown type",
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "ACCEPT",
            Self::Terminate { .. } => "TERMINATE",
            Self::Cert { .. } => "CERT",
            Self::Challenge { .. } => "CHALLENGE",
            Self::Proof { .. } => "PROOF",
            Self::Ack { .. } => "ACK",
            Self::Renew { .. } => "RENEW",
            Self::UserCert { .. } => "USER_CERT",
            Self::WorkloadToken { .. } => "WORKLOAD_TOKEN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Control> {
        vec![
            Control::Accept {
                server_id: "web1".into(),
                caps: 0,
            },
            Control::Accept {
                server_id: "w".repeat(MAX_SERVER_ID),
                caps: ACCEPT_CAP_USER_CERT,
            },
            Control::UserCert {
                part: MAX_USER_CERT_PARTS - 1,
                parts: MAX_USER_CERT_PARTS,
                bytes: vec![9; MAX_USER_CERT_PART],
            },
            Control::WorkloadToken {
                part: MAX_TOKEN_PARTS - 1,
                parts: MAX_TOKEN_PARTS,
                bytes: TokenPart(Zeroizing::new(vec![7; MAX_USER_CERT_PART])),
            },
            Control::Terminate {
                code: TerminateCode::IdentityRevoked,
                reason: "principal alice banned".into(),
            },
            Control::Cert {
                cert: vec![7; MAX_CERT],
                user_sig_due: None,
            },
            Control::Cert {
                cert: vec![7; MAX_CERT],
                user_sig_due: Some(true),
            },
            Control::Cert {
                cert: vec![7; 100],
                user_sig_due: Some(false),
            },
            Control::Challenge {
                seq: 9,
                nonce: [3; 32],
                deadline_secs: 10,
            },
            Control::Proof {
                seq: 9,
                cert: vec![1; 200],
                sig: [2; 64],
            },
            Control::Ack { seq: 9 },
            Control::Renew {
                principal: "a".repeat(MAX_PRINCIPAL),
                new_key: [4; 32],
                new_sig: [5; 64],
                old_sig: [6; 64],
                user_sig: vec![8; MAX_SSHSIG],
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_fits_the_smallest_record() {
        let max = crate::frame::FrameSize::new(crate::frame::MIN_FRAME)
            .expect("f")
            .max_data();
        for m in all() {
            let bytes = m.encode();
            assert!(bytes.len() <= max, "{} is {} bytes", m.name(), bytes.len());
            assert_eq!(Control::decode(&bytes), Ok(m.clone()));
            // A CERT's optional last byte is 0 or 1: any other byte after
            // any message is refused, and so is a second one.
            for tail in [&[2u8][..], &[0, 0], &[1, 1]] {
                let mut long = bytes.clone();
                long.extend_from_slice(tail);
                assert!(
                    Control::decode(&long).is_err(),
                    "{} trailing {tail:?}",
                    m.name()
                );
            }
            // Cut short, nothing decodes, but a CERT without its optional
            // byte (the form sent for keys other than security keys).
            for cut in 0..bytes.len() {
                match (&m, Control::decode(&bytes[..cut])) {
                    (
                        Control::Cert {
                            cert,
                            user_sig_due: Some(_),
                        },
                        Ok(Control::Cert {
                            cert: c,
                            user_sig_due: None,
                        }),
                    ) if *cert == c && cut + 1 == bytes.len() => {}
                    // And an ACCEPT without its caps (sent when they are 0).
                    (
                        Control::Accept { server_id, caps },
                        Ok(Control::Accept {
                            server_id: id,
                            caps: 0,
                        }),
                    ) if *caps != 0 && *server_id == id && cut + 4 == bytes.len() => {}
                    (_, r) => assert!(r.is_err(), "{} cut at {cut}", m.name()),
                }
            }
        }
    }

    #[test]
    fn caps_sent_as_zero_and_bad_user_cert_parts_are_refused() {
        let mut zero = Control::Accept {
            server_id: "web1".into(),
            caps: 0,
        }
        .encode();
        zero.extend_from_slice(&[0, 0, 0, 0]);
        assert!(Control::decode(&zero).is_err());
        for (tag, max_parts) in [
            (USER_CERT, MAX_USER_CERT_PARTS),
            (WORKLOAD_TOKEN, MAX_TOKEN_PARTS),
        ] {
            let part = |part: u8, parts: u8, len: usize| {
                let mut w = Writer::new();
                w.u8(tag).u8(part).u8(parts).var16(&vec![1; len]);
                Control::decode(&w.into_vec())
            };
            assert!(part(0, 1, 1).is_ok());
            assert!(part(max_parts - 1, max_parts, MAX_USER_CERT_PART).is_ok());
            for (p, n, len) in [
                (0, 0, 10),
                (1, 1, 10),
                (3, 2, 10),
                (0, max_parts + 1, 10),
                (0, 1, 0),
                (0, 1, MAX_USER_CERT_PART + 1),
            ] {
                assert!(
                    part(p, n, len).is_err(),
                    "{tag}: part {p} of {n}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn a_token_part_is_never_shown() {
        let m = Control::WorkloadToken {
            part: 0,
            parts: 1,
            bytes: TokenPart(Zeroizing::new(b"eyJhbGciOiJSUzI1NiJ9.secret".to_vec())),
        };
        let shown = format!("{m:?}");
        assert!(!shown.contains("eyJ") && !shown.contains("101"), "{shown}");
        assert!(shown.contains("27 bytes"), "{shown}");
    }

    #[test]
    fn terminate_reasons_are_sanitized() {
        let t = Control::Terminate {
            code: TerminateCode::NotAuthorized,
            reason: "no\x1b[31m way".into(),
        };
        let back = Control::decode(&t.encode()).expect("decode");
        assert_eq!(
            back,
            Control::Terminate {
                code: TerminateCode::NotAuthorized,
                reason: "no[31m way".into()
            }
        );
        assert!(Control::decode(&[99]).is_err());
        assert!(Control::decode(&[ACCEPT, 1, b'a', 0]).is_err());
    }
}
