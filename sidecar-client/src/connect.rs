//! Connect, verify the server, authenticate; then hand the tunnel to the
//! pump.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_proto::conn::{CoverTraffic, RekeyPolicy};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{self, ClientConfig, ClientSession, message_len};
use ztssh_proto::time::when;

use crate::explain::{Error, explain};
use crate::identity::Identity;
use crate::link::Link;
use crate::revocation::Revocations;
use crate::settings::{self, Settings};
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

/// `--jump`: reach the proxy through this ssh host.
pub struct JumpVia {
    /// The jump host, as ssh takes a destination.
    pub via: String,
    /// The ssh_config file for the jump leg (`ssh -F`).
    pub config: Option<std::path::PathBuf>,
}

/// `--token-file` / `--token-command`: a workload logs in with its
/// platform's token, presented in the handshake and before each renewal.
pub struct Workload {
    /// Where the token comes from.
    pub source: crate::token::TokenSource,
    /// `--token-audience`; default `ztssh:SERVER-ID` from the licence.
    pub audience: Option<String>,
}

impl Workload {
    /// The audience to ask for on the server licensed as `server_id`.
    pub fn audience_for(&self, server_id: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("ztssh:{server_id}"))
    }

    /// The token, fetched off the runtime (a file, or a command that may
    /// take seconds).
    pub async fn fetch(&self, audience: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        let (source, aud) = (self.source.clone(), audience.to_owned());
        tokio::task::spawn_blocking(move || source.fetch(&aud))
            .await
            .map_err(|e| format!("the token source stopped: {e}"))?
    }
}

/// Jump legs in a row, counted in `ZTSSH_JUMP_DEPTH` across the nested
/// sidecars: ssh_config lines that jump in a circle stop here.
const MAX_JUMPS: u32 = 8;
const JUMP_DEPTH_VAR: &str = "ZTSSH_JUMP_DEPTH";

/// How the proxy is reached.
enum Route {
    /// Straight, at the addresses discovery found.
    Direct(crate::discover::Plan),
    /// `ssh -W target via`.
    Jump {
        via: JumpVia,
        target: String,
        depth: u32,
    },
}

