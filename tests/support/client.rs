//! A protocol-level client built on `ztssh-proto`, for tests and benches
//! that need to misbehave on purpose (replay, relay, switch principal) or to
//! open many tunnels without ssh.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use ssh_key::{HashAlg, PrivateKey};
use ztssh_proto::conn::{ClientConn, ClientConnEvent, ClientEnd, Now};
use ztssh_proto::frame::{Control, Event, FrameSize};
use ztssh_proto::handshake::{self, ClientConfig};
use ztssh_proto::identity::{ClientEvent, ClientIdentity};
use ztssh_proto::labels::SSHSIG_NAMESPACE_HANDSHAKE;
use ztssh_proto::rootkey::RootKey;

/// Messages 1 and 2 of a handshake over `sock`: returns the state that
/// verified the proxy, and message 1 as sent.
pub fn hello(
    sock: &mut TcpStream,
    root: RootKey,
) -> std::io::Result<(handshake::ServerVerified, Vec<u8>)> {
    hello_with_cert(sock, root, None)
}

/// [`hello`] for a client that will present `user_cert` (an OpenSSH user
/// certificate's binary form) in message 3.
pub fn hello_with_cert(
    sock: &mut TcpStream,
    root: RootKey,
    user_cert: Option<Vec<u8>>,
) -> std::io::Result<(handshake::ServerVerified, Vec<u8>)> {
    let f = FrameSize::default();
    let cfg = ClientConfig {
        root,
        host: "localhost".into(),
        frame_size: f,
    };
    let (state, msg1) = handshake::client_start_with_cert(cfg, user_cert, &mut UnwrapErr(SysRng))
        .map_err(std::io::Error::other)?;
    sock.write_all(&msg1)?;
    let mut msg2 = vec![0u8; state.server_hello_len()];
    sock.read_exact(&mut msg2)?;
    let v = state
        .handle_server_hello(&msg2, now(), &mut UnwrapErr(SysRng))
        .map_err(std::io::Error::other)?;
    Ok((v, msg1))
}

/// Message 3: the user key at `key` signs the transcript for `principal`.
/// Returns the client's session and message 3 (not yet sent).
pub fn client_auth(
    v: handshake::ServerVerified,
    key: &Path,
    principal: &str,
) -> std::io::Result<(handshake::ClientSession, Vec<u8>)> {
    let user = PrivateKey::read_openssh_file(key).map_err(std::io::Error::other)?;
    let sig = user
        .sign(
            SSHSIG_NAMESPACE_HANDSHAKE,
            HashAlg::Sha512,
            &v.user_signed_data(),
        )
        .map_err(std::io::Error::other)?;
    v.into_client_auth(principal, user.public_key(), &sig)
        .map_err(std::io::Error::other)
}

/// One tunnel, driven by hand through the core's [`ClientConn`] in manual
/// mode: records are opened by the same code the sidecar runs, but every
/// control message comes back to the test to answer, replay or forge.
pub struct LibClient {
    pub sock: TcpStream,
    pub conn: ClientConn,
    queue: std::collections::VecDeque<Event>,
    /// How the session ended, once it has.
    end: Option<Option<ClientEnd>>,
}

/// The longest [`LibClient::next_event`] waits.
pub const NEXT_EVENT_LIMIT: Duration = Duration::from_secs(60);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds on this process's monotonic clock.
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// Both clocks, as the core takes them.
pub fn clocks() -> Now {
    Now {
        unix: now(),
        mono_ms: mono_ms(),
    }
}

impl LibClient {
    /// Handshakes as `principal` with the OpenSSH key at `key`.
    pub fn connect(port: u16, root: RootKey, key: &Path, principal: &str) -> std::io::Result<Self> {
        Self::handshake(
            TcpStream::connect(("127.0.0.1", port))?,
            root,
            key,
            principal,
        )
    }

    /// Handshakes over an already connected socket.
    pub fn handshake(
        sock: TcpStream,
        root: RootKey,
        key: &Path,
        principal: &str,
    ) -> std::io::Result<Self> {
        Self::handshake_with_cert(sock, root, key, principal, None)
    }

    /// Handshakes over an already connected socket, presenting `user_cert`
    /// (an OpenSSH user certificate of the key at `key`, binary form).
    pub fn handshake_with_cert(
        mut sock: TcpStream,
        root: RootKey,
        key: &Path,
        principal: &str,
        user_cert: Option<Vec<u8>>,
    ) -> std::io::Result<Self> {
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        sock.set_nodelay(true)?;
        let (v, _) = hello_with_cert(&mut sock, root, user_cert)?;
        let (session, msg3) = client_auth(v, key, principal)?;
        sock.write_all(&msg3)?;
        let subca = session.licence.body.subca_key;
        let ids = ClientIdentity::new(
            session.handshake_hash,
            principal,
            session.session_key,
            subca,
        );
        let mut conn = ClientConn::new(session.transport, ids, UnwrapErr(SysRng));
        conn.set_manual(true);
        Ok(Self {
            sock,
            conn,
            queue: Default::default(),
            end: None,
        })
    }

