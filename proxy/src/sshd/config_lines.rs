//! `ztssh-proxy sshd-config`: the sshd_config lines zero standing keys
//! needs, for the sshd version installed; and, for `sshd-setup`, whether
//! an sshd_config includes a file, and a diff of a change.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Config, SSHD_MAX_STARTUPS};
use crate::sshd::include;

/// An OpenSSH version, major and minor.
pub type Version = (u32, u32);

/// `%C` in `AuthorizedKeysCommand` (client and server address and port).
pub const PERCENT_C: Version = (9, 4);
/// `PerSourcePenalties` and `PerSourcePenaltyExemptList`.
pub const PENALTIES: Version = (9, 8);
/// `KbdInteractiveAuthentication` (before: `ChallengeResponseAuthentication`).
pub const KBD_INTERACTIVE: Version = (8, 7);

/// A login method besides public keys, which the drop-in turns off unless
/// the operator keeps it with `--allow-auth-method`: each lets a login
/// reach an account without a live ztssh session (a password typed
/// through ztssh logs in as any account whose password is known, and one
/// typed straight to sshd needs no ztssh at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum AuthMethod {
    /// `password`: `PasswordAuthentication`.
    Password,
    /// `keyboard-interactive`: `KbdInteractiveAuthentication` (PAM prompts).
    KeyboardInteractive,
    /// `hostbased`: `HostbasedAuthentication`.
    Hostbased,
    /// `gssapi-with-mic`: `GSSAPIAuthentication` (Kerberos).
    GssapiWithMic,
}

impl AuthMethod {
    /// Every method, in the order the lines list them.
    pub const ALL: [Self; 4] = [
        Self::Password,
        Self::KeyboardInteractive,
        Self::Hostbased,
        Self::GssapiWithMic,
    ];

    /// The name in `AuthenticationMethods` (and in `--allow-auth-method`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::KeyboardInteractive => "keyboard-interactive",
            Self::Hostbased => "hostbased",
            Self::GssapiWithMic => "gssapi-with-mic",
        }
    }

    /// The sshd_config keyword that turns it on or off, for sshd `version`.
    pub fn keyword(self, version: Version) -> &'static str {
        match self {
            Self::Password => "PasswordAuthentication",
            Self::KeyboardInteractive if version >= KBD_INTERACTIVE => {
                "KbdInteractiveAuthentication"
            }
            Self::KeyboardInteractive => "ChallengeResponseAuthentication",
            Self::Hostbased => "HostbasedAuthentication",
            Self::GssapiWithMic => "GSSAPIAuthentication",
        }
    }
}

/// The lines that leave public keys (the ztssh-bound ones) as the only way
/// in, but for the methods in `allowed`: `AuthenticationMethods`, each
/// method's keyword, and no user CA or principals file of sshd's own that
/// would accept a certificate without the `AuthorizedKeysCommand`.
pub fn auth_lines(allowed: &[AuthMethod], version: Version) -> Vec<String> {
    let mut methods = vec!["publickey"];
    methods.extend(
        AuthMethod::ALL
            .iter()
            .filter(|m| allowed.contains(m))
            .map(|m| m.name()),
    );
    let mut out = vec![
        "# Public keys only, and only the ones above: no password, keyboard-interactive, host-based or"
            .to_owned(),
        "# GSSAPI login, and no user CA or principals file that sshd would trust on its own:".into(),
    ];
    if methods.len() > 1 {
        out.push(format!(
            "# Allowed by the operator (--allow-auth-method): {}. Such logins need no ztssh session.",
            methods[1..].join(", ")
        ));
    }
    out.push(format!("AuthenticationMethods {}", methods.join(" ")));
    for m in AuthMethod::ALL {
        let on = if allowed.contains(&m) { "yes" } else { "no" };
        out.push(format!("{} {on}", m.keyword(version)));
    }
    out.push("TrustedUserCAKeys none".into());
    out.push("AuthorizedPrincipalsFile none".into());
    out
}

/// The version in text like `OpenSSH_9.2p1 Debian-2, OpenSSL 3.0`.
pub fn parse_version(text: &str) -> Option<Version> {
    let rest = text.split("OpenSSH_").nth(1)?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.trim().parse().ok()?, minor.parse().ok()?))
}

