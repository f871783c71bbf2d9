//! Connect, verify the server, authenticate, then carry ssh's bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use ztssh_proto::frame::{Control, Event, FrameSize, Opener, Sealer};
use ztssh_proto::handshake::{self, ClientConfig, ClientSession, message_len};
use ztssh_proto::identity::{ClientEvent, ClientIdentity};
use ztssh_proto::time::human;
use ztssh_proto::{AuthError, ProtoError};

use crate::identity::Identity;
use crate::settings::Settings;

const BATCH: usize = 256 * 1024;
/// Wait before retrying a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(5);

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs one session for ssh.
pub async fn run(s: Settings, host: String, port: u16) -> Result<(), String> {
    let verbose = s.verbose;
    let say = |m: String| {
        if verbose {
            eprintln!("ztssh: {m}");
        }
    };
    let root_path = s
        .root
        .clone()
        .ok_or("no root CA key: pass --root root.pub or set root in sidecar.toml")?;
    let root = ztssh_proto::keyfile::read_root_public(&root_path)?;
    let frame_size =
        FrameSize::new(s.frame_size).map_err(|e| format!("frame_size {}: {e}", s.frame_size))?;
    let principal = match &s.principal {
        Some(p) => p.clone(),
        None => {
            std::env::var("USER").map_err(|_| "no principal: pass --principal NAME".to_owned())?
        }
    };
    let agent_sock = std::env::var_os("SSH_AUTH_SOCK").map(std::path::PathBuf::from);
    let identity = Identity::resolve(s.identity.as_deref(), agent_sock.as_deref())?;

    let addrs = resolve(&s, &host, port).await?;
    let mut sock = connect(&addrs, Duration::from_secs(s.connect_timeout_secs))
        .await
        .map_err(|e| format!("cannot connect to {host} port {port}: {e}"))?;
    say(format!(
        "connected to {}",
        sock.peer_addr().map(|a| a.to_string()).unwrap_or_default()
    ));

    let cfg = ClientConfig {
        root,
        host: host.clone(),
        frame_size,
    };
    let hs = handshake_with(&mut sock, cfg, &identity, &principal, &host, &root_path);
    let session = tokio::time::timeout(Duration::from_secs(s.handshake_timeout_secs), hs)
        .await
        .map_err(|_| {
            format!(
                "{host} did not complete the handshake within {}s",
                s.handshake_timeout_secs
            )
        })??;
    let lic = &session.licence.body;
    say(format!(
        "verified server licence: {} ({}) serial {}, expires in {}, signed by root {}",
        lic.server_id,
        lic.hostnames.join(", "),
        lic.serial,
        human(lic.not_after.saturating_sub(now())),
        lic.issuer.fingerprint()
    ));
    say(format!(
        "authenticated as {principal} with {} (hybrid X25519+ML-KEM-768 tunnel)",
        identity.public_key().fingerprint(ssh_key::HashAlg::Sha256)
    ));
    pump(sock, session, identity, &principal, verbose).await
}

async fn resolve(s: &Settings, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Some(c) = &s.connect {
        return c
            .parse::<SocketAddr>()
            .map(|a| vec![a])
            .map_err(|_| format!("connect = {c:?} is not an address like 192.0.2.7:2222"));
    }
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        .build()
        .map_err(|e| format!("cannot build resolver: {e}"))?;
    let ips = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let addrs: Vec<_> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no addresses"));
    }
    Ok(addrs)
}

async fn connect(addrs: &[SocketAddr], limit: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{a} timed out"))
            }
        }
    }
    Err(last)
}

async fn handshake_with(
    sock: &mut TcpStream,
    cfg: ClientConfig,
    identity: &Identity,
    principal: &str,
    host: &str,
    root_path: &std::path::Path,
) -> Result<ClientSession, String> {
    let closed = |_| {
        format!(
            "{host} closed the connection during the handshake (not a ztssh proxy, a different frame size, \
             or refused: the proxy log says which)"
        )
    };
    let frame_size = cfg.frame_size;
    let (state, msg1) = handshake::client_start(cfg).map_err(|e| e.to_string())?;
    sock.write_all(&msg1).await.map_err(closed)?;
    let mut msg2 = vec![0u8; message_len(2, frame_size)];
    sock.read_exact(&mut msg2).await.map_err(closed)?;
    let verified = state
        .handle_server_hello(&msg2, now())
        .map_err(|e| explain(e, host, root_path))?;
    let sig = identity.sign(&verified.user_signed_data())?;
    let (session, msg3) = verified
        .into_client_auth(principal, identity.public_key(), &sig)
        .map_err(|e| e.to_string())?;
    sock.write_all(&msg3).await.map_err(closed)?;
    Ok(session)
}

