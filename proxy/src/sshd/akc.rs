//! The socket sshd's `AuthorizedKeysCommand` asks (through
//! `ztssh-proxy authorized-keys`), and that command's client side.
//!
//! Request, one line: `ACCOUNT [KEYTYPE BASE64] [client=ADDR:PORT]\n`
//! (sshd's `%u %t %k`, and the client end of `%C` where sshd has it).
//! Answer: authorized_keys lines (see [`crate::sshd::zsk::answer`]), then the
//! socket closes. Only root and the configured `AuthorizedKeysCommandUser`
//! may ask (`SO_PEERCRED`); anyone else is closed on without a byte read.
//!
//! The socket has tasks of its own, each bounded in time and bytes and in
//! number, and takes the live-session list's lock only to copy it: it never
//! delays a session, a challenge or a kill.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::{info, warn};

use crate::config::AuthorizedKeysConfig;
use crate::ops::clock;
use crate::sshd::zsk;
use crate::state::Shared;

/// Most bytes in a request (an account name and one public key).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Most bytes in an answer the command passes on.
pub const MAX_ANSWER: u64 = 4 * 1024 * 1024;
/// How long a request or an answer may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests served at once.
const MAX_CONCURRENT: usize = 32;

/// Binds the socket (before privileges are dropped). A stale socket file
/// left by a previous run is replaced; a live one is an error.
pub fn bind(cfg: &AuthorizedKeysConfig) -> anyhow::Result<UnixListener> {
    let path = &cfg.socket;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket; remove it", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by another running proxy", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    restrict(path, cfg);
    Ok(listener)
}

/// Only the command's user (and root) can connect: as root the socket is
/// given to that user with mode 0600; otherwise (systemd's `DynamicUser`)
/// it is mode 0666 and `SO_PEERCRED` alone decides.
fn restrict(path: &Path, cfg: &AuthorizedKeysConfig) {
    let uid = cfg.command_user.uid;
    let mode = if nix::unistd::geteuid().is_root()
        && nix::unistd::chown(path, Some(uid), Some(cfg.command_user.gid)).is_ok()
    {
        0o600
    } else {
        0o666
    };
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        warn!(event = "authorized_keys_socket", error = %e, "cannot set the socket's mode");
    }
    info!(event = "authorized_keys_socket", path = %path.display(), mode = format!("{mode:o}"), command_user = %cfg.command_user.name,
        "answering sshd's AuthorizedKeysCommand");
}

/// Serves requests until the runtime ends.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(event = "accept_failed", error = %e, "authorized-keys socket accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared
                .metrics
                .authorized_keys
                .with_label_values(&["busy"])
                .inc();
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _slot = slot;
            handle(stream, &shared).await;
        });
    }
}

async fn handle(mut stream: UnixStream, shared: &Shared) {
    let count = |result: &str| {
        shared
            .metrics
            .authorized_keys
            .with_label_values(&[result])
            .inc()
    };
    let Some(akc) = shared.cfg.authorized_keys.as_ref() else {
        return;
    };
    let allowed = akc.command_user.uid.as_raw();
    match stream.peer_cred() {
        Ok(c) if c.uid() == 0 || c.uid() == allowed => {}
        Ok(c) => {
            count("forbidden");
            warn!(
                event = "authorized_keys_forbidden",
                uid = c.uid(),
                pid = c.pid().unwrap_or(0),
                "a process that is neither root nor {} asked the authorized-keys socket; closed",
                akc.command_user.name
            );
            return;
        }
        Err(e) => {
            count("forbidden");
            warn!(event = "authorized_keys_forbidden", error = %e, "cannot tell who asked the authorized-keys socket; closed");
            return;
        }
    }
    let request = match timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(why)) => {
            count("bad_request");
            warn!(event = "authorized_keys_bad_request", "{why}");
            return;
        }
        Err(_) => {
            count("bad_request");
            warn!(
                event = "authorized_keys_bad_request",
                "no request within {IO_TIMEOUT:?}"
            );
            return;
        }
    };
    let text = respond(shared, &request);
    count(if text.is_empty() {
        "refused"
    } else {
        "answered"
    });
    let _ = timeout(IO_TIMEOUT, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads and parses one request line.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
    }
    parse_request(&buf)
}

/// One question from sshd's command.
#[derive(Debug)]
pub struct Request {
    /// `%u`.
    pub account: String,
    /// `%t %k`, if given.
    pub key: Option<ssh_key::public::KeyData>,
    /// The client end of `%C`, if given.
    pub client: Option<std::net::SocketAddr>,
}

/// `ACCOUNT [KEYTYPE BASE64] [client=ADDR:PORT]` up to the first newline.
pub fn parse_request(buf: &[u8]) -> Result<Request, String> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_owned())?;
    let (line, client) = match line.rsplit_once(" client=") {
        Some((rest, c)) => (
            rest,
            Some(
                c.parse()
                    .map_err(|_| format!("client={c:?} is not ADDR:PORT"))?,
            ),
        ),
        None => (line, None),
    };
    let mut words = line.split(' ');
    let account = words.next().unwrap_or_default();
    crate::trust::authz::check_account(account)?;
    let key = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some(t), Some(k), None) => Some(
            ssh_key::PublicKey::from_openssh(&format!("{t} {k}"))
                .map_err(|e| format!("offered key is not an OpenSSH public key ({e})"))?
                .key_data()
                .clone(),
        ),
        _ => return Err("expected: ACCOUNT [KEYTYPE BASE64] [client=ADDR:PORT]".into()),
    };
    Ok(Request {
        account: account.to_owned(),
        key,
        client,
    })
}

