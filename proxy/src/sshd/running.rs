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
pub(crate) fn pid(reload: &Reload) -> Result<i32, String> {
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

/// sshd's built-in config file, which it reads when started without `-f`.
const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

/// Options whose value is a path: one holding a space reads as several
/// words in a title.
const PATH_FLAGS: &str = "fEhc";

/// Refuses a title in which any word could set a guarded keyword however
/// the words are grouped into arguments: every word as the value of an
/// `-o` before it, and every word starting with `-` as an `-o` joined to
/// its value after any flags. A title holds every argument's text, so a
/// guarded `-o` cannot hide in it, only be found where it is not (refused
/// all the same: a value that reads as a guarded keyword).
fn check_title(words: &[String], guarded: &[String]) -> Result<(), String> {
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

/// Refuses a title whose words may group into other arguments than the
/// ones read: a value that starts with `-` (`-E "/log -E" -f/x` reads as
/// `-E /log -E -f/x`, where sshd saw `-f /x`), and a path value that a file
/// names together with the words after it (`-f "/cfg -D"`, or `-E "/log
/// -f/cfg"`: sshd writes that log, so the file exists). `opts` are
/// [`defaults::parse`]'s reading of `words[1..]`.
fn check_grouping(words: &[String], opts: &[defaults::Opt]) -> Result<(), String> {
    // argv[0] too: `"/x/sshd -E/y"` (a script by that name beside a hard
    // link /x/sshd to the binary) reads as the binary and an -E.
    if let Some(path) = longer_path(words, 0) {
        return Err(format!(
            "the program it was started as may be {path:?} (a file of that name exists), not the \
             one read from its title"
        ));
    }
    for o in opts {
        let Some(value) = &o.value else {
            continue;
        };
        // `value_word` counts from words[1].
        let at = o.value_word + 1;
        if o.separate && value.starts_with('-') {
            return Err(format!(
                "the value {value:?} of -{} may be an option sshd read (an argument holding a \
                 space cannot be told from two in the title)",
                o.flag
            ));
        }
        if PATH_FLAGS.contains(o.flag)
            && let Some(path) = longer_path(words, at)
        {
            return Err(format!(
                "the path given with -{} may be {path:?} (a file of that name exists), not the one \
                 read from its title",
                o.flag
            ));
        }
    }
    Ok(())
}

/// A file named by the path at `words[at]` (its value part, after a
/// joined flag) and one or more words after it, if one exists: the path
/// may hold those spaces.
fn longer_path(words: &[String], at: usize) -> Option<String> {
    let mut path = words.get(at)?.clone();
    if at > 0
        && let Some(flags) = path.strip_prefix('-')
        && let Some(i) = flags.find(|c: char| PATH_FLAGS.contains(c))
    {
        path = flags[i + 1..].to_owned();
    }
    for next in words.iter().skip(at + 1) {
        path.push(' ');
        path.push_str(next);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Some(path);
        }
    }
    None
}

/// Refuses a title that may have been cut short: OpenSSH writes it over
/// the memory of the arguments and the environment, so a small
/// environment cuts a long title, and what is cut cannot be read (the end
/// of the title may even be a value that looks like its real end). From
/// `/proc/PID/stat`: the area runs from `arg_start` to `env_end`, and a
/// title cut to fit it fills all of it but three bytes.
fn check_not_cut(pid: i32, title_len: usize) -> Result<(), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (in parentheses, which may hold
    // anything) start at field 3; arg_start is field 48, env_end 51.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(arg_start), Some(env_end)) = (field(48), field(51)) else {
        return Err(format!(
            "/proc/{pid}/stat does not give the process's argument and environment area, so \
             whether its title was cut short cannot be told"
        ));
    };
    let area = env_end.saturating_sub(arg_start);
    // OpenSSH's title area is `area - 2` bytes and keeps one for its NUL:
    // a title it had to cut is `area - 3` bytes long.
    if (title_len as u64).saturating_add(3) >= area {
        return Err(format!(
            "its process title fills all {area} bytes sshd had for it (its arguments and \
             environment), so it may have been cut short and what was cut cannot be read; start \
             sshd with a fuller environment or fewer arguments"
        ));
    }
    Ok(())
}

