//! Options a systemd unit for sshd passes beside `SSHD_OPTS`: an
//! administrator's `ExecStart=` override or `Environment=SSHD_OPTS=...` in
//! a drop-in (`/etc/systemd/system/ssh.service.d/*.conf`, as
//! `systemctl edit ssh` writes it), a full unit in `/etc/systemd/system`,
//! or another `EnvironmentFile=`. `-o` options there override every
//! config file as `SSHD_OPTS` does, so they are guarded the same way
//! ([`crate::sshd::defaults`]). systemd need not be running: the unit
//! files are read as files. What cannot be read exactly is refused.

use std::path::{Path, PathBuf};

use crate::sshd::defaults;
use crate::sshd::include::read_config;

/// The unit's names on Debian (`sshd.service` is an alias; drop-ins
/// under either name apply; `ssh@.service` is the per-connection unit of
/// socket activation, `ssh.socket`).
const UNIT_NAMES: [&str; 3] = ["ssh.service", "sshd.service", "ssh@.service"];
/// Most drop-ins read per directory.
const MAX_DROP_INS: usize = 256;
/// Most entries of any kind listed per drop-in directory.
const MAX_ENTRIES: usize = 4096;

/// The files that can change how sshd's unit starts sshd, in the order
/// systemd reads them: full units, then each `NAME.d/*.conf` by name.
fn unit_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for dir in dirs {
        for name in UNIT_NAMES {
            let unit = dir.join(name);
            if unit.exists() {
                files.push(unit);
            }
        }
    }
    // `service.d` holds drop-ins for every service (systemd 250+), read
    // before the unit's own.
    for dir in dirs {
        let names =
            std::iter::once("service".to_owned()).chain(UNIT_NAMES.iter().map(|n| (*n).to_owned()));
        for name in names {
            files.extend(drop_ins(&dir.join(format!("{name}.d")))?);
        }
    }
    Ok(files)
}

/// The `*.conf` files of drop-in directory `d`, by name. Every entry is
/// listed before any is left out, so no number of other files can push a
/// `.conf` out of the list; more entries than anyone keeps is refused.
fn drop_ins(d: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", d.display())),
    };
    let mut confs = Vec::new();
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(format!(
                "{}: more than {MAX_ENTRIES} entries; sshd-setup reads every drop-in systemd would",
                d.display()
            ));
        }
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", d.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "conf") {
            confs.push(path);
        }
    }
    if confs.len() > MAX_DROP_INS {
        return Err(format!(
            "{}: more than {MAX_DROP_INS} drop-ins",
            d.display()
        ));
    }
    confs.sort();
    Ok(confs)
}

/// The options sshd's unit passes to sshd beyond `SSHD_OPTS` from
/// `sshd_defaults` (already read), from the unit files under `dirs`
/// (`/etc/systemd/system`, `/run/systemd/system`). A guarded `-o` is
/// refused, as in `SSHD_OPTS`.
pub fn sshd_opts(
    dirs: &[PathBuf],
    sshd_defaults: &Path,
    sshd_config: &Path,
    guarded: &[String],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for file in unit_files(dirs)? {
        let text = read_config(&file)?;
        let at = |line: usize, e: String| {
            format!(
                "{}:{line}: {e}. sshd-setup must know every option sshd starts with (systemd passes \
                 them to sshd, over every config file); fix it, or move the option into sshd_config",
                file.display()
            )
        };
        for (i, line) in service_lines(&text).map_err(|(i, e)| at(i, e))? {
            let (key, value) = line;
            let words = match key.as_str() {
                "ExecStart" => exec_start(&value).map_err(|e| at(i, e))?,
                "Environment" => environment(&value).map_err(|e| at(i, e))?,
                "EnvironmentFile" => {
                    let path = value.strip_prefix('-').unwrap_or(&value);
                    // systemd expands globs and specifiers here: which
                    // files it reads cannot be told by reading the line.
                    if path.contains(['*', '?', '[', '%', '\\', ' ']) {
                        return Err(at(
                            i,
                            format!(
                                "EnvironmentFile={value}: a wildcard, specifier, escape or space is \
                                 not read here; name one file"
                            ),
                        ));
                    }
                    if Path::new(path) != sshd_defaults {
                        out.extend(defaults::sshd_opts(Path::new(path), sshd_config, guarded)?);
                    }
                    continue;
                }
                _ => continue,
            };
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            out.extend(defaults::options(&words, sshd_config, guarded).map_err(|e| at(i, e))?);
        }
    }
    Ok(out)
}

/// `(line number, (key, value))` of each `[Service]` line.
#[allow(clippy::type_complexity)]
fn service_lines(text: &str) -> Result<Vec<(usize, (String, String))>, (usize, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    // As systemd reads a unit: a byte-order mark is skipped, and a line
    // ends at a newline, a carriage return or a NUL.
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n");
    for (i, raw) in text.split(['\n', '\r', '\0']).enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        if line.ends_with('\\') {
            return Err((
                i + 1,
                "a continued line is not read here; write it on one line".to_owned(),
            ));
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        out.push((i + 1, (k.trim().to_owned(), v.trim().to_owned())));
    }
    Ok(out)
}

