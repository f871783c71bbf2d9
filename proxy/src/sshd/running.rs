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

/// The arguments of the running sshd from its `/proc/PID/cmdline`.
///
/// OpenSSH replaces its process title as the listener starts:
/// `sshd: /usr/sbin/sshd -D -o X [listener] 0 of 10-100 startups`, its
/// arguments joined by one space each (an empty one leaves two spaces), in
/// place of the NUL-separated arguments. Both forms are read; the title
/// is split at every single space, so an argument holding a space is read
/// as more words than it is, which can only refuse more (an option that
/// is not one, or a keyword read without its value), never less. A title
/// without its ` [listener]` part (cut short, or not sshd's) cannot be
/// read in full and is refused.
pub fn argv(cmdline: &[u8]) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(cmdline);
    let text = text.trim_end_matches('\0');
    if text.contains('\0') || !text.starts_with("sshd: ") {
        // NUL-separated arguments (one alone: the program, no options).
        return Ok(text.split('\0').map(str::to_owned).collect());
    }
    let title = text
        .strip_prefix("sshd: ")
        .and_then(|t| t.rfind(" [listener]").map(|at| &t[..at]));
    match title {
        Some(args) => Ok(args.split(' ').map(str::to_owned).collect()),
        None => Err(format!(
            "its process title {text:?} is not the listener's (`sshd: ARGS [listener] ...`), or is \
             cut short, so the options it was started with cannot be read in full"
        )),
    }
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
    // sshd's listener runs as root; a process of another user (a stale
    // pid file, a user's own program named sshd) is not it.
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .map_err(|e| format!("cannot see process {pid} ({}): {e}", reload.describe()))?;
    if owner != 0 {
        return Err(format!(
            "process {pid} ({}) runs as uid {owner}, not root: not sshd's listener (a stale pid \
             file?). Pass --pid-file or --service for the sshd that serves this host",
            reload.describe()
        ));
    }
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
    let words = argv(&cmdline).map_err(|e| format!("the running sshd (pid {pid}): {e}"))?;
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_command_line_or_sshds_process_title_gives_every_argument() {
        assert_eq!(
            argv(b"/usr/sbin/sshd\0-D\0-o\0PasswordAuthentication=yes\0").unwrap(),
            ["/usr/sbin/sshd", "-D", "-o", "PasswordAuthentication=yes"]
        );
        assert_eq!(argv(b"/usr/sbin/sshd\0").unwrap(), ["/usr/sbin/sshd"]);
        // An empty argument is one: `-b ""` does not swallow the next.
        assert_eq!(
            argv(b"/usr/sbin/sshd\0-b\0\0-oPasswordAuthentication=yes\0").unwrap(),
            ["/usr/sbin/sshd", "-b", "", "-oPasswordAuthentication=yes"]
        );
        // The listener's title (OpenSSH rewrites its command line).
        let title = b"sshd: /usr/sbin/sshd -D -f /etc/ssh/sshd_config -o AuthorizedKeysFile=/x [listener] 0 of 10-100 startups\0\0\0";
        assert_eq!(
            argv(title).unwrap(),
            [
                "/usr/sbin/sshd",
                "-D",
                "-f",
                "/etc/ssh/sshd_config",
                "-o",
                "AuthorizedKeysFile=/x"
            ]
        );
        assert_eq!(
            argv(b"sshd: /usr/sbin/sshd -b  -oPasswordAuthentication=yes [listener] 0 of 10-100 startups")
                .unwrap(),
            ["/usr/sbin/sshd", "-b", "", "-oPasswordAuthentication=yes"]
        );
        for cut in [
            &b"sshd: /usr/sbin/sshd -D -o PasswordAuthen"[..],
            b"sshd: alice [priv]",
        ] {
            assert!(argv(cut).is_err(), "{:?}", String::from_utf8_lossy(cut));
        }
        // Read at every space, a value holding one is refused, not passed.
        let words = argv(
            b"sshd: /usr/sbin/sshd -o PasswordAuthentication yes [listener] 0 of 10-100 startups",
        )
        .unwrap();
        let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
        assert!(
            defaults::options(
                &args,
                Path::new("/etc/ssh/sshd_config"),
                &["passwordauthentication".to_owned()]
            )
            .is_err()
        );
    }
}
