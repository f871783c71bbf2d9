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
/// under either name apply).
const UNIT_NAMES: [&str; 2] = ["ssh.service", "sshd.service"];
/// Most drop-ins read per directory.
const MAX_DROP_INS: usize = 256;

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
    for dir in dirs {
        for name in UNIT_NAMES {
            let d = dir.join(format!("{name}.d"));
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot list {}: {e}", d.display())),
            };
            let mut confs: Vec<PathBuf> = entries
                .take(MAX_DROP_INS + 1)
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            if confs.len() > MAX_DROP_INS {
                return Err(format!("{}: more than {MAX_DROP_INS} entries", d.display()));
            }
            confs.sort();
            files.extend(confs);
        }
    }
    Ok(files)
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
    for (i, raw) in text.lines().enumerate() {
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
}