/// The options of `ExecStart=`: sshd's words after the program, without
/// `$SSHD_OPTS` (read from its file and from `Environment=`). An empty
/// value (a reset) has none.
fn exec_start(value: &str) -> Result<Vec<String>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(['"', '\'', '\\', '%', ';']) {
        return Err(format!(
            "ExecStart={value}: quotes, escapes, specifiers or ';' are not read here; write plain \
             options separated by spaces"
        ));
    }
    let mut words = value.split_whitespace();
    let program = words.next().unwrap_or_default();
    let program = program.strip_prefix('-').unwrap_or(program);
    let is_sshd =
        program.starts_with('/') && Path::new(program).file_name().is_some_and(|n| n == "sshd");
    if !is_sshd {
        return Err(format!(
            "ExecStart runs {program:?}, not sshd by its path (a prefix other than '-', or a \
             wrapper), so sshd-setup cannot tell which options sshd starts with"
        ));
    }
    let mut out = Vec::new();
    for w in words {
        match w {
            "$SSHD_OPTS" | "${SSHD_OPTS}" => {}
            w if w.contains('$') => {
                return Err(format!(
                    "ExecStart passes {w}, which sshd-setup cannot expand; only $SSHD_OPTS is read"
                ));
            }
            w => out.push(w.to_owned()),
        }
    }
    Ok(out)
}