/// The answer's text; logs every refusal with its session.
fn respond(shared: &Shared, request: &Request) -> String {
    let (account, offered) = (request.account.as_str(), request.key.as_ref());
    let authority = shared.authority.borrow().clone();
    let sessions = shared.live_keys.snapshot();
    let answer = zsk::answer(
        &sessions,
        account,
        offered,
        request.client,
        &authority,
        clock::unix(),
    );
    if answer.lines.is_empty() {
        if answer.refused.is_empty() {
            warn!(
                event = "authorized_keys_refused",
                account,
                session = "none",
                "sshd asked for account {account}: no live session {}holds {}",
                request
                    .client
                    .map_or_else(String::new, |c| format!("connected from {c} ")),
                if offered.is_some() {
                    "the offered key"
                } else {
                    "a key"
                }
            );
        }
        for (session, principal, reason) in &answer.refused {
            warn!(event = "authorized_keys_refused", account, session = %session, principal = %principal,
                "sshd asked for account {account}: refused: {reason}");
        }
    } else {
        info!(
            event = "authorized_keys",
            account,
            keys = answer.lines.len(),
            "sshd asked for account {account}: answered"
        );
    }
    let mut text = answer.lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// The client end of sshd's `%C` (sshd ≥ 9.4), as one argument. A real
/// OpenSSH 10.0 (tests/sshd10.sh) sends the server's end first: `SADDR
/// SPORT CADDR CPORT` (sshd_config(5) lists the client's first; the
/// order the binary sends is what counts). Read in the other order, no
/// session ever matches and every key login fails.
pub fn parse_connection(text: &str) -> Result<std::net::SocketAddr, String> {
    let words: Vec<&str> = text.split(' ').collect();
    let [server, server_port, addr, port] = words[..] else {
        return Err(format!(
            "{text:?} is not sshd's %C (server address, server port, client address, client port)"
        ));
    };
    let parse = |a: &str, p: &str| -> Result<std::net::SocketAddr, String> {
        let ip: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let port: u16 = p.parse().map_err(|_| format!("{p:?} is not a port"))?;
        Ok(std::net::SocketAddr::new(ip, port))
    };
    parse(server, server_port)?;
    parse(addr, port)
}

/// The command's side: asks the socket and copies the answer to `out`.
/// Any failure leaves sshd with no key (it then refuses the login).
/// `client`: the client end of sshd's `%C`, when sshd passes it.
pub fn ask(
    socket: &Path,
    account: &str,
    key: Option<(&str, &str)>,
    client: Option<std::net::SocketAddr>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the proxy at {} (is ztssh-proxy running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = match key {
        Some((t, k)) => format!("{account} {t} {k}"),
        None => account.to_owned(),
    };
    if let Some(c) = client {
        request.push_str(&format!(" client={c}"));
    }
    request.push('\n');
    s.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer)?;
    out.write_all(&answer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO";

    #[test]
    fn requests_are_parsed_strictly() {
        assert_eq!(parse_request(b"alice\n").expect("bare").account, "alice");
        let r = parse_request(format!("deploy {KEY}\n").as_bytes()).expect("with key");
        assert_eq!(r.account, "deploy");
        assert!(r.key.is_some() && r.client.is_none());
        let r = parse_request(format!("deploy {KEY} client=127.77.0.5:40005\n").as_bytes())
            .expect("with %C");
        assert!(r.key.is_some());
        assert_eq!(r.client, Some("127.77.0.5:40005".parse().expect("addr")));
        let r = parse_request(b"deploy client=[::1]:22\n").expect("no key, %C");
        assert_eq!((r.account.as_str(), r.key.is_none()), ("deploy", true));
        for bad in [
            &b"\n"[..],
            b"-oops\n",
            b"al ice x y\n",
            b"alice ssh-ed25519 garbage\n",
            b"\xff\n",
            b"alice client=127.0.0.1\n",
            b"alice client=nowhere:22\n",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_c_gives_the_client_end() {
        assert_eq!(
            parse_connection("127.0.0.1 22 127.77.0.5 40005"),
            Ok("127.77.0.5:40005".parse().expect("addr"))
        );
        assert_eq!(
            parse_connection("::1 22 ::1 5000"),
            Ok("[::1]:5000".parse().expect("addr"))
        );
        for bad in [
            "",
            "127.77.0.5 40005",
            "127.77.0.5 40005 127.0.0.1",
            "127.77.0.5 40005 127.0.0.1 22 x",
            "127.77.0.5  40005 127.0.0.1 22",
            "host 40005 127.0.0.1 22",
            "127.0.0.1 22 127.77.0.5 70000",
            "127.0.0.1 ssh 127.77.0.5 40005",
        ] {
            assert!(parse_connection(bad).is_err(), "{bad:?}");
        }
    }
}
