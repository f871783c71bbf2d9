//! Connect, verify the server, authenticate; then hand the tunnel to the
//! pump.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_proto::conn::{CoverTraffic, RekeyPolicy};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{self, ClientConfig, ClientSession, message_len};
use ztssh_proto::time::human;

use crate::explain::{Error, explain};
use crate::identity::Identity;
use crate::revocation::Revocations;
use crate::settings::Settings;
use ztssh_proto::userkey::describe;
use ztssh_sidecar::platform;

/// Unix seconds: only the licence check at the handshake reads the wall
/// clock (with the core's skew allowance); the session itself runs on the
/// monotonic clock.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs one session for ssh.
pub async fn run(s: Settings, host: String, port: u16) -> Result<(), Error> {
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
    let root = ztssh_keyfile::read_root_public(&root_path)?;
    let frame_size =
        FrameSize::new(s.frame_size).map_err(|e| format!("frame_size {}: {e}", s.frame_size))?;
    let rekey = RekeyPolicy::new(s.rekey_after_secs, s.rekey_after_bytes)?;
    let cover = CoverTraffic::parse(&s.cover_traffic)?;
    let principal = match &s.principal {
        Some(p) => p.clone(),
        None => {
            std::env::var("USER").map_err(|_| "no principal: pass --principal NAME".to_owned())?
        }
    };
    // Loaded before connecting: a list that is configured but unusable
    // stops the sidecar here.
    if let Some(url) = &s.revocation_url {
        let cache = s.revocation_list.as_deref().ok_or(
            "revocation_url needs revocation_list: the file where the sidecar keeps its copy of the list",
        )?;
        for w in crate::revocation::refresh(url, cache, &root).await? {
            eprintln!("ztssh: {w}");
        }
    }
    let revocations = match &s.revocation_list {
        Some(p) => Some(Revocations::load(p, &root)?),
        None => None,
    };
    if let Some(w) = revocations.as_ref().and_then(|r| r.stale_warning(now())) {
        eprintln!("ztssh: {w}");
    }
    let agent_sock = std::env::var_os("SSH_AUTH_SOCK").map(std::path::PathBuf::from);
    // The agent key that last worked here is tried first.
    let server_id = format!("{host}:{port}");
    let last = match (&s.identity, crate::lastkey::path()) {
        (None, Some(p)) => Some(p),
        _ => None,
    };
    let first = last
        .as_deref()
        .and_then(|p| crate::lastkey::lookup(p, &principal, &server_id));
    let candidates = Identity::candidates(
        s.identity.as_deref(),
        agent_sock.as_deref(),
        first.as_deref(),
    )?;
    for w in &candidates.skipped {
        say(format!("skipping {w}"));
    }
    let plan = crate::discover::plan(&s, &host, port, &say)
        .await
        .map_err(Error::Connect)?;
    let mut stdio =
        Some(platform::open_stdio().map_err(|e| format!("cannot use stdin/stdout: {e}"))?);
    let total = candidates.keys.len();
    let (mut tried, mut server) = (Vec::new(), host.clone());
    for (i, identity) in candidates.keys.into_iter().enumerate() {
        let desc = describe(identity.public_key());
        let fp = identity
            .public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        say(format!("trying key {desc}"));
        let attempt = Attempt {
            s: &s,
            host: &host,
            plan: &plan,
            root,
            root_path: &root_path,
            frame_size,
            principal: &principal,
            revocations: revocations.as_ref(),
        };
        let (sock, session) = attempt.connect(&identity).await?;
        let more = i + 1 < total;
        let tunnel = crate::pump::Tunnel {
            rekey,
            cover,
            retry_possible: more,
            short_certs: s.insecure_short_certs,
        };
        let r = crate::pump::run(
            sock, session, identity, &principal, verbose, &mut stdio, tunnel,
        );
        match r.await {
            Err(Error::KeyRefused {
                server: who,
                reason,
            }) => {
                say(format!("{who} refused key {desc}: {reason}"));
                tried.push((desc, reason));
                server = who;
            }
            other => {
                if let (Ok(()), Some(p)) = (&other, &last)
                    && let Err(e) = crate::lastkey::remember(p, &principal, &server_id, &fp)
                {
                    say(format!("cannot remember the key that worked: {e}"));
                }
                return other;
            }
        }
    }
    if let ([(_, reason)], true) = (tried.as_slice(), candidates.skipped.is_empty()) {
        // One key (named by --identity, or the agent's only one): the
        // proxy's reason as it is.
        return Err(Error::KeyRefused {
            server,
            reason: reason.clone(),
        });
    }
    Err(no_key(server, &principal, tried, candidates.skipped))
}