    /// The identity machine (to answer, renew or forge by hand).
    pub fn ids(&mut self) -> &mut ClientIdentity {
        self.conn.identity_mut()
    }

    /// Reads until at least one control message or CLOSE arrives (DATA is
    /// discarded), within [`NEXT_EVENT_LIMIT`]. `Ok(None)` means the
    /// session is over: the proxy closed the connection, or the TERMINATE
    /// already returned was its last word.
    pub fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        let start = std::time::Instant::now();
        while start.elapsed() < NEXT_EVENT_LIMIT {
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    ClientConnEvent::Control(c) => self.queue.push_back(Event::Control(c)),
                    ClientConnEvent::PeerClosed => self.queue.push_back(Event::Close),
                    ClientConnEvent::Ended(end) => self.end = Some(end),
                    _ => {}
                }
            }
            // What arrived before the end comes first (a TERMINATE ends
            // the session the moment it is opened).
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            match &self.end {
                None => {}
                Some(
                    None
                    | Some(
                        ClientEnd::Lost
                        | ClientEnd::Terminated(_)
                        | ClientEnd::Refused(_)
                        | ClientEnd::KeyRefused(_),
                    ),
                ) => return Ok(None),
                Some(Some(e)) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            match self.sock.read(self.conn.recv_buf())? {
                0 => self.conn.handle_peer_eof(clocks()),
                n => {
                    self.conn.handle_peer_read(n, clocks());
                    let pending = self.conn.poll_local().len();
                    self.conn.delivered(pending, clocks());
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no event within {NEXT_EVENT_LIMIT:?}"),
        ))
    }

    /// Sends a control message.
    pub fn send(&mut self, msg: &Control) -> std::io::Result<()> {
        let out = self.conn.seal_detached(|s, out| {
            let _ = s.seal_control(msg, out);
        });
        self.sock.write_all(&out)
    }

    /// Sends DATA.
    pub fn send_data(&mut self, data: &[u8]) -> std::io::Result<()> {
        let out = self.conn.seal_detached(|s, out| {
            let _ = s.seal_data(data, out);
        });
        self.sock.write_all(&out)
    }

    /// Waits for the next control message, answering nothing.
    pub fn next_control(&mut self) -> std::io::Result<Option<Control>> {
        loop {
            match self.next_event()? {
                Some(Event::Control(c)) => return Ok(Some(c)),
                // The core acts on REKEY itself as it opens.
                Some(Event::Close | Event::Rekey(_)) => continue,
                None => return Ok(None),
            }
        }
    }

    /// Reads ACCEPT and CERT, installing the certificate.
    pub fn establish(&mut self) -> std::io::Result<()> {
        match self.next_control()? {
            Some(Control::Accept { .. }) => {}
            other => {
                return Err(std::io::Error::other(format!(
                    "expected ACCEPT, got {other:?}"
                )));
            }
        }
        let cert = self
            .next_control()?
            .ok_or_else(|| std::io::Error::other("closed before CERT"))?;
        match self
            .ids()
            .handle(&cert, mono_ms())
            .map_err(std::io::Error::other)?
        {
            ClientEvent::CertInstalled { .. } => Ok(()),
            other => Err(std::io::Error::other(format!(
                "expected a certificate, got {other:?}"
            ))),
        }
    }

    /// The proof for `challenge`, not sent.
    pub fn proof(&mut self, challenge: &Control) -> std::io::Result<Control> {
        match self
            .ids()
            .handle(challenge, mono_ms())
            .map_err(std::io::Error::other)?
        {
            ClientEvent::Reply(proof) => Ok(proof),
            other => Err(std::io::Error::other(format!("no proof for {other:?}"))),
        }
    }

    /// Answers a challenge honestly, returning the proof that was sent.
    pub fn answer(&mut self, challenge: &Control) -> std::io::Result<Control> {
        let proof = self.proof(challenge)?;
        self.send(&proof)?;
        Ok(proof)
    }
}

/// Unix seconds, as the test client's wall clock reads them.
pub fn unix_now() -> u64 {
    now()
}

impl LibClient {
    /// The socket and the core, for a driver of the caller's own (a bench
    /// that waits on thousands of tunnels at once).
    pub fn into_parts(self) -> (TcpStream, ClientConn) {
        (self.sock, self.conn)
    }
}
