//! `SSHD_OPTS` from Debian's `/etc/default/ssh`: the options its unit
//! (`ExecStart=/usr/sbin/sshd -D $SSHD_OPTS`) and init script pass to
//! sshd. `-o` options there override every config file, so `sshd-setup`
//! reads them, refuses any that sets a keyword the drop-in decides, and
//! passes the rest to its `sshd -t` and `sshd -T` checks, which then see
//! what the running sshd sees. What it cannot read exactly is refused.

use std::path::Path;

/// The most the file may hold.
const MAX_FILE: u64 = 64 * 1024;

/// The options `sshd-setup` passes to `sshd -t`/`-T`, from `SSHD_OPTS`
/// in `file` (none when the file does not exist or does not set it).
/// Refused: a value it cannot read as the unit and `sh` would both read
/// it, an option that changes what sshd does rather than its config, a
/// `-f` naming another config than `sshd_config`, and a `-o` setting any
/// of `guarded` (lower case).
pub fn sshd_opts(
    file: &Path,
    sshd_config: &Path,
    guarded: &[String],
) -> Result<Vec<String>, String> {
    let at = |e: String| {
        format!(
            "{}: {e}. sshd-setup must know every option sshd starts with (the unit passes \
             $SSHD_OPTS to sshd); fix it, or pass --sshd-defaults for the file your unit reads",
            file.display()
        )
    };
    if std::fs::symlink_metadata(file).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Vec::new());
    }
    let bytes = ztssh_keyfile::read_regular(file, MAX_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| at("not UTF-8 text".into()))?;
    let value = value(&text).map_err(at)?;
    let words: Vec<&str> = value.split_whitespace().collect();
    options(&words, sshd_config, guarded).map_err(at)
}

/// The value of the last `SSHD_OPTS=` line.
fn value(text: &str) -> Result<String, String> {
    let mut value = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(format!("line {}: a continued line is not read here", i + 1));
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some(v) = line.strip_prefix("SSHD_OPTS=") else {
            if line.contains("SSHD_OPTS") {
                return Err(format!(
                    "line {}: {line:?} is not a plain SSHD_OPTS=... line",
                    i + 1
                ));
            }
            continue;
        };
        let v = v.trim();
        let inner = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| v.strip_prefix(*a).and_then(|v| v.strip_suffix(*b)))
            .unwrap_or(v);
        if inner.contains(['"', '\'', '\\', '$', '`', ';', '|', '&', '(', ')', '<', '>']) {
            return Err(format!(
                "line {}: SSHD_OPTS holds quotes, escapes or shell syntax, which the unit and sh \
                 read differently; write plain options separated by spaces",
                i + 1
            ));
        }
        value = inner.to_owned();
    }
    Ok(value)
}

/// One option as sshd's getopt reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opt {
    /// The option's letter.
    pub flag: char,
    /// Its value, for an option that takes one.
    pub value: Option<String>,
    /// The index in `words` of the word that holds the value (the option's
    /// own word when the value is joined to it, `-oX`).
    pub value_word: usize,
    /// Whether the value was the next word (`-o X`), not joined.
    pub separate: bool,
}

