//! A protocol-level client built on `ztssh-proto`, for tests and benches
//! that need to misbehave on purpose (replay, relay, switch principal) or to
//! open many tunnels without ssh.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use ssh_key::{HashAlg, PrivateKey};
use ztssh_proto::frame::{Control, Event, FrameSize, Opener, Sealer};
use ztssh_proto::handshake::{self, ClientConfig, message_len};
use ztssh_proto::identity::{ClientEvent, ClientIdentity};
use ztssh_proto::keys::PublicKey;
use ztssh_proto::labels::SSHSIG_NAMESPACE_HANDSHAKE;

/// Messages 1 and 2 of a handshake over `sock`: returns the state that
/// verified the proxy, and message 1 as sent.
pub fn hello(
    sock: &mut TcpStream,
    root: PublicKey,
) -> std::io::Result<(handshake::ServerVerified, Vec<u8>)> {
    let f = FrameSize::default();
    let cfg = ClientConfig {
        root,
        host: "localhost".into(),
        frame_size: f,
    };
    let (state, msg1) = handshake::client_start(cfg).map_err(std::io::Error::other)?;
    sock.write_all(&msg1)?;
    let mut msg2 = vec![0u8; message_len(2, f)];
    sock.read_exact(&mut msg2)?;
    let v = state
        .handle_server_hello(&msg2, now())
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

/// One tunnel, driven by hand.
pub struct LibClient {
    pub sock: TcpStream,
    pub sealer: Sealer,
    pub opener: Opener,
    pub ids: ClientIdentity,
    buf: Vec<u8>,
    queue: std::collections::VecDeque<Event>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LibClient {
    /// Handshakes as `principal` with the OpenSSH key at `key`.
    pub fn connect(
        port: u16,
        root: PublicKey,
        key: &Path,
        principal: &str,
    ) -> std::io::Result<Self> {
        Self::handshake(
            TcpStream::connect(("127.0.0.1", port))?,
            root,
            key,
            principal,
        )
    }

    /// Handshakes over an already connected socket.
    pub fn handshake(
        mut sock: TcpStream,
        root: PublicKey,
        key: &Path,
        principal: &str,
    ) -> std::io::Result<Self> {
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        sock.set_nodelay(true)?;
        let (v, _) = hello(&mut sock, root)?;
        let (session, msg3) = client_auth(v, key, principal)?;
        sock.write_all(&msg3)?;
        let subca = session.licence.body.subca_key;
        let ids = ClientIdentity::new(
            session.handshake_hash,
            principal,
            session.session_key,
            subca,
        );
        Ok(Self {
            sock,
            sealer: session.transport.sealer,
            opener: session.transport.opener,
            ids,
            buf: Vec::new(),
            queue: Default::default(),
        })
    }

    /// Reads until at least one control message or CLOSE arrives (DATA is
    /// discarded). `Ok(None)` means the proxy closed the connection.
    pub fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        let f = self.opener.frame_size().get();
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let mut data = Vec::new();
            let mut events = Vec::new();
            let used = self
                .opener
                .open_all(&self.buf, &mut data, &mut events)
                .map_err(std::io::Error::other)?;
            self.buf.drain(..used);
            self.queue.extend(events);
            if !self.queue.is_empty() {
                continue;
            }
            let mut chunk = vec![0u8; f];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a control message.
    pub fn send(&mut self, msg: &Control) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.sealer
            .seal_control(msg, &mut out)
            .map_err(std::io::Error::other)?;
        self.sock.write_all(&out)
    }

    /// Waits for the next control message, answering nothing.
    pub fn next_control(&mut self) -> std::io::Result<Option<Control>> {
        loop {
            match self.next_event()? {
                Some(Event::Control(c)) => return Ok(Some(c)),
                Some(Event::Close) => continue,
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
            .ids
            .handle(&cert, now())
            .map_err(std::io::Error::other)?
        {
            ClientEvent::CertInstalled { .. } => Ok(()),
            other => Err(std::io::Error::other(format!(
                "expected a certificate, got {other:?}"
            ))),
        }
    }

    /// Answers a challenge honestly, returning the proof that was sent.
    pub fn answer(&mut self, challenge: &Control) -> std::io::Result<Control> {
        match self
            .ids
            .handle(challenge, now())
            .map_err(std::io::Error::other)?
        {
            ClientEvent::Reply(proof) => {
                self.send(&proof)?;
                Ok(proof)
            }
            other => Err(std::io::Error::other(format!("no proof for {other:?}"))),
        }
    }
}