/// `SSHD_OPTS`'s options from an `Environment=` line (none when it does
/// not set it). Read: `Environment="SSHD_OPTS=..."` (one quoted
/// assignment) or `Environment=SSHD_OPTS=WORD`; any other line naming
/// `SSHD_OPTS` is refused.
fn environment(value: &str) -> Result<Vec<String>, String> {
    // systemd unescapes C escapes and expands specifiers in the line, so
    // `\x53SHD_OPTS=...` sets SSHD_OPTS: a line with either is not read.
    if value.contains(['\\', '%']) {
        return Err(format!(
            "Environment={value}: escapes and specifiers are not read here (systemd expands them, \
             and one can spell SSHD_OPTS); write the assignment plainly"
        ));
    }
    if !value.contains("SSHD_OPTS") {
        return Ok(Vec::new());
    }
    let quoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains(['"', '\'', '\\', '$', '%']));
    let plain = Some(value).filter(|v| !v.contains(['"', '\'', '\\', '$', '%', ' ', '\t']));
    match quoted.or(plain).and_then(|v| v.strip_prefix("SSHD_OPTS=")) {
        Some(v) => Ok(v.split_whitespace().map(str::to_owned).collect()),
        None => Err(format!(
            "Environment={value}: SSHD_OPTS is set in a way sshd-setup does not read; write \
             Environment=\"SSHD_OPTS=-o Keyword=value\" on a line of its own"
        )),
    }
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

    /// A systemd directory holding `files` (relative path, text).
    fn opts(files: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        sshd_opts(
            &[dir.path().to_owned(), dir.path().join("missing")],
            Path::new("/etc/default/ssh"),
            Path::new("/etc/ssh/sshd_config"),
            &guarded(),
        )
    }

    #[test]
    fn debians_unit_and_harmless_drop_ins_pass() {
        let debian = "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\n\
                      EnvironmentFile=-/etc/default/ssh\nExecStartPre=/usr/sbin/sshd -t\n\
                      ExecStart=/usr/sbin/sshd -D $SSHD_OPTS\nExecReload=/bin/kill -HUP $MAINPID\n";
        assert!(opts(&[("ssh.service", debian)]).unwrap().is_empty());
        assert!(opts(&[]).unwrap().is_empty());
        assert_eq!(
            opts(&[(
                "ssh.service.d/override.conf",
                "[Service]\nExecStart=\nExecStart=-/usr/sbin/sshd -D -o LogLevel=VERBOSE $SSHD_OPTS\n\
                 Environment=\"SSHD_OPTS=-4\"\n"
            )])
            .unwrap(),
            ["-o", "LogLevel=VERBOSE", "-4"]
        );
        // ExecStart in another section is not sshd's.
        assert!(
            opts(&[(
                "sshd.service.d/x.conf",
                "[Unit]\nExecStart=/usr/sbin/sshd -o PasswordAuthentication=yes\n"
            )])
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn a_guarded_keyword_from_a_drop_in_or_a_full_unit_is_refused() {
        for (path, text) in [
            (
                "ssh.service.d/override.conf",
                "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -o PasswordAuthentication=yes\n",
            ),
            (
                "sshd.service.d/50-x.conf",
                "[Service]\nExecStart=/usr/sbin/sshd -D -oPasswordAuthentication=yes $SSHD_OPTS\n",
            ),
            (
                "ssh.service.d/env.conf",
                "[Service]\nEnvironment=\"SSHD_OPTS=-o AuthorizedKeysFile=.ssh/authorized_keys\"\n",
            ),
            (
                "ssh.service.d/env.conf",
                "[Service]\nEnvironment=SSHD_OPTS=-o=passwordauthentication=yes\n",
            ),
            (
                "ssh.service",
                "[Service]\nExecStart=/usr/sbin/sshd -D -4o PASSWORDAUTHENTICATION=yes\n",
            ),
        ] {
            let e = opts(&[(path, text)]).expect_err(text);
            assert!(
                e.contains("overrides every config file") && e.contains(path),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn what_cannot_be_read_exactly_is_refused() {
        for text in [
            "[Service]\nExecStart=/usr/sbin/sshd -D \\\n  -o PasswordAuthentication=yes\n",
            "[Service]\nExecStart=/usr/sbin/sshd -D -o \"PasswordAuthentication yes\"\n",
            "[Service]\nExecStart=/usr/local/bin/start-sshd\n",
            "[Service]\nExecStart=@/usr/sbin/sshd sshd -D\n",
            "[Service]\nExecStart=/usr/sbin/sshd -D $EXTRA\n",
            "[Service]\nExecStart=/usr/sbin/sshd -D -f /tmp/other\n",
            "[Service]\nEnvironment=\"FOO=1\" \"SSHD_OPTS=-o PasswordAuthentication=yes\"\n",
            "[Service]\nEnvironment=SSHD_OPTS=-o PasswordAuthentication=yes\n",
        ] {
            assert!(opts(&[("ssh.service.d/x.conf", text)]).is_err(), "{text}");
        }
    }

    #[test]
    fn another_environment_file_is_read_as_etc_default_ssh_is() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("sshd-env");
        std::fs::write(&env, "SSHD_OPTS=\"-o PasswordAuthentication=yes\"\n").unwrap();
        let text = format!("[Service]\nEnvironmentFile=-{}\n", env.display());
        let e = opts(&[("ssh.service.d/env.conf", &text)]).expect_err("refused");
        assert!(e.contains("overrides every config file"), "{e}");
    }

    /// Review (att23): each of these hid `-o PasswordAuthentication=yes`
    /// from the reader while systemd would pass it to sshd. Each is now
    /// refused, for the keyword or for what cannot be read exactly.
    #[test]
    fn what_systemd_reads_and_the_old_reader_did_not_is_refused() {
        let evil = "ExecStart=/usr/sbin/sshd -D -o PasswordAuthentication=yes";
        let mut many: Vec<(String, String)> = (0..400)
            .map(|n| {
                (
                    format!("ssh.service.d/junk{n}.conf.disabled"),
                    String::new(),
                )
            })
            .collect();
        many.push((
            "ssh.service.d/zz.conf".into(),
            format!("[Service]\n{evil}\n"),
        ));
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let e = opts(&many).expect_err("a .conf among 400 other entries");
        assert!(e.contains("overrides every config file"), "{e}");
        for (path, text, why) in [
            (
                "ssh.service.d/bom.conf",
                format!("\u{feff}[Service]\n{evil}\n"),
                "overrides every config file",
            ),
            (
                "ssh.service.d/cr.conf",
                format!("[Service]\rDescription=x\r{evil}\r"),
                "overrides every config file",
            ),
            (
                "ssh.service.d/nul.conf",
                format!("[Service]\0{evil}\0"),
                "overrides every config file",
            ),
            (
                "service.d/50-all.conf",
                format!("[Service]\n{evil}\n"),
                "overrides every config file",
            ),
            (
                "ssh@.service.d/x.conf",
                format!("[Service]\n{evil}\n"),
                "overrides every config file",
            ),
            (
                "ssh.service.d/env.conf",
                "[Service]\nEnvironment=\\x53SHD_OPTS=-oPasswordAuthentication=yes\n".into(),
                "escapes and specifiers",
            ),
            (
                "ssh.service.d/glob.conf",
                "[Service]\nEnvironmentFile=-/etc/ssh-env/*\n".into(),
                "wildcard",
            ),
            (
                "ssh.service.d/spec.conf",
                "[Service]\nEnvironmentFile=-/etc/%N.env\n".into(),
                "specifier",
            ),
        ] {
            let e = opts(&[(path, &text)]).expect_err(path);
            assert!(e.contains(why) && e.contains(path), "{path}: {e}");
        }
        // CRLF is one line end, as before.
        assert_eq!(
            opts(&[(
                "ssh.service.d/crlf.conf",
                "[Service]\r\nExecStart=\r\nExecStart=/usr/sbin/sshd -D -4\r\n"
            )])
            .unwrap(),
            ["-4"]
        );
    }
}