/// The options sshd-setup lets sshd start with: `-4`, `-6`, `-D`, `-d`,
/// `-e`, `-q`, and those with a value (`-o`, `-p`, `-h`, `-c`, `-u`,
/// `-f`, `-E`, `-g`, `-k`, `-b`); sshd's getopt string is
/// `C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV`. Any other option, a word that is
/// not an option, or a last option without its value is refused.
pub(crate) fn parse(words: &[&str]) -> Result<Vec<Opt>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        let at = i;
        i += 1;
        let Some(flags) = word.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err(format!("{word:?} is not an option"));
        };
        for (j, flag) in flags.char_indices() {
            match flag {
                '4' | '6' | 'D' | 'd' | 'e' | 'q' => out.push(Opt {
                    flag,
                    value: None,
                    value_word: at,
                    separate: false,
                }),
                'o' | 'p' | 'h' | 'c' | 'u' | 'f' | 'E' | 'g' | 'k' | 'b' => {
                    let rest = &flags[j + flag.len_utf8()..];
                    let (value, value_word, separate) = if rest.is_empty() {
                        let next = words
                            .get(i)
                            .ok_or_else(|| format!("-{flag} needs a value"))?;
                        i += 1;
                        ((*next).to_owned(), i - 1, true)
                    } else {
                        (rest.to_owned(), at, false)
                    };
                    out.push(Opt {
                        flag,
                        value: Some(value),
                        value_word,
                        separate,
                    });
                    break;
                }
                other => {
                    return Err(format!(
                        "-{other} is not an option sshd-setup knows to be safe to start sshd \
                         with; remove it"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// sshd's options ([`parse`]), checked: no `-o` setting a `guarded`
/// keyword, no `-f` naming another config than `sshd_config`. Returns the
/// ones `sshd -t`/`-T` must see too (`-4`, `-6`, `-o`, `-p`, `-h`, `-c`,
/// `-u`).
pub(crate) fn options(
    words: &[&str],
    sshd_config: &Path,
    guarded: &[String],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for opt in parse(words).map_err(|e| format!("SSHD_OPTS: {e}"))? {
        let flag = opt.flag;
        match (flag, &opt.value) {
            ('4' | '6', _) => out.push(format!("-{flag}")),
            (_, None) => {}
            ('o', Some(arg)) => check_o(arg, guarded)?,
            ('f', Some(arg)) if Path::new(arg) != sshd_config => {
                return Err(format!(
                    "SSHD_OPTS: -f {arg} makes sshd read another config than {}; pass \
                     --sshd-config {arg}",
                    sshd_config.display()
                ));
            }
            _ => {}
        }
        if let (true, Some(arg)) = (matches!(flag, 'o' | 'p' | 'h' | 'c' | 'u'), opt.value) {
            out.push(format!("-{flag}"));
            out.push(arg);
        }
    }
    Ok(out)
}

/// Refuses `-o OPTION` when it sets a guarded keyword, with the keyword
/// read as sshd reads a config line ([`crate::sshd::include::split`]:
/// `-o=PasswordAuthentication=yes` sets PasswordAuthentication too).
pub(crate) fn check_o(option: &str, guarded: &[String]) -> Result<(), String> {
    let Some((keyword, _)) =
        crate::sshd::include::split(option).map_err(|e| format!("SSHD_OPTS: -o {option}: {e}"))?
    else {
        return Ok(());
    };
    if guarded.contains(&keyword) {
        return Err(format!(
            "SSHD_OPTS sets -o {option}, which overrides every config file and would undo the \
             drop-in; remove it (zero standing keys needs sshd_config.d/00-ztssh.conf to decide {keyword})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> Vec<String> {
        [
            "passwordauthentication",
            "authorizedkeysfile",
            "listenaddress",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn opts(text: &str) -> Result<Vec<String>, String> {
        let v = value(text)?;
        let words: Vec<&str> = v.split_whitespace().collect();
        options(&words, Path::new("/etc/ssh/sshd_config"), &guarded())
    }

    #[test]
    fn debians_file_and_harmless_options_pass() {
        assert_eq!(
            opts("# Default settings\nSSHD_OPTS=\n").expect("ok"),
            Vec::<String>::new()
        );
        assert_eq!(opts("").expect("ok"), Vec::<String>::new());
        assert_eq!(
            opts("SSHD_OPTS=\"-4 -o LogLevel=VERBOSE -oMaxStartups=20 -D\"\n").expect("ok"),
            ["-4", "-o", "LogLevel=VERBOSE", "-o", "MaxStartups=20"]
        );
        assert_eq!(opts("SSHD_OPTS='-p 2222'\n").expect("ok"), ["-p", "2222"]);
        assert!(
            opts("SSHD_OPTS=-f /etc/ssh/sshd_config\n")
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn guarded_keywords_and_unreadable_values_are_refused() {
        for text in [
            "SSHD_OPTS=\"-o PasswordAuthentication=yes\"",
            "SSHD_OPTS=\"-oPasswordAuthentication=yes\"",
            "SSHD_OPTS=\"-4o passwordauthentication=yes\"",
            "SSHD_OPTS=-o\nSSHD_OPTS=\"-o AuthorizedKeysFile=.ssh/authorized_keys\"",
            "export SSHD_OPTS=\"-o ListenAddress=0.0.0.0\"",
            // sshd reads -o as a config line: one `=` before the keyword
            // is skipped (`sshd -o=PasswordAuthentication=yes -T` shows
            // yes), and the keyword's case does not matter.
            "SSHD_OPTS=\"-o=PasswordAuthentication=yes\"",
            "SSHD_OPTS=\"-4o=passwordauthentication=yes\"",
            "SSHD_OPTS=\"-o =PASSWORDAUTHENTICATION=yes\"",
        ] {
            let e = opts(text).expect_err(text);
            assert!(e.contains("overrides every config file"), "{text}: {e}");
        }
        for text in [
            "SSHD_OPTS=\"-o 'PasswordAuthentication yes'\"",
            "SSHD_OPTS=\"$EXTRA\"",
            "SSHD_OPTS=\"-o \\\nPasswordAuthentication=yes\"",
            "SSHD_OPTS = -o PasswordAuthentication=yes",
            "SSHD_OPTS=\"-f /tmp/other\"",
            "SSHD_OPTS=\"-T\"",
            "SSHD_OPTS=\"-o\"",
            "SSHD_OPTS=\"PasswordAuthentication=yes\"",
        ] {
            assert!(opts(text).is_err(), "{text}");
        }
    }
}
