//! `ztssh-proxy sshd-config`: the sshd_config lines zero standing keys
//! needs, for the sshd version installed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;

/// An OpenSSH version, major and minor.
pub type Version = (u32, u32);

/// `%C` in `AuthorizedKeysCommand` (client and server address and port).
pub const PERCENT_C: Version = (9, 4);
/// `PerSourcePenalties` and `PerSourcePenaltyExemptList`.
pub const PENALTIES: Version = (9, 8);

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
        out.push("# PerSourcePenalties fall on one session's address, never on every user behind 127.0.0.1:".into());
        out.push("PerSourceNetBlockSize 32:128".into());
        out.push(
            "# No PerSourcePenaltyExemptList: nothing honest reaches sshd from outside the session range.".into(),
        );
    } else {
        out.push(format!(
            "# sshd {major}.{minor} has no PerSourcePenalties (9.8+): nothing to exempt."
        ));
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unsafe_command_paths_are_refused() {
        assert!(check_command_path(Path::new("/bin/sh")).is_ok() || !Path::new("/bin/sh").exists());
        let e = check_command_path(Path::new("/tmp")).expect_err("/tmp is world-writable");
        assert!(e.contains("/tmp is not"), "{e}");
        assert!(check_command_path(Path::new("relative/ztssh-proxy")).is_err());
    }
}