impl Route {
    fn new_jump(via: JumpVia, s: &Settings, host: &str, port: u16) -> Result<Self, Error> {
        let depth = std::env::var(JUMP_DEPTH_VAR)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(0);
        if depth >= MAX_JUMPS {
            return Err(format!(
                "more than {MAX_JUMPS} jump hosts in a row: do your ssh_config's --jump lines go round in a \
                 circle? Give the jump host itself a ProxyCommand without --jump"
            )
            .into());
        }
        if via.via == host {
            return Err(format!(
                "--jump {host}: a host cannot be its own jump host; name another, or drop --jump"
            )
            .into());
        }
        // The proxy's address as the jump host resolves it.
        let target = match &s.connect {
            Some(addr) => addr.clone(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        Ok(Self::Jump { via, target, depth })
    }
}

/// Runs one session for ssh.
pub async fn run(
    s: Settings,
    host: String,
    port: u16,
    jump: Option<JumpVia>,
    workload: Option<Workload>,
) -> Result<(), Error> {
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
    // An empty SSH_AUTH_SOCK (a shell that unset the agent by `=`) is no
    // agent, not a path to try; on Windows, the agent service's pipe then.
    let agent_sock = std::env::var_os("SSH_AUTH_SOCK")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(platform::default_agent);
    // A `[[hosts]]` block names this server's keys; `--identity` wins over
    // it, and it over `identity` in the file. The agent key that last
    // worked here is tried first.
    let server_id = format!("{host}:{port}");
    let mapped = settings::hosts::find(&s.hosts, &host).filter(|_| !s.identity_on_command_line);
    if let Some(b) = mapped {
        say(format!(
            "keys for {host} from sidecar.toml (host = {:?})",
            b.host
        ));
    }
    let file = s.identity.as_deref().filter(|_| mapped.is_none());
    let last = match (file, crate::lastkey::path()) {
        (None, Some(p)) => Some(p),
        _ => None,
    };
    let mut first = last
        .as_deref()
        .and_then(|p| crate::lastkey::lookup(p, &principal, &server_id));
    // Nothing remembered under this name, in agent mode: the server may be
    // one already known under another of its names. The first connection
    // stops after the server's licence (its id) and before any key is
    // sent, if a key is remembered for that id: the server then learns
    // only that key, whichever of its names is typed.
    let mut by_id = first.is_none() && file.is_none() && mapped.is_none() && last.is_some();
    let route = match jump {
        Some(via) => Route::new_jump(via, &s, &host, port)?,
        None => Route::Direct(
            crate::discover::plan(&s, &host, port, &say)
                .await
                .map_err(Error::Connect)?,
        ),
    };
    let mut stdio =
        Some(platform::open_stdio().map_err(|e| format!("cannot use stdin/stdout: {e}"))?);
    let (mut tried, mut server) = (Vec::new(), host.clone());
    let mut redirected = false;
    let (withheld, skipped) = 'choose: loop {
        let choice = crate::identity::Choice {
            file,
            mapped,
            remembered: first.as_deref(),
            try_agent_keys: s.try_agent_keys,
            server: &server_id,
        };
        let candidates = match Identity::candidates(&choice, agent_sock.as_deref()) {
            Ok(c) => c,
            // The key remembered for the server's id left ssh-agent: the
            // first use goes on as if nothing were remembered.
            Err(e) if redirected => {
                say(format!(
                    "not offering the key remembered for this server: {e}"
                ));
                redirected = false;
                first = None;
                continue 'choose;
            }
            Err(e) => return Err(e.into()),
        };
        for w in &candidates.skipped {
            say(format!("skipping {w}"));
        }
        let total = candidates.keys.len();
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
                route: &route,
                root: root.clone(),
                root_path: &root_path,
                frame_size,
                principal: &principal,
                revocations: revocations.as_ref(),
                workload: workload.as_ref(),
                stop_for: last
                    .as_deref()
                    .filter(|_| by_id)
                    .map(|path| (path, principal.as_str(), fp.as_str())),
            };
            let (sock, session, presented, refresh) = match attempt.connect(&identity).await? {
                Connected::Session(sock, session, presented, refresh) => {
                    (sock, *session, presented, refresh)
                }
                Connected::Remembered {
                    server_id: id,
                    fp: known,
                } => {
                    say(format!(
                        "{host} is server {id}, where key {known} worked before: offering that key"
                    ));
                    by_id = false;
                    redirected = true;
                    first = Some(known);
                    continue 'choose;
                }
            };
            let licensed = format!("server_id={}", session.licence.body.server_id);
            let more = i + 1 < total;
            // The key is remembered the moment the proxy accepts it (under the
            // name typed and under the server's id): a session that then ends
            // badly (killed, revoked, ssh's own login refused) has still shown
            // which key this server takes.
            let on_accepted = last.clone().map(|p| {
                let (principal, server_id, fp, verbose) =
                    (principal.clone(), server_id.clone(), fp.clone(), verbose);
                Box::new(move || {
                    for name in [&server_id, &licensed] {
                        if let (Err(e), true) =
                            (crate::lastkey::remember(&p, &principal, name, &fp), verbose)
                        {
                            eprintln!("ztssh: cannot remember the key that worked: {e}");
                        }
                    }
                }) as Box<dyn FnOnce() + Send>
            });
            let user_cert = presented.map(|p| {
                let (valid_before, ca) = *p;
                crate::pump::UserCertWatch {
                    identity: s.identity.clone(),
                    agent: identity.agent_sock().map(std::path::Path::to_path_buf),
                    key: identity.public_key().clone(),
                    principal: principal.clone(),
                    valid_before,
                    ca,
                }
            });
            let tunnel = crate::pump::Tunnel {
                rekey,
                cover,
                retry_possible: more,
                short_certs: s.insecure_short_certs,
                on_accepted,
                user_cert,
                token: workload.as_ref().map(|w| crate::pump::TokenRenewal {
                    source: w.source.clone(),
                    audience: w.audience_for(&session.licence.body.server_id),
                    refresh,
                }),
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
                other => return other,
            }
        }
        break 'choose (candidates.withheld, candidates.skipped);
    };
    // Keys held back from this server are named, with how to offer them.
    let hint = match withheld {
        0 => String::new(),
        n => format!(
            "ssh-agent holds {n} other key{} not offered to {server_id}; to offer {}, {}; \
             or name this server's key in sidecar.toml: [[hosts]] host = \"{host}\" \
             agent_keys = [\"SHA256:...\"] (ssh-add -l lists the fingerprints)",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" },
            crate::identity::TRY_AGENT_KEYS
        ),
    };
    if let ([(_, reason)], true) = (tried.as_slice(), skipped.is_empty()) {
        // One key (named by --identity, or the agent's only one): the
        // proxy's reason as it is.
        let reason = match hint.is_empty() {
            true => reason.clone(),
            false => format!("{reason}\n{hint}"),
        };
        return Err(Error::KeyRefused { server, reason });
    }
    Err(no_key(server, &principal, tried, skipped, hint))
}

