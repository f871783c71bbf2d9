//! What the running sshd itself offers: after sshd-setup reloads it, the
//! real `ssh` client asks it, as a user who cannot log in, which
//! authentication methods may continue, and anything but `publickey` is
//! refused. This reads sshd's behaviour, not its files or its command
//! line: whatever the reading of its options missed (an option hidden in
//! its process title, a program that adds options on every re-execution,
//! another config file), a password or keyboard-interactive login it
//! still allows shows here. (A standing `authorized_keys` file does not:
//! that needs a key it trusts; the drop-in's `sshd -T` checks and the
//! reading of its options cover it.)

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::sshd::reload::run_bounded;

/// The user the probe asks as first: no account of that name is expected,
/// and sshd answers an unknown user with the methods it offers everyone.
pub const PROBE_USER: &str = "ztssh-sshd-setup-probe";

/// The users the probe asks as: anyone, and root (the account a `Match
/// User` block that turns passwords back on would be written for first).
pub const PROBE_USERS: [&str; 2] = [PROBE_USER, "root"];

/// How long the probe may take.
const LIMIT: Duration = Duration::from_secs(20);

/// Who the probe runs as and where it connects from: with the nftables
/// guard loaded, only the proxy's user may reach sshd, from the upstream
/// source range.
#[derive(Clone, Copy, Debug)]
pub struct As {
    /// The uid and gid to run `ssh` as (`None`: this process's).
    pub ids: Option<(u32, u32)>,
    /// The source address to bind (`None`: the kernel's choice).
    pub source: Option<IpAddr>,
}

/// Asks sshd at `upstream` which methods it offers; `Ok` with what was
/// checked when it offers `publickey` and nothing outside `allowed` (the
/// drop-in's `AuthenticationMethods`: `publickey`, and any method
/// `--allow-auth-method` keeps).
pub fn check(upstream: SocketAddr, who: As, allowed: &[&str]) -> Result<String, String> {
    let mut seen = Vec::new();
    for user in PROBE_USERS {
        let offered = offered(upstream, who, user)?;
        let extra: Vec<&str> = offered
            .iter()
            .map(String::as_str)
            .filter(|m| !allowed.contains(m))
            .collect();
        if !extra.is_empty() || !offered.iter().any(|m| m == "publickey") {
            return Err(format!(
                "sshd at {upstream} offers {} to {user} (asked by ssh), though its files say {}: \
                 it runs with options sshd-setup did not see (its command line, a program that \
                 starts it, another config file). Find them (ps -o args, its unit, SSHD_OPTS), \
                 start sshd without them, and run sshd-setup again",
                offered.join(","),
                allowed.join(",")
            ));
        }
        seen.push(format!("{user}: {}", offered.join(",")));
    }
    Ok(format!(
        "sshd at {upstream} offers what its files say (asked by ssh as {})",
        seen.join("; ")
    ))
}

/// The methods sshd at `upstream` offers `user` when the client offers none.
pub fn offered(upstream: SocketAddr, who: As, user: &str) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-T", "-n"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "PasswordAuthentication=no"])
        .args(["-o", "KbdInteractiveAuthentication=no"])
        .args(["-o", "HostbasedAuthentication=no"])
        .args(["-o", "GSSAPIAuthentication=no"])
        .args(["-p", &upstream.port().to_string()]);
    if let Some(src) = who.source {
        cmd.args(["-b", &src.to_string()]);
    }
    cmd.arg(format!("{user}@{}", upstream.ip()))
        .arg("true")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent");
    if let Some((uid, gid)) = who.ids {
        // std drops root's supplementary groups with the uid.
        cmd.uid(uid).gid(gid);
    }
    let out = run_bounded(&mut cmd, LIMIT)
        .map_err(|e| format!("cannot ask sshd at {upstream} which methods it offers: ssh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    parse(&stderr).ok_or_else(|| {
        format!(
            "cannot ask sshd at {upstream} which methods it offers: ssh said {:?} (is \
             openssh-client installed?)",
            stderr.trim()
        )
    })
}

/// The methods in ssh's `USER@HOST: Permission denied (M1,M2).`.
fn parse(stderr: &str) -> Option<Vec<String>> {
    let line = stderr.lines().find(|l| l.contains("Permission denied ("))?;
    let inner = line.split_once("Permission denied (")?.1;
    let inner = inner
        .strip_suffix(").")
        .or_else(|| inner.strip_suffix(')'))?;
    let methods: Vec<String> = inner
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    (!methods.is_empty()).then_some(methods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_names_the_methods_it_was_denied() {
        assert_eq!(
            parse("ztssh-sshd-setup-probe@127.0.0.1: Permission denied (publickey).\r\n"),
            Some(vec!["publickey".to_owned()])
        );
        assert_eq!(
            parse(
                "Warning: x\nu@h: Permission denied (publickey,password,keyboard-interactive).\n"
            ),
            Some(
                ["publickey", "password", "keyboard-interactive"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
        for bad in [
            "",
            "ssh: connect to host 127.0.0.1 port 22: Connection refused",
            "u@h: Permission denied ().",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