/// Refuses an argv[0] that is not the running binary: sshd runs its
/// argv[0] again for every connection and on a reload, so another program
/// there decides what sshd runs with.
fn check_program(pid: i32, argv0: &str, exe: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let same = Path::new(argv0).is_absolute()
        && match (
            std::fs::metadata(argv0),
            std::fs::metadata(format!("/proc/{pid}/exe")),
        ) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
    if same {
        return Ok(());
    }
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(format!(
            "its binary {} was replaced since it started (an upgrade?); restart sshd, then run \
             sshd-setup again",
            exe.display()
        ));
    }
    let cut = if argv0.contains(' ') {
        " (if that is sshd's process title cut short by a small environment, start sshd with a \
         fuller one)"
    } else {
        ""
    };
    Err(format!(
        "it was started as {argv0:?}, which is not its binary {} by an absolute path{cut}: sshd \
         runs that name again for every connection and on a reload. Start it by the binary's \
         absolute path",
        exe.display()
    ))
}

/// Refuses an sshd that sees other files than this process: another
/// mount namespace or root directory (a bind mount over its config, a
/// unit's `BindReadOnlyPaths=` or `RootDirectory=`, a container) would
/// make every file sshd-setup reads and writes another than sshd's.
fn check_same_files(pid: i32) -> Result<(), String> {
    let link = |p: String| std::fs::read_link(&p).map_err(|e| format!("cannot read {p}: {e}"));
    for (ns, what) in [("mnt", "files"), ("net", "addresses")] {
        let (theirs, ours) = (
            link(format!("/proc/{pid}/ns/{ns}"))?,
            link(format!("/proc/self/ns/{ns}"))?,
        );
        if theirs != ours {
            return Err(format!(
                "it runs in another {ns} namespace ({}, this process {}), where its {what} may be \
                 others; run sshd-setup in its namespaces (nsenter --target {pid} --mount --net)",
                theirs.display(),
                ours.display()
            ));
        }
    }
    // The mount at the root, by its id: a chroot whose root is a bind
    // mount of / itself has the same device and inode, not the same mount.
    let root_mount = |p: String| -> Result<Option<String>, String> {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read {p}: {e}"))?;
        Ok(text
            .lines()
            .rfind(|l| l.split_whitespace().nth(4) == Some("/"))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned))
    };
    if root_mount(format!("/proc/{pid}/mountinfo"))? != root_mount("/proc/self/mountinfo".into())? {
        return Err(format!(
            "its root is another mount than this process's (/proc/{pid}/mountinfo); run \
             sshd-setup in sshd's own root, not in a chroot of its own"
        ));
    }
    // The same directory as this process's root, by device and inode: the
    // link's text is "/" for any root seen from inside a chroot.
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| {
        std::fs::metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| format!("cannot read {p}: {e}"))
    };
    if id(&format!("/proc/{pid}/root/"))? != id("/")? {
        return Err(format!(
            "it runs under another root directory than this process ({}); run sshd-setup in \
             sshd's own root, not in a chroot or container of its own",
            link(format!("/proc/{pid}/root"))?.display()
        ));
    }
    Ok(())
}