fn no_key(
    server: String,
    principal: &str,
    tried: Vec<(String, String)>,
    skipped: Vec<String>,
    hint: String,
) -> Error {
    Error::NoKeyAccepted {
        server,
        principal: principal.to_owned(),
        tried: tried
            .into_iter()
            .map(|(k, why)| format!("{k}: {why}"))
            .collect(),
        skipped,
        hint,
    }
}

/// One connection with one user key: connect, verify the server,
/// authenticate.
struct Attempt<'a> {
    s: &'a Settings,
    host: &'a str,
    route: &'a Route,
    root: ztssh_proto::rootkey::RootKey,
    root_path: &'a std::path::Path,
    frame_size: FrameSize,
    principal: &'a str,
    revocations: Option<&'a Revocations>,
    /// A workload's token source, when it logs in with one.
    workload: Option<&'a Workload>,
    /// Stop after the server's licence when the key remembered for its id
    /// (in this cache file, for this principal) is another than this
    /// key's (fingerprint): `(cache, principal, fingerprint)`.
    stop_for: Option<(&'a std::path::Path, &'a str, &'a str)>,
}

/// What one attempt came to.
enum Connected {
    /// The handshake is done, with this key (and the valid-before of the
    /// user certificate presented with it, if one was).
    Session(
        Link,
        Box<ClientSession>,
        Option<Box<(u64, ssh_key::public::KeyData)>>,
        Option<Duration>,
    ),
    /// Stopped before any key was sent: another key worked on this server
    /// (by its licence's id) before.
    Remembered {
        /// The server's id.
        server_id: String,
        /// That key's fingerprint.
        fp: String,
    },
}

