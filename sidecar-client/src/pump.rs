//! Carries ssh's bytes through the tunnel: the IO loop over the core's
//! [`ClientConn`]. No write is ever awaited: the proxy socket and ssh's
//! pipes are used through readiness and non-blocking reads and writes, so a
//! proxy that stops reading cannot keep the sidecar from acting on a
//! TERMINATE or a closed session, and cannot hold it beyond the write bound.

use std::io::ErrorKind;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use getrandom::SysRng;
use rand_core::UnwrapErr;

use ztssh_proto::conn::{
    ClientConn, ClientConnEvent, ClientEnd, CoverTraffic, MAX_RENEWAL_SIGNATURES_PER_HOUR, Now,
    RekeyPolicy,
};
use ztssh_proto::control::TerminateCode;
use ztssh_proto::handshake::ClientSession;
use ztssh_proto::identity::ClientIdentity;
use ztssh_proto::time::human;

use crate::explain::{self, Error};
use crate::identity::Identity;
use crate::link::Link;
use ztssh_sidecar::platform::{self, SshGone, SshInput, SshOutput};

/// How long the last bytes get to reach ssh or the proxy once the session
/// is over.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// A renewal signature being made off the data path (ssh-agent may ask the
/// user to confirm).
/// A renewal's user-key signature, with the workload token fetched first
/// in a workload session (or why there is none).
type Signing = tokio::task::JoinHandle<(Result<Vec<u8>, String>, Option<(TokenFetched, bool)>)>;

/// A workload token fetched for a renewal or a refresh, or why not.
type TokenFetched = Result<zeroize::Zeroizing<Vec<u8>>, String>;

/// A workload session's token source: read again before each renewal and
/// when the token in force nears its end.
pub struct TokenRenewal {
    /// Where the token comes from.
    pub source: crate::token::TokenSource,
    /// The audience asked for (the handshake's).
    pub audience: String,
    /// When to send a fresh one, counted from the last sent (two thirds
    /// of its lifetime); `None`: only before renewals.
    pub refresh: Option<Duration>,
}

/// The monotonic clock's start, and the wall clock then (Unix seconds).
fn start() -> (Instant, u64) {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    *START.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (Instant::now(), unix)
    })
}

fn mono_ms() -> u64 {
    u64::try_from(start().0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Both clocks, as the core takes them. The session runs on the monotonic
/// clock: the Unix time is counted on it from the wall clock read once
/// (the sidecar's core does not read it; certificate windows are the
/// proxy's).
fn now() -> Now {
    let mono_ms = mono_ms();
    Now {
        unix: start().1.saturating_add(mono_ms / 1000),
        mono_ms,
    }
}

fn instant_at(ms: u64) -> tokio::time::Instant {
    let now_ms = mono_ms();
    tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms))
}

/// How this connection's tunnel runs.
pub struct Tunnel {
    /// When the sidecar starts a rekey.
    pub rekey: RekeyPolicy,
    /// Keystroke-timing cover traffic.
    pub cover: CoverTraffic,
    /// Read nothing from ssh until the proxy accepts (another key may
    /// follow a refusal).
    pub retry_possible: bool,
    /// Accept client certificates down to 2 s (test rigs only; said on
    /// stderr).
    pub short_certs: bool,
    /// Called once, when the proxy accepts the session (the key that
    /// worked is remembered then, not at a clean end the session may
    /// never reach).
    pub on_accepted: Option<Box<dyn FnOnce() + Send>>,
    /// The OpenSSH user certificate presented in the handshake, if any:
    /// where a newer one is looked for during the session.
    pub user_cert: Option<UserCertWatch>,
    /// A workload session's token source.
    pub token: Option<TokenRenewal>,
}

/// Where a renewed OpenSSH user certificate comes from, and the one in
/// force: the session sends a newer one for the same key and principal
/// (a re-run of `ssh-keygen -s`, `step ssh renew`, Vault) to a proxy that
/// takes one, so the session outlives the first certificate.
#[derive(Clone)]
pub struct UserCertWatch {
    /// `--identity KEY` (its `KEY-cert.pub` is read), or none: ssh-agent.
    pub identity: Option<std::path::PathBuf>,
    /// ssh-agent's socket.
    pub agent: Option<std::path::PathBuf>,
    /// The key the certificate must certify.
    pub key: ssh_key::PublicKey,
    /// The principal it must name.
    pub principal: String,
    /// The valid-before of the certificate presented (Unix seconds).
    pub valid_before: u64,
    /// The CA that signed it: a renewal must come from the same one.
    pub ca: ssh_key::public::KeyData,
}