/// Asks `sshd -V` (and, failing that, `ssh -V`) for the version.
pub fn detect_version(sshd: &Path) -> Result<Version, String> {
    let ask = |cmd: &mut Command| {
        cmd.output().ok().and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            parse_version(&text)
        })
    };
    ask(Command::new(sshd).arg("-V"))
        .or_else(|| ask(Command::new("ssh").arg("-V")))
        .ok_or_else(|| {
            format!(
                "cannot tell the OpenSSH version from `{} -V` or `ssh -V`; pass --sshd PATH or --sshd-version X.Y",
                sshd.display()
            )
        })
}

/// sshd runs `AuthorizedKeysCommand` only if the file and every directory
/// above it are owned by root and writable by nobody else.
pub fn check_command_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{}: sshd needs an absolute path", path.display()));
    }
    let mut at = Some(path);
    while let Some(p) = at {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(format!(
                "sshd refuses an AuthorizedKeysCommand unless it and every directory above it are root-owned \
                 and not group- or world-writable, and {} is not (owner uid {}, mode {:o}). Install the binary \
                 somewhere that is, such as /usr/local/sbin/ztssh-proxy, and pass --command PATH",
                p.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
        at = p.parent();
    }
    Ok(())
}

/// The lines, for `command` (the ztssh-proxy binary sshd runs) and sshd
/// `version`. Fails when zero standing keys are not configured.
pub fn lines(
    cfg: &Config,
    config_path: &Path,
    command: &Path,
    version: Version,
    allowed: &[AuthMethod],
) -> Result<String, String> {
    let (Some(akc), Some(range)) = (&cfg.authorized_keys, cfg.upstream_sources) else {
        return Err(format!(
            "{}: zero standing keys are off: set upstream_source_range, authorized_keys_socket and \
             authorized_keys_command_user first (docs/OPERATOR.md)",
            config_path.display()
        ));
    };
    let (major, minor) = version;
    let mut out = vec![
        format!("# Zero standing keys for ztssh (ztssh-proxy sshd-config --config {}), sshd {major}.{minor}.", config_path.display()),
        "# sshd keeps the first value it reads for most keywords: put these where they are read first,".into(),
        "# e.g. /etc/ssh/sshd_config.d/00-ztssh.conf (Debian's sshd_config includes that directory at the top).".into(),
        "# Only the proxy reaches sshd:".into(),
        format!("ListenAddress {}", cfg.upstream),
        format!("# Keys only for live ztssh sessions, each bound to its session's own source address in {range}:"),
        "AuthorizedKeysFile none".into(),
        command_line(command, &akc.socket, version),
        format!("AuthorizedKeysCommandUser {}", akc.command_user.name),
    ];
    out.extend(auth_lines(allowed, version));
    out.extend(trust_lines(cfg, config_path)?);
    out.extend(startup_lines(version));
    if version >= PERCENT_C {
        out.push(
            "# %C (sshd 9.4+): a key is answered only to its own session's connection (address and port)."
                .into(),
        );
    } else {
        out.push(format!(
            "# sshd {major}.{minor} has no %C (9.4+): a key is bound to its session's source address, not yet to its port."
        ));
    }
    if version >= PENALTIES {
        out.extend(penalty_lines(Some(range), &cfg.upstream));
    } else {
        out.push(format!(
            "# sshd {major}.{minor} has no PerSourcePenalties (9.8+): nothing to exempt."
        ));
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// `MaxStartups` for an sshd only the proxy reaches: every connection is
/// a session the proxy has authenticated, which the proxy lets through at
/// most `upstream_max_startups` (default [`SSHD_MAX_STARTUPS`]) at a time,
/// so sshd's own flood guard (10:30:100 by default) would only drop
/// honest logins in a burst. `PerSourceMaxStartups none` on 9.8+.
pub fn startup_lines(version: Version) -> Vec<String> {
    let n = SSHD_MAX_STARTUPS;
    let mut out = vec![
        "# Only sessions the proxy authenticated reach sshd, at most upstream_max_startups logins at a time:"
            .to_owned(),
        format!("MaxStartups {n}:30:{}", n * 2),
    ];
    if version >= PENALTIES {
        out.push("PerSourceMaxStartups none".into());
    }
    out
}

/// sshd 9.8+ penalises a source address that fails authentication
/// (`PerSourcePenalties`, on by default). Every proxied connection comes
/// from the proxy: from one address (`upstream`'s own loopback address)
/// unless `range` (`upstream_source_range`) gives each session its own.
/// Penalties there would fall on other users: on everyone behind
/// 127.0.0.1, or on the next session that gets a recycled address. The
/// proxy penalises the real client addresses itself, before any byte
/// reaches sshd, so the proxy's sources are exempt; `PerSourceNetBlockSize
/// 32:128` keeps a penalty on any other local source to that one address.
pub fn penalty_lines(
    range: Option<ipnet::Ipv4Net>,
    upstream: &std::net::SocketAddr,
) -> Vec<String> {
    let source = match range {
        Some(r) => r.trunc().to_string(),
        None => upstream.ip().to_string(),
    };
    vec![
        "# sshd 9.8+ penalises failing sources (PerSourcePenalties). Every connection from the proxy comes from"
            .into(),
        format!("# {source}: a penalty there would lock other ztssh users out. The proxy penalises the real clients"),
        "# itself, so its sources are exempt, and any other source is penalised alone (one address):".into(),
        format!("PerSourcePenaltyExemptList {source}"),
        "PerSourceNetBlockSize 32:128".into(),
    ]
}

/// The lines for sshd behind the proxy without zero standing keys
/// (`sshd-config --loopback`, docs/OPERATOR.md section 3): listen where the
/// proxy connects only, room for every proxied connection, and, for sshd
/// 9.8+, no penalties on the proxy's sources ([`penalty_lines`]).
pub fn loopback_lines(cfg: &Config, config_path: &Path, version: Version) -> String {
    let (major, minor) = version;
    let mut out = vec![
        format!(
            "# sshd behind ztssh-proxy (ztssh-proxy sshd-config --loopback --config {}), sshd {major}.{minor}.",
            config_path.display()
        ),
        "# Only the proxy reaches sshd:".into(),
        format!("ListenAddress {}", cfg.upstream),
    ];
    out.extend(startup_lines(version));
    if version >= PENALTIES {
        out.extend(penalty_lines(cfg.upstream_sources, &cfg.upstream));
    } else {
        out.push(format!(
            "# sshd {major}.{minor} has no PerSourcePenalties (9.8+): nothing to exempt."
        ));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `HostCertificate` and `RevokedKeys`, when configured. Each file must be
/// there and be what it claims: sshd ignores a host certificate it cannot
/// read (clients then see an uncertified key and refuse it), and refuses
/// every key while its `RevokedKeys` file is missing or unreadable.
fn trust_lines(cfg: &Config, config_path: &Path) -> Result<Vec<String>, String> {
    let s = &cfg.settings;
    let at = |p: &Path, e: String| format!("{}: {}: {e}", config_path.display(), p.display());
    let mut out = Vec::new();
    if !s.sshd_host_certificates.is_empty() {
        out.push("# Host keys certified by the ztssh root (ztssh-ca sign-host):".into());
    }
    for cert in &s.sshd_host_certificates {
        check_host_certificate(cert).map_err(|e| at(cert, e))?;
        out.push(format!("HostCertificate {}", cert.display()));
    }
    if let Some(krl) = &s.sshd_revoked_keys {
        check_krl(krl).map_err(|e| at(krl, e))?;
        out.push(
            "# User keys and host certificates revoked by the ztssh CA (ztssh-ca krl):".into(),
        );
        out.push(format!("RevokedKeys {}", krl.display()));
    }
    Ok(out)
}

/// Largest host certificate read (an RSA-16384 one is about 5 kB).
const MAX_HOST_CERTIFICATE: u64 = 64 * 1024;
/// Largest KRL sshd loads (its `SSHBUF_SIZE_MAX`): with a larger one it
/// refuses every key.
const MAX_KRL: u64 = 128 * 1024 * 1024;
/// What a binary OpenSSH KRL starts with.
const KRL_MAGIC: &[u8] = b"SSHKRL\n\0";

/// The first `n` bytes of the regular file at `path` of at most `max`
/// bytes. As [`ztssh_keyfile::read_regular`], whatever is put in its place
/// cannot hang or exhaust the reader (a FIFO, /dev/zero behind a symlink),
/// and only the head is read.
fn read_head(path: &Path, max: u64, n: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("{} bytes, more than the {max} allowed", meta.len()));
    }
    let mut head = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    Ok(head)
}

/// An absolute path to an OpenSSH host certificate.
fn check_host_certificate(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("sshd needs an absolute path".into());
    }
    let bytes = ztssh_keyfile::read_regular(path, MAX_HOST_CERTIFICATE)
        .map_err(|e| format!("sshd_host_certificates: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| "sshd_host_certificates: not UTF-8 text, so not an OpenSSH certificate (make it with ztssh-ca sign-host)".to_owned())?;
    let cert = ssh_key::Certificate::from_openssh(text.trim()).map_err(|e| {
        format!("sshd_host_certificates: not an OpenSSH certificate ({e}); make it with ztssh-ca sign-host")
    })?;
    if cert.cert_type() != ssh_key::certificate::CertType::Host {
        return Err("sshd_host_certificates: a user certificate, not a host certificate".into());
    }
    Ok(())
}

/// An absolute path to a binary OpenSSH KRL.
fn check_krl(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("sshd needs an absolute path".into());
    }
    let bytes = read_head(path, MAX_KRL, KRL_MAGIC.len()).map_err(|e| {
        format!(
            "sshd_revoked_keys: {e}; sshd refuses every key while it cannot read this file: \
             write it first with ztssh-ca krl"
        )
    })?;
    if !bytes.starts_with(KRL_MAGIC) {
        return Err("sshd_revoked_keys: not an OpenSSH KRL (write it with ztssh-ca krl); sshd would refuse every key".into());
    }
    Ok(())
}

/// The `AuthorizedKeysCommand` line: `%C` added where sshd has it (9.4+).
pub fn command_line(command: &Path, socket: &Path, version: Version) -> String {
    format!(
        "AuthorizedKeysCommand {} authorized-keys --socket {}{} %u %t %k",
        command.display(),
        socket.display(),
        if version >= PERCENT_C {
            " --connection %C"
        } else {
            ""
        }
    )
}

/// The binary sshd should run: `--command`, or this executable.
pub fn command_path(given: Option<PathBuf>) -> Result<PathBuf, String> {
    match given {
        Some(p) => Ok(p),
        None => std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| format!("cannot tell where this binary is ({e}); pass --command PATH")),
    }
}

/// Whether a top-level `Include` (before any `Match`) names `file`, with
/// the lines split and the patterns matched as sshd does
/// ([`crate::sshd::include`]). Relative patterns are under /etc/ssh. A
/// line or pattern that cannot be resolved exactly is an error
/// (`LINE: why`), never taken for "no".
pub fn includes(sshd_config: &str, file: &Path) -> Result<bool, String> {
    for (i, line) in sshd_config.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", i + 1);
        let Some((keyword, args)) = include::split(line).map_err(at)? else {
            continue;
        };
        if keyword == "match" {
            return Ok(false);
        }
        if keyword == "include" {
            for arg in args {
                let pattern = include::absolute(&arg).map_err(at)?;
                if include::glob_matches(&pattern, file).map_err(at)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// A unified-diff-like view of one file's change (one hunk).
/// `before` is the old contents and mode, if the file exists.
pub fn diff(path: &Path, before: Option<(&[u8], u32)>, after: &[u8]) -> String {
    let old_text = before.map(|(b, _)| String::from_utf8_lossy(b).into_owned());
    let new_text = String::from_utf8_lossy(after);
    let old: Vec<&str> = old_text
        .as_deref()
        .map_or(Vec::new(), |t| t.lines().collect());
    let new: Vec<&str> = new_text.lines().collect();
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = match before {
        Some((_, mode)) => format!("--- {} (mode {mode:o})\n", path.display()),
        None => format!("--- {} (does not exist)\n", path.display()),
    };
    out.push_str(&format!("+++ {}\n", path.display()));
    let ctx = 3;
    for l in &old[head.saturating_sub(ctx)..head] {
        out.push_str(&format!(" {l}\n"));
    }
    for l in &old[head..old.len() - tail] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &new[head..new.len() - tail] {
        out.push_str(&format!("+{l}\n"));
    }
    for l in old[old.len() - tail..].iter().take(ctx) {
        out.push_str(&format!(" {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_certificates_and_krls_are_read_bounded_and_only_if_regular() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        // Too large (sparse: only the size is checked before reading).
        let big_cert = d.join("big-cert.pub");
        std::fs::File::create(&big_cert)
            .and_then(|f| f.set_len(MAX_HOST_CERTIFICATE + 1))
            .expect("big cert");
        let e = check_host_certificate(&big_cert).expect_err("too large");
        assert!(e.contains("more than the 65536 allowed"), "{e}");
        let big_krl = d.join("big.krl");
        std::fs::File::create(&big_krl)
            .and_then(|f| f.set_len(MAX_KRL + 1))
            .expect("big krl");
        let e = check_krl(&big_krl).expect_err("too large");
        assert!(e.contains("more than the 134217728 allowed"), "{e}");
        assert!(e.contains("sshd refuses every key"), "{e}");
        // Not regular: a FIFO with no writer (the open does not wait), a
        // device behind a symlink, a directory.
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        let zero = d.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        for p in [&fifo, &zero, &d.to_path_buf()] {
            let e = check_krl(p).expect_err("krl not regular");
            assert!(e.contains("not a regular file"), "{e}");
            let e = check_host_certificate(p).expect_err("cert not regular");
            assert!(e.contains("not a regular file"), "{e}");
        }
        // A KRL is still told by its magic, a missing one still refused.
        let krl = d.join("ok.krl");
        std::fs::write(&krl, b"SSHKRL\n\0rest").expect("krl");
        assert_eq!(check_krl(&krl), Ok(()));
        std::fs::write(&krl, b"SSHKRL").expect("short");
        assert!(
            check_krl(&krl)
                .expect_err("short")
                .contains("not an OpenSSH KRL")
        );
        let e = check_krl(&d.join("missing.krl")).expect_err("missing");
        assert!(e.contains("write it first"), "{e}");
    }

    #[test]
    fn versions_are_read_from_either_banner() {
        assert_eq!(
            parse_version("OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026"),
            Some((9, 2))
        );
        assert_eq!(
            parse_version("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0"),
            Some((9, 2))
        );
        assert_eq!(parse_version("OpenSSH_10.0p2"), Some((10, 0)));
        assert_eq!(parse_version("sshd: illegal option"), None);
        assert!((9, 10) > PENALTIES && (9, 2) < PERCENT_C);
    }

    #[test]
    fn max_startups_matches_the_proxys_default_and_per_source_comes_on_9_8() {
        assert_eq!(
            startup_lines((9, 2))[1..],
            [format!("MaxStartups {SSHD_MAX_STARTUPS}:30:200")]
        );
        assert_eq!(SSHD_MAX_STARTUPS, 100);
        assert_eq!(
            startup_lines((9, 8))[1..],
            ["MaxStartups 100:30:200", "PerSourceMaxStartups none"]
        );
        // The loopback drop-in says the same.
        let drop_in = include_str!("../../../systemd/sshd-loopback.conf");
        assert!(
            drop_in.lines().any(|l| l == "MaxStartups 100:30:200"),
            "{drop_in}"
        );
    }

    #[test]
    fn percent_c_only_where_sshd_has_it() {
        let (cmd, sock) = (
            Path::new("/usr/sbin/ztssh-proxy"),
            Path::new("/run/z/akc.sock"),
        );
        assert_eq!(
            command_line(cmd, sock, (9, 2)),
            "AuthorizedKeysCommand /usr/sbin/ztssh-proxy authorized-keys --socket /run/z/akc.sock %u %t %k"
        );
        assert_eq!(
            command_line(cmd, sock, (9, 3)),
            command_line(cmd, sock, (9, 2))
        );
        for v in [(9, 4), (9, 9), (10, 0)] {
            assert_eq!(
                command_line(cmd, sock, v),
                "AuthorizedKeysCommand /usr/sbin/ztssh-proxy authorized-keys --socket /run/z/akc.sock \
                 --connection %C %u %t %k"
            );
        }
    }

    #[test]
    fn penalties_exempt_the_proxys_sources_only_where_sshd_has_them() {
        let upstream: std::net::SocketAddr = "127.0.0.1:22".parse().expect("addr");
        let one = penalty_lines(None, &upstream);
        assert!(one.contains(&"PerSourcePenaltyExemptList 127.0.0.1".to_owned()));
        assert!(one.contains(&"PerSourceNetBlockSize 32:128".to_owned()));
        let range: ipnet::Ipv4Net = "127.77.1.2/16".parse().expect("range");
        let many = penalty_lines(Some(range), &upstream);
        assert!(many.contains(&"PerSourcePenaltyExemptList 127.77.0.0/16".to_owned()));
        let v6: std::net::SocketAddr = "[::1]:22".parse().expect("addr");
        assert!(penalty_lines(None, &v6).contains(&"PerSourcePenaltyExemptList ::1".to_owned()));
    }

    #[test]
    fn unsafe_command_paths_are_refused() {
        assert!(check_command_path(Path::new("/bin/sh")).is_ok() || !Path::new("/bin/sh").exists());
        let e = check_command_path(Path::new("/tmp")).expect_err("/tmp is world-writable");
        assert!(e.contains("/tmp is not"), "{e}");
        assert!(check_command_path(Path::new("relative/ztssh-proxy")).is_err());
    }

    #[test]
    fn includes_are_found_as_sshd_reads_them() {
        let drop_in = Path::new("/etc/ssh/sshd_config.d/00-ztssh.conf");
        let debian = "# comment\nInclude /etc/ssh/sshd_config.d/*.conf\nPort 22\n";
        let includes = |text: &str, file: &Path| includes(text, file).expect("resolves");
        assert!(includes(debian, drop_in));
        assert!(
            includes("include sshd_config.d/*.conf\n", drop_in),
            "relative to /etc/ssh"
        );
        assert!(includes(
            "Include /x/y \"/etc/ssh/sshd_config.d/0?-*\"\n",
            drop_in
        ));
        assert!(!includes("Include /etc/ssh/sshd_config.d/*.cfg\n", drop_in));
        assert!(
            !includes("Include /etc/ssh/*.conf\n", drop_in),
            "* does not cross /"
        );
        assert!(!includes(
            "#Include /etc/ssh/sshd_config.d/*.conf\n",
            drop_in
        ));
        assert!(
            !includes(
                "Match User bob\nInclude /etc/ssh/sshd_config.d/*.conf\n",
                drop_in
            ),
            "inside a Match block"
        );
        assert!(!includes("", drop_in));
        // Quoted, with `=`, a wildcard directory, a bracket: as sshd reads them.
        assert!(includes(
            "Include \"/etc/ssh/sshd_config.d/*.conf\"\n",
            drop_in
        ));
        assert!(includes("Include=/etc/ssh/sshd_config.d/*.conf\n", drop_in));
        assert!(includes("Include /etc/ssh/*/*.conf\n", drop_in));
        assert!(includes(
            "Include /etc/ssh/sshd_config.d/[0-9][0-9]-*.conf\n",
            drop_in
        ));
        // What cannot be resolved is an error, not a "no".
        for bad in [
            "Include \"/etc/ssh/sshd_config.d/*.conf\n",
            "Include ~/x.conf\n",
            "Include /etc/ssh/sshd_config.d/[[:digit:]]*.conf\n",
        ] {
            assert!(super::includes(bad, drop_in).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_diff_shows_one_hunk_with_context() {
        let new = diff(Path::new("/d/z.conf"), None, b"A 1\nB 2\n");
        assert_eq!(
            new,
            "--- /d/z.conf (does not exist)\n+++ /d/z.conf\n+A 1\n+B 2\n"
        );
        let old = b"one\ntwo\nthree\nfour\nfive\n";
        let changed = diff(
            Path::new("/c"),
            Some((old, 0o644)),
            b"one\ntwo\nthree\nFOUR\nfive\n",
        );
        assert_eq!(
            changed,
            "--- /c (mode 644)\n+++ /c\n one\n two\n three\n-four\n+FOUR\n five\n"
        );
        let prepended = diff(Path::new("/c"), Some((b"x\n", 0o600)), b"Include d/*\nx\n");
        assert_eq!(prepended, "--- /c (mode 600)\n+++ /c\n+Include d/*\n x\n");
    }

    #[test]
    fn only_public_keys_unless_the_operator_keeps_a_method() {
        let lines = auth_lines(&[], (9, 2));
        let directives: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(
            directives,
            [
                "AuthenticationMethods publickey",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "HostbasedAuthentication no",
                "GSSAPIAuthentication no",
                "TrustedUserCAKeys none",
                "AuthorizedPrincipalsFile none",
            ]
        );
        assert!(!lines.iter().any(|l| l.contains("Allowed by the operator")));
        // Kept methods are on, named in AuthenticationMethods (in one
        // order however given) and called out in a comment.
        let kept = auth_lines(&[AuthMethod::GssapiWithMic, AuthMethod::Password], (9, 2));
        assert!(
            kept.contains(&"AuthenticationMethods publickey password gssapi-with-mic".to_owned())
        );
        assert!(kept.contains(&"PasswordAuthentication yes".to_owned()));
        assert!(kept.contains(&"GSSAPIAuthentication yes".to_owned()));
        assert!(kept.contains(&"KbdInteractiveAuthentication no".to_owned()));
        assert!(kept.contains(
            &"# Allowed by the operator (--allow-auth-method): password, gssapi-with-mic. Such logins need no ztssh session."
                .to_owned()
        ));
        // Before 8.7, keyboard-interactive has its older keyword.
        assert!(auth_lines(&[], (8, 6)).contains(&"ChallengeResponseAuthentication no".to_owned()));
    }
}
