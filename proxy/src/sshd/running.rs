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

/// What `/proc/PID/cmdline` says of the running sshd's arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Cmdline {
    /// NUL-separated arguments, exactly as it was started.
    Argv(Vec<String>),
    /// The listener's process title, split at every single space: OpenSSH
    /// writes `PROGRAM: ARGS [listener] N of A-B startups` over its
    /// arguments, joined by one space each, so an argument holding a space
    /// cannot be told from two. Read as words, checked as such.
    Title(Vec<String>),
}

/// Reads a `/proc/PID/cmdline`. A title must end exactly as OpenSSH's
/// listener title does (` [listener] N of A-B startups`; one cut short
/// does not), and one line of text that is not such a title (a session
/// process's `sshd: alice [priv]`, say) is refused.
pub fn argv(cmdline: &[u8]) -> Result<Cmdline, String> {
    let text = String::from_utf8_lossy(cmdline);
    let text = text.trim_end_matches('\0');
    if text.contains('\0') {
        return Ok(Cmdline::Argv(text.split('\0').map(str::to_owned).collect()));
    }
    if let Some(args) = listener_args(text) {
        // OpenSSH escapes the title (strnvis: a TAB as `\t`, a newline as
        // `\n`, a backslash as `\\`, other bytes in octal), and sshd splits
        // an `-o` at the real TAB or newline: a title with any escape
        // cannot be read as sshd read its arguments.
        if args.contains('\\') {
            return Err(format!(
                "its process title {text:?} holds an escaped character (a TAB, newline, backslash \
                 or other byte in an argument), so the options it was started with cannot be read \
                 as sshd reads them; start sshd without it"
            ));
        }
        return Ok(Cmdline::Title(args.split(' ').map(str::to_owned).collect()));
    }
    if text.contains(' ') {
        return Err(format!(
            "its process title {text:?} is not sshd's listener title (`PROGRAM: ARGS [listener] N of \
             A-B startups`, whole), so the options it was started with cannot be read: is the pid \
             that of the listener (not a session process, not a stale pid file)?"
        ));
    }
    // One argument: the program alone, no options.
    Ok(Cmdline::Argv(vec![text.to_owned()]))
}

/// The `ARGS` of a whole listener title, `PROGRAM: ARGS [listener] N of
/// A-B startups` (PROGRAM is the name sshd was started as).
fn listener_args(title: &str) -> Option<&str> {
    let (program, rest) = title.split_once(": ")?;
    if program.is_empty() || program.contains(' ') {
        return None;
    }
    let (args, tail) = rest.rsplit_once(" [listener] ")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let counts = tail.strip_suffix(" startups")?;
    let (now, range) = counts.split_once(" of ")?;
    let (low, high) = range.split_once('-')?;
    (digits(now) && digits(low) && digits(high)).then_some(args)
}