/// The least time between two certificates sent: the proxy's interval
/// ([`ztssh_proto::identity::USER_CERT_MIN_INTERVAL_MS`]) and a second.
const USER_CERT_SPACING: Duration =
    Duration::from_millis(ztssh_proto::identity::USER_CERT_MIN_INTERVAL_MS + 1000);

/// A certificate found during the session: its bytes and valid-before.
type FoundCert = Option<(Vec<u8>, u64)>;
/// A look for one, off the session's loop.
type CertReading = tokio::task::JoinHandle<FoundCert>;

/// How often the certificate is looked for, at most and at least: a
/// quarter of what is left of the one in force, within these bounds.
const USER_CERT_CHECK_MIN: Duration = Duration::from_secs(5);
const USER_CERT_CHECK_MAX: Duration = Duration::from_secs(60);

impl UserCertWatch {
    /// When to look next, from `now` (Unix seconds).
    fn next_check(&self, now: u64) -> Duration {
        let left = Duration::from_secs(self.valid_before.saturating_sub(now));
        (left / 4).clamp(USER_CERT_CHECK_MIN, USER_CERT_CHECK_MAX)
    }

    /// The newest usable certificate now (its bytes and valid-before).
    fn read(&self) -> FoundCert {
        let bytes = crate::usercert::find_from(
            self.identity.as_deref(),
            self.agent.as_deref(),
            &self.key,
            &self.principal,
            Some(&self.ca),
            false,
        )?;
        let cert = ssh_key::Certificate::from_bytes(&bytes).ok()?;
        Some((bytes, cert.valid_before()))
    }
}

/// Runs the session until it ends. With `tunnel.retry_possible`, nothing is read
/// from ssh until the proxy accepts, and a refused key hands `stdio` back
/// untouched ([`Error::KeyRefused`]) for the next key's connection.
pub async fn run(
    sock: Link,
    session: ClientSession,
    identity: Identity,
    principal: &str,
    verbose: bool,
    stdio: &mut Option<platform::Stdio>,
    tunnel: Tunnel,
) -> Result<(), Error> {
    let io = stdio.take().ok_or("stdin/stdout already closed")?;
    let lic = &session.licence.body;
    let mut ids = ClientIdentity::new(
        session.handshake_hash,
        principal,
        session.session_key,
        lic.subca_key,
    );
    if tunnel.short_certs {
        ids.allow_short_certs();
        eprintln!(
            "ztssh: warning: --insecure-short-certs: accepting client certificates down to {}s \
             from {}: it may ask your key to sign that often (at most {MAX_RENEWAL_SIGNATURES_PER_HOUR} \
             times an hour); for test rigs only",
            ids.min_ttl_secs(),
            lic.server_id
        );
    }
    // ssh sends its ProxyCommand SIGHUP as it exits; end the tunnel cleanly
    // (a CLOSE record) rather than vanishing mid-stream.
    let gone = SshGone::watch()?;
    let mut conn = ClientConn::new(session.transport, ids, UnwrapErr(SysRng));
    conn.hold_until_accepted(tunnel.retry_possible);
    conn.set_rekey_policy(tunnel.rekey, now());
    conn.set_cover_traffic(tunnel.cover);
    let mut pump = Pump {
        server: lic.server_id.clone(),
        verbose,
        conn,
        touch: identity.is_security_key(),
        identity: Arc::new(identity),
        sock,
        input: Some(io.input),
        output: Some(io.output),
        signing: None,
        sock_error: None,
        renewal_warned: None,
        on_accepted: tunnel.on_accepted,
        cert_watch: tunnel.user_cert,
        cert_reading: None,
        cert_sent_at: None,
        cert_resend: None,
        token_refresh_at: tunnel
            .token
            .as_ref()
            .and_then(|t| t.refresh)
            .map(|d| tokio::time::Instant::now() + d),
        token: tunnel.token,
        token_fetching: None,
        token_error: None,
        token_last: None,
        renewal_retrying: false,
    };
    if let Some(w) = &pump.cert_watch {
        pump.conn.presented_user_cert(w.valid_before);
    }
    if pump.token.is_some() {
        pump.conn.presented_token();
    }
    let r = pump.run(gone).await;
    if let (Err(Error::KeyRefused { .. }), Some(input), Some(output)) =
        (&r, pump.input.take(), pump.output.take())
    {
        *stdio = Some(platform::Stdio { input, output });
    }
    r
}