/// Refuses an sshd whose environment loads other code into it
/// (`LD_PRELOAD`, `LD_AUDIT`): such code may read another config than the
/// one checked, and sshd keeps its environment when it re-executes itself
/// (review, eleventh round). (`LD_LIBRARY_PATH` only moves where libraries
/// are looked for; what it would take is a planted library, as with
/// `/etc/ld.so.preload`: root's own doing, out of sight of this check.)
fn check_no_preload(pid: i32) -> Result<(), String> {
    let path = format!("/proc/{pid}/environ");
    let env = ztssh_keyfile::read_regular(Path::new(&path), MAX_CMDLINE)
        .or_else(|_| std::fs::read(&path).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    for var in env.split(|b| *b == 0) {
        for name in ["LD_PRELOAD=", "LD_AUDIT="] {
            if var.starts_with(name.as_bytes()) && var.len() > name.len() {
                return Err(format!(
                    "its environment sets {}, which loads code sshd-setup cannot see into it; \
                     start sshd without it",
                    name.trim_end_matches('=')
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a config file other than `sshd_config`: sshd reads the last
/// `-f`, or [`DEFAULT_CONFIG`] without one; a relative path is refused
/// (sshd changes to `/` before a reload reads it again).
fn check_config(opts: &[defaults::Opt], sshd_config: &Path) -> Result<(), String> {
    let given: Vec<&str> = opts
        .iter()
        .filter(|o| o.flag == 'f')
        .filter_map(|o| o.value.as_deref())
        .collect();
    let read = given.last().copied().unwrap_or(DEFAULT_CONFIG);
    if let Some(rel) = given.iter().find(|f| !Path::new(f).is_absolute()) {
        return Err(format!(
            "-f {rel} is a relative path, which sshd reads from / after a reload; start it with \
             an absolute -f"
        ));
    }
    if !sshd_config.is_absolute() || Path::new(read) != sshd_config {
        return Err(format!(
            "it reads {read}{}, not {}; pass --sshd-config {read}",
            if given.is_empty() {
                " (no -f: sshd's built-in default)"
            } else {
                ""
            },
            sshd_config.display()
        ));
    }
    Ok(())
}

/// The options of the running sshd (beyond its program name), checked:
/// the process must be an sshd started by its binary's absolute path, its
/// title (if it has one) must be whole and its words read as one grouping
/// only, it must read `sshd_config`, and its options pass
/// [`defaults::options`] (no guarded `-o`).
pub fn sshd_opts(
    reload: &Reload,
    sshd_bin: &Path,
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
    // The very binary sshd-setup checks the config with (`--sshd`), not
    // any program named sshd (review, tenth round: a root program that
    // borrows a real sshd's listening socket).
    {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        if id(Path::new(&format!("/proc/{pid}/exe"))).is_none()
            || id(Path::new(&format!("/proc/{pid}/exe"))) != id(sshd_bin)
        {
            return Err(format!(
                "process {pid} ({}) runs {}, not {} (--sshd): sshd-setup checks the config with \
                 that binary, so it must be the one that runs. Pass --sshd {} if that is this \
                 host's sshd",
                reload.describe(),
                exe.display(),
                sshd_bin.display(),
                exe.display()
            ));
        }
    }
    let cmdline =
        ztssh_keyfile::read_regular(Path::new(&format!("/proc/{pid}/cmdline")), MAX_CMDLINE)
            .or_else(|_| std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot read the running sshd's command line (pid {pid}): {e}"))?;
    let read = argv(&cmdline).map_err(|e| format!("the running sshd (pid {pid}): {e}"))?;
    let (words, title) = match &read {
        Cmdline::Argv(w) => (w, false),
        Cmdline::Title(w) => (w, true),
    };
    let all = words.join(" ");
    let refuse = |e: String| {
        format!(
            "the running sshd (pid {pid}) was started with `{all}`: {e}. sshd-setup must know \
             every option sshd runs with; start it without that (its unit, SSHD_OPTS or the \
             command that started it)"
        )
    };
    check_same_files(pid).map_err(refuse)?;
    check_no_preload(pid).map_err(refuse)?;
    let argv0 = words.first().map_or("", String::as_str);
    check_program(pid, argv0, &exe).map_err(refuse)?;
    let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
    let opts = defaults::parse(&args).map_err(refuse)?;
    if title {
        let text = String::from_utf8_lossy(&cmdline);
        check_not_cut(pid, text.trim_end_matches('\0').len()).map_err(refuse)?;
        check_grouping(words, &opts).map_err(refuse)?;
        check_title(words, guarded).map_err(refuse)?;
    }
    check_config(&opts, sshd_config).map_err(refuse)?;
    defaults::options(&args, sshd_config, guarded).map_err(refuse)
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

    /// A title's words, and their reading as options.
    fn read(title: &str) -> (Vec<String>, Vec<defaults::Opt>) {
        let w = words(argv(title.as_bytes()).unwrap());
        let args: Vec<&str> = w.iter().skip(1).map(String::as_str).collect();
        let opts = defaults::parse(&args).unwrap();
        (w, opts)
    }

    /// Review (att23, fifth round): `-f "/cfg -D"` read as `-f /cfg -D`.
    /// A file named as a longer reading of a path value makes the title
    /// ambiguous, and it is refused.
    #[test]
    fn a_path_value_that_may_hold_a_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::write(&cfg, "").unwrap();
        let title =
            |f: &str| format!("sshd: /usr/sbin/sshd -f {f} -D -e [listener] 0 of 10-100 startups",);
        let (w, opts) = read(&title(&cfg.display().to_string()));
        assert_eq!(check_grouping(&w, &opts), Ok(()));
        let evil = dir.path().join("cfg -D");
        std::fs::write(&evil, "PasswordAuthentication yes\n").unwrap();
        let e = check_grouping(&w, &opts).expect_err("ambiguous -f");
        assert!(e.contains("cfg -D"), "{e}");
        // Joined to its flag as well.
        let (w, opts) = read(&format!(
            "sshd: /usr/sbin/sshd -Df{} -D [listener] 0 of 10-100 startups",
            cfg.display()
        ));
        assert!(check_grouping(&w, &opts).is_err());
        // A log file whose name holds the words after it (`-E "/log -D"`;
        // sshd writes that log, so the file exists).
        let log = dir.path().join("log");
        std::fs::write(dir.path().join("log -D"), "").unwrap();
        let (w, opts) = read(&format!(
            "sshd: /usr/sbin/sshd -E {} -D -f{} [listener] 0 of 10-100 startups",
            log.display(),
            cfg.display()
        ));
        let e = check_grouping(&w, &opts).expect_err("ambiguous -E");
        assert!(e.contains("-E"), "{e}");
    }

    /// Review (att23, sixth round): `-E "/l -E" -f/evil` reads as `-E /l
    /// -E -f/evil`, the -f taken for the second -E's value. A value that
    /// starts with `-` is refused in a title (not in an exact command line).
    #[test]
    fn a_value_that_starts_with_a_dash_is_refused_in_a_title() {
        let (w, opts) = read(
            "sshd: /usr/sbin/sshd -D -f /cfg -E /l -E -f/evil [listener] 0 of 10-100 startups",
        );
        let e = check_grouping(&w, &opts).expect_err("-E -f/evil");
        assert!(e.contains("-f/evil"), "{e}");
        let (w, opts) =
            read("sshd: /usr/sbin/sshd -D -f /cfg -E /l [listener] 0 of 10-100 startups");
        assert_eq!(check_grouping(&w, &opts), Ok(()));
    }

    /// Review (att23, sixth round): no -f (sshd reads its built-in
    /// default, not the file sshd-setup was given), a relative -f, and the
    /// last of several -f.
    #[test]
    fn the_config_sshd_reads_must_be_the_one_given() {
        let opts = |a: &[&str]| defaults::parse(a).unwrap();
        let cfg = Path::new("/etc/ztssh-test/sshd_config");
        assert_eq!(
            check_config(&opts(&["-D", "-f", "/etc/ztssh-test/sshd_config"]), cfg),
            Ok(())
        );
        let e = check_config(&opts(&["-D"]), cfg).expect_err("default");
        assert!(
            e.contains("/etc/ssh/sshd_config") && e.contains("built-in"),
            "{e}"
        );
        assert_eq!(
            check_config(&opts(&["-D"]), Path::new(DEFAULT_CONFIG)),
            Ok(())
        );
        assert!(check_config(&opts(&["-f", "/etc/ztssh-test/sshd_config", "-f/x"]), cfg).is_err());
        assert!(check_config(&opts(&["-f/x", "-f", "/etc/ztssh-test/sshd_config"]), cfg).is_ok());
        let e = check_config(&opts(&["-f", "s/cfg"]), Path::new("s/cfg")).expect_err("relative");
        assert!(e.contains("relative"), "{e}");
        assert!(check_config(&opts(&[]), Path::new("etc/ssh/sshd_config")).is_err());
    }

    /// Review (att23, sixth round): argv[0] a script, not the binary that
    /// runs; and a title cut short by a small environment.
    #[test]
    fn argv0_must_be_the_binary_and_a_title_whole() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let me = exe.display().to_string();
        assert_eq!(check_program(pid, &me, &exe), Ok(()));
        for other in ["/bin/sh", "sshd", "", "/nonexistent/sshd"] {
            assert!(check_program(pid, other, &exe).is_err(), "{other}");
        }
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let area = usize::try_from(f[51 - 3] - f[48 - 3]).unwrap();
        // Review (att23, seventh round): a title OpenSSH cut is exactly
        // area - 3 bytes long.
        assert_eq!(check_not_cut(pid, area - 4), Ok(()));
        for full in [area - 3, area - 2] {
            let e = check_not_cut(pid, full).expect_err("full");
            assert!(e.contains("cut short"), "{e}");
        }
        // This process sees its own files, and (in the test runner) loads
        // nothing through its environment.
        assert_eq!(check_same_files(pid), Ok(()));
        if std::env::var_os("LD_PRELOAD").is_none() && std::env::var_os("LD_LIBRARY_PATH").is_none()
        {
            assert_eq!(check_no_preload(pid), Ok(()));
        }
        // A program name holding a space: a file named by the first word
        // and the next is what sshd runs again.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("sshd");
        std::fs::write(&link, "").unwrap();
        std::fs::write(dir.path().join("sshd -E"), "").unwrap();
        let title = format!(
            "sshd: {} -E/log -D [listener] 0 of 10-100 startups",
            link.display()
        );
        let (w, opts) = read(&title);
        assert_eq!(check_grouping(&w, &opts), Ok(()));
        let dir2 = dir.path().join("sshd -E");
        std::fs::remove_file(&dir2).unwrap();
        std::fs::create_dir(&dir2).unwrap();
        std::fs::write(dir2.join("log"), "").unwrap();
        let e = check_grouping(&w, &opts).expect_err("argv0 with a space");
        assert!(e.contains("program"), "{e}");
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