impl Attempt<'_> {
    /// The stream to the proxy, straight or through the jump host.
    async fn open(&self) -> Result<Link, Error> {
        let s = self.s;
        match self.route {
            Route::Direct(plan) => {
                let sock = connect(&plan.addrs, Duration::from_secs(s.connect_timeout_secs))
                    .await
                    .map_err(|e| Error::Connect(plan.failed(&e)))?;
                if s.verbose {
                    eprintln!(
                        "ztssh: connected to {}",
                        sock.peer_addr().map(|a| a.to_string()).unwrap_or_default()
                    );
                }
                Ok(Link::Tcp(sock))
            }
            Route::Jump { via, target, depth } => {
                let jump = platform::spawn_jump(
                    std::path::Path::new("ssh"),
                    via.config.as_deref(),
                    target,
                    &via.via,
                    (JUMP_DEPTH_VAR, depth + 1),
                )
                .map_err(|e| {
                    Error::Connect(format!(
                        "cannot start ssh for the jump through {}: {e}; is OpenSSH's ssh on your PATH?",
                        via.via
                    ))
                })?;
                if s.verbose {
                    eprintln!("ztssh: through {}: ssh -W {target}", via.via);
                }
                Ok(Link::Jump(jump))
            }
        }
    }

    async fn connect(&self, identity: &Identity) -> Result<Connected, Error> {
        let (s, host) = (self.s, self.host);
        let mut link = self.open().await?;
        let cfg = ClientConfig {
            root: self.root.clone(),
            host: host.to_owned(),
            frame_size: self.frame_size,
        };
        let checks = Checks {
            host,
            root_path: self.root_path,
            revocations: self.revocations,
            // A workload presents its token, never a certificate.
            user_cert: match self.workload {
                Some(_) => None,
                None => crate::usercert::find(
                    s.identity.as_deref(),
                    identity.agent_sock(),
                    identity.public_key(),
                    self.principal,
                    s.verbose,
                ),
            },
            workload: self.workload,
            token_refresh: std::cell::Cell::new(None),
            stop_for: self.stop_for,
        };
        let hs = async {
            match &mut link {
                Link::Tcp(sock) => {
                    handshake_with(sock, cfg, identity, self.principal, &checks).await
                }
                Link::Jump(j) => handshake_with(
                    &mut j.sock,
                    cfg,
                    identity,
                    self.principal,
                    &checks,
                )
                .await
                .map_err(|e| match self.route {
                    Route::Jump { via, .. } => format!(
                        "{e}; through the jump host {}: if ssh said why above, that leg failed \
                                 (try `ssh {}` alone)",
                        via.via, via.via
                    ),
                    Route::Direct(_) => e,
                }),
            }
        };
        let session = tokio::time::timeout(Duration::from_secs(s.handshake_timeout_secs), hs)
            .await
            .map_err(|_| {
                Error::Connect(format!(
                    "{host} did not complete the handshake within {}s",
                    s.handshake_timeout_secs
                ))
            })?
            .map_err(Error::Connect)?;
        let session = match session {
            Ok(session) => session,
            // Dropping the link closes it: no key was sent.
            Err((server_id, fp)) => return Ok(Connected::Remembered { server_id, fp }),
        };
        if s.verbose {
            let lic = &session.licence.body;
            eprintln!(
                "ztssh: verified server licence: {} ({}) serial {}, expires {}, signed by root {}",
                lic.server_id,
                lic.hostnames.join(", "),
                lic.serial,
                when(lic.not_after, now()),
                lic.issuer.fingerprint()
            );
            eprintln!(
                "ztssh: sent {} as {} (hybrid X25519+ML-KEM-768 tunnel)",
                describe(identity.public_key()),
                self.principal
            );
        }
        let presented = checks
            .user_cert
            .as_deref()
            .and_then(|c| ssh_key::Certificate::from_bytes(c).ok())
            .map(|c| Box::new((c.valid_before(), c.signature_key().clone())));
        let refresh = checks.token_refresh.get();
        Ok(Connected::Session(
            link,
            Box::new(session),
            presented,
            refresh,
        ))
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
    /// The OpenSSH user certificate presented with the key, if any.
    user_cert: Option<Vec<u8>>,
    /// The workload's token source, if it logs in with one.
    workload: Option<&'a Workload>,
    /// When the token presented should be sent fresh
    /// ([`crate::token::refresh_after`]).
    token_refresh: std::cell::Cell<Option<Duration>>,
    /// [`Attempt`]'s `stop_for`.
    stop_for: Option<(&'a std::path::Path, &'a str, &'a str)>,
}

async fn handshake_with(
    sock: &mut (impl AsyncRead + AsyncWrite + Unpin),
    cfg: ClientConfig,
    identity: &Identity,
    principal: &str,
    checks: &Checks<'_>,
) -> Result<Result<ClientSession, (String, String)>, String> {
    let host = checks.host;
    let closed = |_| {
        format!(
            "{host} closed the connection during the handshake (not a ztssh proxy, a different frame size, \
             or refused: the proxy log says which)"
        )
    };
    let frame_size = cfg.frame_size;
    let (state, msg1) = match checks.workload {
        Some(_) => handshake::client_start_with_token(cfg, &mut UnwrapErr(SysRng)),
        None => {
            handshake::client_start_with_cert(cfg, checks.user_cert.clone(), &mut UnwrapErr(SysRng))
        }
    }
    .map_err(|e| e.to_string())?;
    sock.write_all(&msg1).await.map_err(closed)?;
    // Message 2's length depends on the root's kind: read an Ed25519
    // root's length first, so that a server on the other kind of root is
    // named as such instead of timing out.
    let len = state.server_hello_len();
    let mut msg2 = vec![0u8; len];
    let (head, rest) = msg2.split_at_mut(message_len(2, frame_size).min(len));
    sock.read_exact(head).await.map_err(closed)?;
    if !rest.is_empty() {
        sock.read_exact(rest).await.map_err(|_| {
            format!(
                "{host} sent the handshake of a server licensed by an Ed25519 root, but your root \
                 ({}) is hybrid (Ed25519 + ML-DSA-65): it is not licensed by your root; \
                 refusing to talk to {host}",
                checks.root_path.display()
            )
        })?;
    }
    let mut verified = state
        .handle_server_hello(&msg2, now(), &mut UnwrapErr(SysRng))
        .map_err(|e| explain(e, host, checks.root_path))?;
    // Before the user is revealed: a server the list revokes is refused.
    if let Some(r) = checks.revocations {
        r.check(verified.licence(), host, now())?;
    }
    // Still before the user is revealed: a key remembered for this server's
    // id (another of its names) is offered instead.
    if let Some((cache, who, fp)) = checks.stop_for {
        let id = &verified.licence().body.server_id;
        if let Some(known) = crate::lastkey::lookup(cache, who, &format!("server_id={id}"))
            && known != fp
        {
            return Ok(Err((id.clone(), known)));
        }
    }
    // The token is minted for this server's audience, now that its
    // licence (verified under the root) has named it.
    if let Some(w) = checks.workload {
        let audience = w.audience_for(&verified.licence().body.server_id);
        let token = w
            .fetch(&audience)
            .await
            .map_err(|e| format!("no workload token for {host} (audience {audience}): {e}"))?;
        checks.token_refresh.set(crate::token::refresh_after(
            &token,
            crate::token::unix_now(),
        ));
        verified
            .present_token(token)
            .map_err(|e| format!("the workload token: {e}"))?;
    }
    let sig = identity.sign(&verified.user_signed_data())?;
    let (session, msg3) = verified
        .into_client_auth(principal, identity.public_key(), &sig)
        .map_err(|e| e.to_string())?;
    sock.write_all(&msg3).await.map_err(closed)?;
    Ok(Ok(session))
}