fn no_key(
    server: String,
    principal: &str,
    tried: Vec<(String, String)>,
    skipped: Vec<String>,
) -> Error {
    Error::NoKeyAccepted {
        server,
        principal: principal.to_owned(),
        tried: tried
            .into_iter()
            .map(|(k, why)| format!("{k}: {why}"))
            .collect(),
        skipped,
    }
}

/// One connection with one user key: connect, verify the server,
/// authenticate.
struct Attempt<'a> {
    s: &'a Settings,
    host: &'a str,
    plan: &'a crate::discover::Plan,
    root: ztssh_proto::keys::PublicKey,
    root_path: &'a std::path::Path,
    frame_size: FrameSize,
    principal: &'a str,
    revocations: Option<&'a Revocations>,
}

impl Attempt<'_> {
    async fn connect(&self, identity: &Identity) -> Result<(TcpStream, ClientSession), Error> {
        let (s, host) = (self.s, self.host);
        let plan = self.plan;
        let mut sock = connect(&plan.addrs, Duration::from_secs(s.connect_timeout_secs))
            .await
            .map_err(|e| Error::Connect(plan.failed(&e)))?;
        if s.verbose {
            eprintln!(
                "ztssh: connected to {}",
                sock.peer_addr().map(|a| a.to_string()).unwrap_or_default()
            );
        }
        let cfg = ClientConfig {
            root: self.root,
            host: host.to_owned(),
            frame_size: self.frame_size,
        };
        let checks = Checks {
            host,
            root_path: self.root_path,
            revocations: self.revocations,
        };
        let hs = handshake_with(&mut sock, cfg, identity, self.principal, &checks);
        let session = tokio::time::timeout(Duration::from_secs(s.handshake_timeout_secs), hs)
            .await
            .map_err(|_| {
                Error::Connect(format!(
                    "{host} did not complete the handshake within {}s",
                    s.handshake_timeout_secs
                ))
            })?
            .map_err(Error::Connect)?;
        if s.verbose {
            let lic = &session.licence.body;
            eprintln!(
                "ztssh: verified server licence: {} ({}) serial {}, expires in {}, signed by root {}",
                lic.server_id,
                lic.hostnames.join(", "),
                lic.serial,
                human(lic.not_after.saturating_sub(now())),
                lic.issuer.fingerprint()
            );
            eprintln!(
                "ztssh: sent {} as {} (hybrid X25519+ML-KEM-768 tunnel)",
                describe(identity.public_key()),
                self.principal
            );
        }
        Ok((sock, session))
    }
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

/// What the server's licence is checked against besides the root.
struct Checks<'a> {
    host: &'a str,
    root_path: &'a std::path::Path,
    revocations: Option<&'a Revocations>,
}

async fn handshake_with(
    sock: &mut TcpStream,
    cfg: ClientConfig,
    identity: &Identity,
    principal: &str,
    checks: &Checks<'_>,
) -> Result<ClientSession, String> {
    let host = checks.host;
    let closed = |_| {
        format!(
            "{host} closed the connection during the handshake (not a ztssh proxy, a different frame size, \
             or refused: the proxy log says which)"
        )
    };
    let frame_size = cfg.frame_size;
    let (state, msg1) =
        handshake::client_start(cfg, &mut UnwrapErr(SysRng)).map_err(|e| e.to_string())?;
    sock.write_all(&msg1).await.map_err(closed)?;
    let mut msg2 = vec![0u8; message_len(2, frame_size)];
    sock.read_exact(&mut msg2).await.map_err(closed)?;
    let verified = state
        .handle_server_hello(&msg2, now(), &mut UnwrapErr(SysRng))
        .map_err(|e| explain(e, host, checks.root_path))?;
    // Before the user is revealed: a server the list revokes is refused.
    if let Some(r) = checks.revocations {
        r.check(verified.licence(), host, now())?;
    }
    let sig = identity.sign(&verified.user_signed_data())?;
    let (session, msg3) = verified
        .into_client_auth(principal, identity.public_key(), &sig)
        .map_err(|e| e.to_string())?;
    sock.write_all(&msg3).await.map_err(closed)?;
    Ok(session)
}
