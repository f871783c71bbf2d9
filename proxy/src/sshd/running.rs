//! The options the running sshd was started with, read from the kernel
//! (`/proc/PID/cmdline`): what systemd, an init script or an operator
//! actually passed, after every drop-in, environment file, specifier and
//! escape. sshd's reload (SIGHUP) re-executes it with the same options, so
//! these are the ones the drop-in must survive. They are checked as
//! `SSHD_OPTS` are ([`crate::sshd::defaults`]): a guarded `-o` is refused.
//! The unit files ([`crate::sshd::unit`]) are still read, for what a
//! restart would start it with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::sshd::defaults;
use crate::sshd::reload::{Reload, read_pid, run_bounded};

/// The most a command line may hold (Linux's own limit is far above any
/// sshd's).
const MAX_CMDLINE: u64 = 256 * 1024;

/// The running sshd's pid: from its pid file, or from systemd.
fn pid(reload: &Reload) -> Result<i32, String> {
    match reload {
        Reload::PidFile(path) => read_pid(path),
        Reload::Service(name) => {
            let out = run_bounded(
                Command::new("systemctl").args(["show", "--property=MainPID", "--value", name]),
                Duration::from_secs(20),
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse::<i32>()
                .ok()
                .filter(|p| *p > 1)
                .ok_or_else(|| {
                    format!(
                        "systemd names no running process for {name} (MainPID {:?})",
                        text.trim()
                    )
                })
        }
    }
}

/// The words of a `/proc/PID/cmdline` (NUL-separated arguments).
pub fn words(cmdline: &[u8]) -> Vec<String> {
    cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// The options of the running sshd (beyond its program name), checked:
/// the process must be an sshd, and its options pass
/// [`defaults::options`] (`-f` naming `sshd_config`, no guarded `-o`).
pub fn sshd_opts(
    reload: &Reload,
    sshd_config: &Path,
    guarded: &[String],
) -> Result<Vec<String>, String> {
    let pid = pid(reload)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("cannot see process {pid} ({}): {e}", reload.describe()))?;
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.starts_with("sshd") {
        return Err(format!(
            "process {pid} ({}) runs {}, not sshd: a stale pid file? Pass --pid-file or --service for \
             the sshd that serves this host",
            reload.describe(),
            exe.display()
        ));
    }
    let cmdline =
        ztssh_keyfile::read_regular(Path::new(&format!("/proc/{pid}/cmdline")), MAX_CMDLINE)
            .or_else(|_| std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot read the running sshd's command line (pid {pid}): {e}"))?;
    let words = words(&cmdline);
    let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
    defaults::options(&args, sshd_config, guarded).map_err(|e| {
        format!(
            "the running sshd (pid {pid}) was started with `{}`: {e}. sshd-setup must know every \
             option sshd runs with; start it without that option (its unit, SSHD_OPTS or the \
             command that started it)",
            args.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_splits_on_nul() {
        assert_eq!(
            words(b"/usr/sbin/sshd\0-D\0-o\0PasswordAuthentication=yes\0"),
            ["/usr/sbin/sshd", "-D", "-o", "PasswordAuthentication=yes"]
        );
        assert_eq!(words(b""), Vec::<String>::new());
    }
}