/// Turns a handshake failure into a sentence the user can act on.
fn explain(e: ProtoError, host: &str, root_path: &std::path::Path) -> String {
    match e {
        ProtoError::Auth(AuthError::Expired { secs, .. }) => {
            format!("server licence for {host} expired {} ago", human(secs))
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
            "tunnel handshake with {host} failed: not a ztssh proxy, or the connection was tampered with"
        ),
        other => format!("handshake with {host} failed: {other}"),
    }
}

fn stdio() -> (Reader, Writer) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    // Pipes (what ssh gives a ProxyCommand) get true non-blocking IO;
    // anything else falls back to tokio's blocking-thread stdio.
    let input: Reader = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)).ok())
        .map_or_else(
            || Box::new(tokio::io::stdin()) as Reader,
            |r| Box::new(r) as Reader,
        );
    let output: Writer = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)).ok())
        .map_or_else(
            || Box::new(tokio::io::stdout()) as Writer,
            |w| Box::new(w) as Writer,
        );
    (input, output)
}

async fn pump(
    sock: TcpStream,
    session: ClientSession,
    identity: Identity,
    principal: &str,
    verbose: bool,
) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (input, output) = stdio();
    let (tr, tw) = sock.into_split();
    let lic = &session.licence.body;
    let ids = ClientIdentity::new(
        session.handshake_hash,
        principal,
        session.session_key,
        lic.subca_key,
    );
    // ssh sends its ProxyCommand SIGHUP as it exits; end the tunnel cleanly
    // (a CLOSE record) rather than vanishing mid-stream.
    let hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    let term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut pump = Pump {
        server: lic.server_id.clone(),
        verbose,
        sealer: session.transport.sealer,
        opener: session.transport.opener,
        ids,
        identity: Arc::new(identity),
        output: Some(output),
        tw,
        accepted: false,
    };
    pump.run(input, tr, hangup, term).await
}

struct Pump {
    server: String,
    verbose: bool,
    sealer: Sealer,
    opener: Opener,
    ids: ClientIdentity,
    identity: Arc<Identity>,
    output: Option<Writer>,
    tw: OwnedWriteHalf,
    accepted: bool,
}

/// A renewal signature being made off the data path (ssh-agent may ask the
/// user to confirm).
type Signing = tokio::task::JoinHandle<Result<Vec<u8>, String>>;

impl Pump {
    fn say(&self, msg: String) {
        if self.verbose {
            eprintln!("ztssh: {msg}");
        }
    }

    async fn send(&mut self, out: &[u8]) -> Result<(), String> {
        self.tw
            .write_all(out)
            .await
            .map_err(|e| format!("connection to {} lost: {e}", self.server))
    }