struct Pump {
    server: String,
    /// The user key is a security key: a renewal signature needs a touch.
    touch: bool,
    verbose: bool,
    conn: ClientConn,
    identity: Arc<Identity>,
    sock: Link,
    input: Option<SshInput>,
    output: Option<SshOutput>,
    signing: Option<Signing>,
    /// The proxy socket failed with this error.
    sock_error: Option<String>,
    /// When the last renewal failure was said.
    renewal_warned: Option<Instant>,
    /// Called at [`ClientConnEvent::Accepted`].
    on_accepted: Option<Box<dyn FnOnce() + Send>>,
    /// Where a newer user certificate is looked for.
    cert_watch: Option<UserCertWatch>,
    /// A look for one, under way (file or agent, off the loop).
    cert_reading: Option<CertReading>,
    /// When a certificate was last sent.
    cert_sent_at: Option<Instant>,
    /// That certificate, to send once more past the proxy's interval.
    cert_resend: Option<Vec<u8>>,
    /// A workload session's token source.
    token: Option<TokenRenewal>,
    /// When to send a fresh token before the one in force ends.
    token_refresh_at: Option<tokio::time::Instant>,
    /// A refresh's fetch, under way (off the loop).
    token_fetching: Option<tokio::task::JoinHandle<TokenFetched>>,
    /// Why the last fetch failed, for the end it may lead to.
    token_error: Option<String>,
    /// The last token fetched, and when: a renewal retried soon after
    /// sends it again instead of asking the platform for another (each new
    /// one costs the proxy a check, and it checks a few per certificate).
    token_last: Option<(Instant, zeroize::Zeroizing<Vec<u8>>)>,
    /// A renewal failed and is being retried (no certificate since).
    renewal_retrying: bool,
}

/// How long a fetched token is sent again for a retried renewal.
const TOKEN_REUSE: Duration = Duration::from_secs(60);

/// How often a failing renewal is said on stderr.
const RENEWAL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What the user can do about a renewal that fails.
fn renewal_hint(agent: bool) -> &'static str {
    if agent {
        "If you removed the key from ssh-agent (or the agent stopped), add it back with ssh-add \
         KEY in another terminal"
    } else {
        "Check that the key file is still there and readable"
    }
}

/// What ended the loop.
enum Exit {
    /// The core ended the session (None: normally).
    Ended(Option<ClientEnd>),
    /// ssh is gone (SIGHUP, SIGTERM, or its end of the pipe closed).
    SshGone,
}

impl Pump {
    fn say(&self, msg: String) {
        if self.verbose {
            eprintln!("ztssh: {msg}");
        }
    }

    /// An identity end after failed renewals says what to do about them.
    fn with_renewal_hint(&self, e: Error) -> Error {
        match e {
            Error::Terminated {
                server,
                code: code @ TerminateCode::IdentityRevoked,
                reason,
            } if self.renewal_warned.is_some() => Error::Terminated {
                server,
                code,
                reason: format!(
                    "{reason}. {}, then reconnect",
                    renewal_hint(self.identity.is_agent())
                ),
            },
            other => other,
        }
    }