/// Refuses a title in which any word could set a guarded keyword however
/// the words are grouped into arguments: every word as the value of an
/// `-o` before it, and every word starting with `-` as an `-o` joined to
/// its value after any flags. A title holds every argument's text, so a
/// guarded `-o` cannot hide in it, only be found where it is not (refused
/// all the same: a value that reads as a guarded keyword).
fn check_title(words: &[String], guarded: &[String]) -> Result<(), String> {
    // `-f PATH -D` may be `-f "PATH -D"`: a config file of that name (one
    // sshd could have read, holding anything) makes the title ambiguous.
    for (i, w) in words.iter().enumerate().skip(1) {
        let Some(flags) = w.strip_prefix('-') else {
            continue;
        };
        // The -f in a cluster of flags (getopt: no-argument flags, then
        // one that takes the rest of the word or the next one).
        let mut at = None;
        for (j, c) in flags.char_indices() {
            if c == 'f' {
                at = Some(j);
            }
            if !"46DGQRTdeiqrtV".contains(c) {
                break;
            }
        }
        let Some(at) = at else {
            continue;
        };
        let (first, from) = match &flags[at + 1..] {
            "" => (words.get(i + 1).cloned().unwrap_or_default(), i + 2),
            joined => (joined.to_owned(), i + 1),
        };
        let mut path = first;
        for next in words.iter().skip(from) {
            path.push(' ');
            path.push_str(next);
            if std::fs::symlink_metadata(&path).is_ok() {
                return Err(format!(
                    "the config path given with -f may be {path:?} (a file of that name exists), \
                     not the one read from its title"
                ));
            }
        }
    }
    for w in words.iter().skip(1) {
        defaults::check_o(w, guarded)?;
        if let Some(flags) = w.strip_prefix('-') {
            for (j, c) in flags.char_indices() {
                if c == 'o' {
                    defaults::check_o(&flags[j + 1..], guarded)?;
                }
            }
        }
    }
    Ok(())
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
    let read = argv(&cmdline).map_err(|e| format!("the running sshd (pid {pid}): {e}"))?;
    let words = match &read {
        Cmdline::Argv(w) => w,
        Cmdline::Title(w) => {
            let all = w.join(" ");
            check_title(w, guarded).map_err(|e| {
                format!(
                    "the running sshd (pid {pid}) was started with `{all}`, and a word of it could \
                     undo the drop-in: {e}. Start it without that option (its unit, SSHD_OPTS or \
                     the command that started it)"
                )
            })?;
            w
        }
    };
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

    fn guarded() -> Vec<String> {
        ["passwordauthentication", "authorizedkeysfile"]
            .map(str::to_owned)
            .to_vec()
    }

    fn words(c: Cmdline) -> Vec<String> {
        match c {
            Cmdline::Argv(w) | Cmdline::Title(w) => w,
        }
    }

    #[test]
    fn a_command_line_or_sshds_process_title_gives_every_argument() {
        assert_eq!(
            argv(b"/usr/sbin/sshd\0-D\0-o\0PasswordAuthentication=yes\0").unwrap(),
            Cmdline::Argv(
                ["/usr/sbin/sshd", "-D", "-o", "PasswordAuthentication=yes"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
        assert_eq!(
            argv(b"/usr/sbin/sshd\0").unwrap(),
            Cmdline::Argv(vec!["/usr/sbin/sshd".to_owned()])
        );
        // An empty argument is one: `-b ""` does not swallow the next.
        assert_eq!(
            words(argv(b"/usr/sbin/sshd\0-b\0\0-oPasswordAuthentication=yes\0").unwrap()),
            ["/usr/sbin/sshd", "-b", "", "-oPasswordAuthentication=yes"]
        );
        // The listener's title, under any program name it was started as.
        for title in [
            &b"sshd: /usr/sbin/sshd -D -o AuthorizedKeysFile=/x [listener] 0 of 10-100 startups\0\0"[..],
            b"sshd-second: /tmp/sshd-second -D -o AuthorizedKeysFile=/x [listener] 3 of 10-100 startups",
        ] {
            let w = words(argv(title).unwrap());
            assert_eq!(&w[1..], ["-D", "-o", "AuthorizedKeysFile=/x"]);
        }
        // Not a whole listener title: refused.
        for bad in [
            &b"sshd: /usr/sbin/sshd -D -o PasswordAuthen"[..],
            b"sshd: /usr/sbin/sshd -E /l [listener] x -o PasswordAuthenticat",
            b"sshd-session: alice [priv]",
            b"sshd: alice [priv]",
            // Review (att23, fourth round): a TAB in an -o, escaped.
            b"sshd: /usr/sbin/sshd -E /l -E -oPasswordAuthentication\\tyes [listener] 0 of 10-100 startups",
        ] {
            assert!(argv(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Review (att23, fifth round): `-f "/cfg -D"` read as `-f /cfg -D`.
    /// A file named as a longer reading of the -f value makes the title
    /// ambiguous, and it is refused.
    #[test]
    fn an_f_value_that_may_hold_a_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::write(&cfg, "").unwrap();
        let title =
            |f: &str| format!("sshd: /usr/sbin/sshd -f {f} -D -e [listener] 0 of 10-100 startups",);
        let plain = words(argv(title(&cfg.display().to_string()).as_bytes()).unwrap());
        assert_eq!(check_title(&plain, &guarded()), Ok(()));
        let evil = dir.path().join("cfg -D");
        std::fs::write(&evil, "PasswordAuthentication yes\n").unwrap();
        let e = check_title(&plain, &guarded()).expect_err("ambiguous -f");
        assert!(e.contains("cfg -D"), "{e}");
        // Joined to its flag as well.
        let joined = words(
            argv(
                format!(
                    "sshd: /usr/sbin/sshd -Df{} -D [listener] 0 of 10-100 startups",
                    cfg.display()
                )
                .as_bytes(),
            )
            .unwrap(),
        );
        assert!(check_title(&joined, &guarded()).is_err());
    }

    /// Review (att23, third round): split at spaces, a value ending in a
    /// flag (`-E "/log -E"`) swallowed the `-o` after it. Every word is
    /// now checked as a possible `-o` value and as an `-o` with its value
    /// joined, however the words group.
    #[test]
    fn a_guarded_keyword_anywhere_in_a_title_is_refused() {
        for title in [
            "sshd: /usr/sbin/sshd -f cfg -E /tmp/log -E -oPasswordAuthentication=yes [listener] 0 of 10-100 startups",
            "sshd: /usr/sbin/sshd -o PasswordAuthentication yes [listener] 0 of 10-100 startups",
            "sshd: /usr/sbin/sshd -4DoAuthorizedKeysFile=/x [listener] 0 of 10-100 startups",
            "sshd: /usr/sbin/sshd -h /k -b  PasswordAuthentication=yes [listener] 0 of 10-100 startups",
        ] {
            let w = words(argv(title.as_bytes()).unwrap());
            assert!(check_title(&w, &guarded()).is_err(), "{title}");
        }
        let w = words(
            argv(b"sshd: /usr/sbin/sshd -D -f /etc/ssh/sshd_config -o LogLevel=VERBOSE [listener] 0 of 10-100 startups")
                .unwrap(),
        );
        assert_eq!(check_title(&w, &guarded()), Ok(()));
    }
}