    async fn run(
        &mut self,
        mut input: Reader,
        mut tr: OwnedReadHalf,
        mut hangup: tokio::signal::unix::Signal,
        mut term: tokio::signal::unix::Signal,
    ) -> Result<(), String> {
        let max = self.sealer.frame_size().max_data();
        let f = self.opener.frame_size().get();
        let mut ibuf = vec![0u8; (BATCH / max).max(1) * max];
        let mut tbuf = vec![0u8; (BATCH / f).max(2) * f];
        let mut filled = 0;
        let mut out = Vec::with_capacity(BATCH + BATCH / 8);
        let mut data = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        let mut stdin_open = true;
        let mut signing: Option<Signing> = None;
        let mut retry_at = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                r = input.read(&mut ibuf), if stdin_open => {
                    let n = r.map_err(|e| format!("reading from ssh: {e}"))?;
                    out.clear();
                    if n == 0 {
                        stdin_open = false;
                        self.sealer.seal_close(&mut out).map_err(|e| e.to_string())?;
                    } else {
                        self.sealer.seal_data(&ibuf[..n], &mut out).map_err(|e| e.to_string())?;
                    }
                    self.send(&out).await?;
                }
                r = tr.read(&mut tbuf[filled..]) => {
                    let n = r.map_err(|e| format!("connection to {} lost: {e}", self.server))?;
                    if n == 0 {
                        return if self.output.is_none() {
                            Ok(())
                        } else {
                            Err(format!("connection to {} lost (closed without an end-of-session record)", self.server))
                        };
                    }
                    filled += n;
                    let opened = self.opener.open_all(&tbuf[..filled], &mut data, &mut events);
                    let used = opened.map_err(|e| format!("tunnel integrity failure from {}: {e}; session closed", self.server))?;
                    tbuf.copy_within(used..filled, 0);
                    filled -= used;
                    if !data.is_empty() {
                        let server = self.server.clone();
                        let sink = self.output.as_mut().ok_or_else(|| format!("{server} sent data after closing"))?;
                        let written = async { sink.write_all(&data).await?; sink.flush().await }.await;
                        if written.is_err() {
                            // ssh has gone (it exits as soon as it has the exit
                            // status); end the tunnel cleanly.
                            return self.close(&mut out).await;
                        }
                        data.clear();
                    }
                    for ev in std::mem::take(&mut events) {
                        self.on_event(ev, &mut out).await?;
                    }
                }
                _ = tick.tick(), if signing.is_none() => {
                    let now = now();
                    if self.ids.renewal_due(now) && tokio::time::Instant::now() >= retry_at {
                        let data = self.ids.renewal_data()?;
                        let identity = Arc::clone(&self.identity);
                        signing = Some(tokio::task::spawn_blocking(move || identity.sign_renewal(&data)));
                    }
                }
                done = wait_signing(&mut signing), if signing.is_some() => {
                    signing = None;
                    match done.unwrap_or_else(|e| Err(e.to_string())) {
                        Ok(sig) => {
                            let msg = self.ids.renew(sig)?;
                            out.clear();
                            self.sealer.seal_control(&msg, &mut out).map_err(|e| e.to_string())?;
                            self.send(&out).await?;
                        }
                        Err(e) => {
                            self.ids.abandon_renewal();
                            retry_at = tokio::time::Instant::now() + RENEW_RETRY;
                            let left = self.ids.cert().map_or(0, |c| c.not_after.saturating_sub(now()));
                            eprintln!("ztssh: warning: certificate renewal failed: {e}; the session ends in {} unless a retry succeeds", human(left));
                        }
                    }
                }
                _ = hangup.recv() => return self.close(&mut out).await,
                _ = term.recv() => return self.close(&mut out).await,
            }
        }
    }

    async fn close(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        self.sealer.seal_close(out).map_err(|e| e.to_string())?;
        let _ = self.tw.write_all(out).await;
        Ok(())
    }

    async fn on_event(&mut self, ev: Event, out: &mut Vec<u8>) -> Result<(), String> {
        let server = self.server.clone();
        match ev {
            Event::Control(Control::Accept { .. }) => {
                self.say(format!(
                    "{server} accepted the session; connected to its sshd"
                ));
                self.accepted = true;
            }
            Event::Control(Control::Terminate { reason, .. }) if !self.accepted => {
                return Err(format!("{server} refused the session: {reason}"));
            }
            Event::Control(Control::Terminate { reason, .. }) => {
                return Err(format!("session terminated by {server}: {reason}"));
            }
            Event::Control(msg) => match self.ids.handle(&msg, now())? {
                ClientEvent::Reply(reply) => {
                    if let Control::Proof { seq, .. } = &reply {
                        self.say(format!("identity challenge {seq} from {server}: answered"));
                    }
                    out.clear();
                    self.sealer
                        .seal_control(&reply, out)
                        .map_err(|e| e.to_string())?;
                    self.send(out).await?;
                }
                ClientEvent::CertInstalled {
                    serial,
                    not_after,
                    renewed,
                } => {
                    let verb = if renewed { "renewed" } else { "issued" };
                    self.say(format!(
                        "client certificate {serial} {verb}, valid for {}",
                        human(not_after.saturating_sub(now()))
                    ));
                }
                ClientEvent::Acked(seq) => self.say(format!("identity proof {seq} accepted")),
                ClientEvent::None => {}
            },
            Event::Close => {
                if let Some(mut sink) = self.output.take() {
                    let _ = sink.shutdown().await;
                }
            }
        }
        Ok(())
    }
}

async fn wait_signing(
    s: &mut Option<Signing>,
) -> Result<Result<Vec<u8>, String>, tokio::task::JoinError> {
    match s {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