    async fn run(&mut self, mut gone: SshGone) -> Result<(), Error> {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<u64> = None;
        let first_look = self
            .cert_watch
            .as_ref()
            .map_or(Duration::from_secs(3600), |w| w.next_check(now().unix));
        let cert_sleep = tokio::time::sleep(first_look);
        tokio::pin!(cert_sleep);
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let token_sleep = tokio::time::sleep_until(self.token_refresh_at.unwrap_or(far));
        tokio::pin!(token_sleep);
        let exit = loop {
            if let Some(exit) = self.step() {
                break exit;
            }
            let deadline = self.conn.poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(t) = deadline {
                    sleep.as_mut().reset(instant_at(t));
                }
            }
            let want_peer = self.conn.wants_peer();
            let want_tx = !self.conn.poll_transmit().is_empty();
            let want_input = self.input.is_some() && self.conn.wants_local();
            let want_output = self.output.is_some() && !self.conn.poll_local().is_empty();
            let (input, output) = (self.input.as_ref(), self.output.as_ref());
            tokio::select! {
                r = self.sock.readable(), if want_peer => match r {
                    Ok(()) => self.read_proxy(),
                    Err(e) => self.sock_failed(e),
                },
                r = self.sock.writable(), if want_tx => if let Err(e) = r {
                    self.sock_failed(e);
                },
                r = readable(input), if want_input => if r.is_ok() { self.read_ssh() },
                r = writable(output), if want_output => if r.is_err() { break Exit::SshGone },
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.conn.handle_timeout(now());
                }
                done = wait_signing(&mut self.signing), if self.signing.is_some() => {
                    self.signing = None;
                    let (sig, token) = done.unwrap_or_else(|e| (Err(e.to_string()), None));
                    // The token goes first: the proxy renews only after one.
                    match token {
                        // A retry's token, fetched for the renewal it
                        // retries: sent again, timing nothing.
                        Some((Ok(t), true)) => {
                            self.conn.send_token(&t, now());
                        }
                        Some((t, _)) => {
                            self.token_fetched(t);
                            if let Some(at) = self.token_refresh_at {
                                token_sleep.as_mut().reset(at);
                            }
                        }
                        None => {}
                    }
                    self.conn.handle_signature(sig, now());
                }
                () = &mut token_sleep, if self.token_refresh_at.is_some() && self.token_fetching.is_none() => {
                    self.token_refresh_at = None;
                    token_sleep.as_mut().reset(far);
                    if let Some(t) = &self.token {
                        let (source, aud) = (t.source.clone(), t.audience.clone());
                        self.token_fetching =
                            Some(tokio::task::spawn_blocking(move || source.fetch(&aud)));
                    }
                }
                got = wait_token(&mut self.token_fetching), if self.token_fetching.is_some() => {
                    self.token_fetching = None;
                    self.token_fetched(got.unwrap_or_else(|e| Err(e.to_string())));
                    if let Some(at) = self.token_refresh_at {
                        token_sleep.as_mut().reset(at);
                    }
                }
                () = &mut cert_sleep, if self.cert_watch.is_some() && self.cert_reading.is_none() => {
                    // Only to a proxy that takes one; looked for off the
                    // loop (ssh-agent is a socket).
                    // The last one sent, once more, past the proxy's
                    // interval (it may have come too soon to be checked).
                    if self.cert_sent_at.is_some_and(|t| t.elapsed() > USER_CERT_SPACING)
                        && let Some(again) = self.cert_resend.take()
                    {
                        self.conn.resend_user_cert(&again, now());
                    }
                    if self.conn.takes_user_cert()
                        && let Some(w) = self.cert_watch.clone()
                    {
                        self.cert_reading = Some(tokio::task::spawn_blocking(move || w.read()));
                    }
                    let next = self
                        .cert_watch
                        .as_ref()
                        .map_or(USER_CERT_CHECK_MAX, |w| w.next_check(now().unix));
                    cert_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
                found = wait_cert(&mut self.cert_reading), if self.cert_reading.is_some() => {
                    self.cert_reading = None;
                    if let Ok(Some((bytes, valid_before))) = found {
                        self.offer_user_cert(&bytes, valid_before);
                    }
                }
                () = gone.recv() => break Exit::SshGone,
            }
        };
        self.finish(exit).await
    }

    /// Sends a certificate found during the session when it lasts longer
    /// than the last one sent (the core decides), and says so.
    fn offer_user_cert(&mut self, bytes: &[u8], valid_before: u64) {
        // The proxy takes one certificate per USER_CERT_MIN_INTERVAL_MS and
        // refuses the next one sooner unchecked; a newer one found meanwhile
        // waits for a later look.
        let spaced = self
            .cert_sent_at
            .is_none_or(|t| t.elapsed() > USER_CERT_SPACING);
        if spaced && self.conn.send_user_cert(bytes, valid_before, now()) {
            self.cert_sent_at = Some(Instant::now());
            self.cert_resend = Some(bytes.to_vec());
            if let Some(w) = &mut self.cert_watch {
                w.valid_before = valid_before;
            }
            self.say(format!(
                "sent {} a newer user certificate, valid until {}",
                self.server,
                ztssh_proto::time::date(valid_before)
            ));
        }
    }

    /// Flushes what can be written now, acts on the core's events and
    /// starts a renewal signature when one is due. `Some` ends the loop.
    fn step(&mut self) -> Option<Exit> {
        if let Err(e) = self.flush_proxy() {
            // The proxy may have closed after a TERMINATE we have not read
            // yet (our write failed because it is gone): read what it sent
            // first, so the user sees its reason rather than a broken pipe.
            self.read_proxy_rest();
            self.sock_failed(e);
        }
        if self.flush_ssh().is_err() {
            return Some(Exit::SshGone);
        }
        if self.conn.local_finished() {
            // The proxy closed its direction: ssh sees end of file.
            self.output = None;
        }
        while let Some(ev) = self.conn.poll_event() {
            if let ClientConnEvent::Ended(end) = ev {
                return Some(Exit::Ended(end));
            }
            self.on_event(ev);
        }
        if let Some(data) = self.conn.poll_sign() {
            let identity = Arc::clone(&self.identity);
            // A retry sends the token fetched for the renewal it retries;
            // every new renewal reads the source again.
            let reuse = self
                .token_last
                .as_ref()
                .filter(|(at, t)| {
                    self.renewal_retrying
                        && at.elapsed() < TOKEN_REUSE
                        && crate::token::seconds_left(t, crate::token::unix_now())
                            .is_some_and(|left| left > TOKEN_REUSE.as_secs())
                })
                .map(|(_, t)| t.clone());
            let token = self
                .token
                .as_ref()
                .map(|t| (t.source.clone(), t.audience.clone(), reuse));
            self.signing = Some(tokio::task::spawn_blocking(move || {
                let fetched = token.map(|(source, aud, reuse)| match reuse {
                    Some(t) => (Ok(t), true),
                    None => (source.fetch(&aud), false),
                });
                (identity.sign_renewal(&data), fetched)
            }));
        }
        None
    }

    fn read_proxy(&mut self) {
        match self.sock.try_read(self.conn.recv_buf()) {
            Ok(0) => self.conn.handle_peer_eof(now()),
            Ok(n) => self.conn.handle_peer_read(n, now()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.sock_failed(e),
        }
    }

    /// Reads what is already in the socket, without waiting (bounded).
    fn read_proxy_rest(&mut self) {
        for _ in 0..256 {
            if self.conn.is_done() || !self.conn.wants_peer() {
                return;
            }
            match self.sock.try_read(self.conn.recv_buf()) {
                Ok(n) if n > 0 => self.conn.handle_peer_read(n, now()),
                _ => return,
            }
        }
    }

    fn sock_failed(&mut self, e: std::io::Error) {
        self.sock_error.get_or_insert(e.to_string());
        self.conn.handle_peer_eof(now());
    }

    fn read_ssh(&mut self) {
        let Some(input) = self.input.as_ref() else {
            return;
        };
        match input.try_read(self.conn.local_buf()) {
            Ok(0) => {
                self.input = None;
                self.conn.handle_local_eof(now());
            }
            Ok(n) => self.conn.handle_local_read(n, now()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                self.input = None;
                self.conn.handle_local_eof(now());
            }
        }
    }

    fn flush_proxy(&mut self) -> std::io::Result<()> {
        loop {
            let bytes = self.conn.poll_transmit();
            if bytes.is_empty() {
                return Ok(());
            }
            match self.sock.try_write(bytes) {
                Ok(n) => self.conn.transmitted(n, now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn flush_ssh(&mut self) -> std::io::Result<()> {
        let Some(output) = self.output.as_ref() else {
            return Ok(());
        };
        loop {
            let bytes = self.conn.poll_local();
            if bytes.is_empty() {
                return Ok(());
            }
            match output.try_write(bytes) {
                Ok(n) => self.conn.delivered(n, now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn on_event(&mut self, ev: ClientConnEvent) {
        let server = &self.server;
        match ev {
            ClientConnEvent::Accepted => {
                self.say(format!(
                    "{server} accepted the session; connected to its sshd"
                ));
                if let Some(f) = self.on_accepted.take() {
                    f();
                }
            }
            ClientConnEvent::CertInstalled {
                serial,
                ttl_secs,
                renewed,
            } => {
                self.renewal_retrying = false;
                let verb = if renewed { "renewed" } else { "issued" };
                self.say(format!(
                    "client certificate {serial} {verb}, valid for {}",
                    human(ttl_secs)
                ));
            }
            ClientConnEvent::Answered { seq } => {
                self.say(format!("identity challenge {seq} from {server}: answered"));
            }
            ClientConnEvent::Acked { seq } => self.say(format!("identity proof {seq} accepted")),
            ClientConnEvent::Rekeyed { count } => {
                self.say(format!("tunnel keys replaced (rekey {count})"));
            }
            // Said before the key is asked, so a blinking key is never a
            // surprise (and never a touch meant for something else).
            ClientConnEvent::SigningRenewal { this_hour } if self.touch => eprintln!(
                "ztssh: {server} renews the session's certificate: touch your security key \
                 (renewal signature {this_hour} this hour, at most {MAX_RENEWAL_SIGNATURES_PER_HOUR})"
            ),
            ClientConnEvent::SigningRenewal { this_hour } => self.say(format!(
                "{server} renews the session's certificate: asking your key to sign \
                 (renewal signature {this_hour} this hour, at most {MAX_RENEWAL_SIGNATURES_PER_HOUR})"
            )),
            ClientConnEvent::RenewalFailed { error, left_secs } => {
                self.renewal_retrying = true;
                // Retries come every few seconds: say it once a minute.
                let due = self
                    .renewal_warned
                    .is_none_or(|at| at.elapsed() >= RENEWAL_WARNING_EVERY);
                if due {
                    self.renewal_warned = Some(Instant::now());
                    eprintln!(
                        "ztssh: warning: certificate renewal failed: {error}; the session ends in {} \
                         unless a retry succeeds. {}",
                        human(left_secs),
                        renewal_hint(self.identity.is_agent())
                    );
                }
            }
            ClientConnEvent::PeerClosed
            | ClientConnEvent::Ended(_)
            | ClientConnEvent::Control(_) => {}
        }
    }

    /// Ends the session: after a normal end the last bytes still reach
    /// ssh; when ssh is gone the proxy gets a CLOSE. Each within a grace.
    /// A token fetched for a renewal or a refresh: sent to the proxy, and
    /// the next refresh timed from it; or why there is none, said once
    /// and kept for the end it leads to.
    fn token_fetched(&mut self, got: TokenFetched) {
        match got {
            Ok(token) => {
                self.token_error = None;
                if self.conn.send_token(&token, now()) {
                    self.say(format!("sent {} a fresh workload token", self.server));
                }
                self.token_refresh_at =
                    crate::token::refresh_after(&token, crate::token::unix_now())
                        .map(|d| tokio::time::Instant::now() + d);
                self.token_last = Some((Instant::now(), token));
            }
            Err(e) => {
                eprintln!(
                    "ztssh: no fresh workload token for {}: {e}; the session ends at its next \
                     renewal or when the token in force expires",
                    self.server
                );
                self.token_error = Some(e);
            }
        }
    }

    async fn finish(&mut self, exit: Exit) -> Result<(), Error> {
        match exit {
            Exit::Ended(None) => {
                let _ = tokio::time::timeout(FLUSH_GRACE, self.drain_to_ssh()).await;
                Ok(())
            }
            Exit::Ended(Some(ClientEnd::Lost)) if self.sock_error.is_some() => Err(Error::Io {
                server: self.server.clone(),
                detail: self.sock_error.take().unwrap_or_default(),
            }),
            Exit::Ended(Some(end)) => {
                let e = self.with_renewal_hint(explain::ended(&self.server, end));
                Err(match (e, self.token_error.take()) {
                    (
                        Error::Terminated {
                            server,
                            code,
                            reason,
                        },
                        Some(why),
                    ) => Error::Terminated {
                        server,
                        code,
                        reason: format!("{reason}. The token source said: {why}"),
                    },
                    (e, _) => e,
                })
            }
            Exit::SshGone => {
                self.conn.handle_local_eof(now());
                let _ = tokio::time::timeout(FLUSH_GRACE, self.drain_to_proxy()).await;
                Ok(())
            }
        }
    }

    async fn drain_to_ssh(&mut self) {
        while let Some(output) = self.output.as_ref() {
            if self.conn.poll_local().is_empty() || output.writable().await.is_err() {
                return;
            }
            if self.flush_ssh().is_err() {
                return;
            }
        }
    }

    async fn drain_to_proxy(&mut self) {
        while !self.conn.poll_transmit().is_empty() {
            if self.sock.writable().await.is_err() || self.flush_proxy().is_err() {
                return;
            }
        }
    }
}

async fn readable(p: Option<&SshInput>) -> std::io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(p: Option<&SshOutput>) -> std::io::Result<()> {
    match p {
        Some(p) => p.writable().await,
        None => std::future::pending().await,
    }
}

async fn wait_cert(r: &mut Option<CertReading>) -> Result<FoundCert, tokio::task::JoinError> {
    match r {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn wait_token(
    t: &mut Option<tokio::task::JoinHandle<TokenFetched>>,
) -> Result<TokenFetched, tokio::task::JoinError> {
    match t {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn wait_signing(
    s: &mut Option<Signing>,
) -> Result<(Result<Vec<u8>, String>, Option<(TokenFetched, bool)>), tokio::task::JoinError> {
    match s {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
