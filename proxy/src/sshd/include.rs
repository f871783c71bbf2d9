//! sshd_config lines as sshd itself reads them, for `sshd-setup`'s
//! `Include` and `Match` checks: the keyword and its arguments split with
//! sshd's quoting rules, and `Include` patterns expanded with glob(3)'s
//! semantics (the one matcher here). Anything this cannot resolve exactly
//! is an error, never skipped: a file it failed to read could hold the
//! very `Match` block the check is there to find.

use std::path::{Path, PathBuf};

/// Where sshd resolves a relative `Include` (`SSHDIR`).
pub const SSHDIR: &str = "/etc/ssh";
/// The most files one `Include` pattern may name (sshd has no bound; a
/// pattern naming more is refused rather than partly read).
const MAX_FILES: usize = 4096;

/// A config line's keyword (lower case) and arguments, as sshd splits it
/// (`strdelim` for the keyword, after leading whitespace and at most one
/// `=`; then `argv_split`: double and single quotes, `\` before a quote,
/// `\` or a space, a `#` starting a word ends the line). `Ok(None)`: blank
/// or a comment. A NUL byte is refused.
pub fn split(line: &str) -> Result<Option<(String, Vec<String>)>, String> {
    if line.contains('\0') {
        // sshd keeps a line only up to a NUL and joins the next line to
        // what is left: `Match\0` then `=User x` is `Match User x` to it.
        return Err(
            "a NUL byte: sshd drops the rest of the line and joins the next to it; \
                    remove the NUL"
                .into(),
        );
    }
    let line = line.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
    let line = line.trim_start_matches([' ', '\t', '\r', '\n']);
    // strdelim's first call skips the leading whitespace and one `=` (and
    // the whitespace after it): `=Match all` is a Match line to sshd.
    let line = line
        .strip_prefix('=')
        .map_or(line, |l| l.trim_start_matches([' ', '\t', '\r', '\n']));
    let end = line
        .find([' ', '\t', '\r', '\n', '=', '"'])
        .unwrap_or(line.len());
    let (keyword, mut rest) = line.split_at(end);
    if keyword.is_empty() && rest.starts_with('"') {
        return Err("a quoted keyword, which sshd-setup does not read; unquote it".into());
    }
    if keyword.is_empty() || keyword.starts_with('#') {
        return Ok(None);
    }
    if rest.starts_with('"') {
        return Err(format!(
            "a quote inside the keyword {keyword:?}, which sshd-setup does not read; unquote it"
        ));
    }
    // strdelim: whitespace, at most one `=`, whitespace.
    rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t', '\r', '\n']);
    }
    Ok(Some((keyword.to_ascii_lowercase(), argv_split(rest)?)))
}

/// OpenSSH's `argv_split(s, .., terminate_on_comment = 1)`.
fn argv_split(s: &str) -> Result<Vec<String>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            i += 1;
            continue;
        }
        if b[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while i < b.len() {
            let c = b[i];
            if c == '\\' {
                match b.get(i + 1) {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        arg.push(n);
                        i += 1;
                    }
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return Err(
                "a quote that is never closed (sshd refuses the line: invalid quotes)".into(),
            );
        }
        out.push(arg);
    }
    Ok(out)
}

/// The absolute pattern sshd globs for an `Include` argument: relative
/// ones are under [`SSHDIR`]. A `~` (which sshd passes to glob(3) as it
/// is, without expanding it) is refused.
pub fn absolute(arg: &str) -> Result<String, String> {
    if arg.starts_with('~') {
        return Err(format!(
            "Include {arg:?}: sshd does not expand ~ here (it would look for a file named ~ in its \
             working directory); write the absolute path"
        ));
    }
    if arg.is_empty() {
        return Err("an empty Include pattern".into());
    }
    Ok(if arg.starts_with('/') {
        arg.to_owned()
    } else {
        format!("{SSHDIR}/{arg}")
    })
}

/// One element of a path component's pattern.
#[derive(Debug, PartialEq)]
enum Tok {
    Byte(u8),
    Any,
    Star,
    Set {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// Parses one component of a pattern (glob(3) without `GLOB_NOESCAPE`, in
/// the C locale sshd runs in: bytes). Refused: character classes
/// (`[:alpha:]`, `[=a=]`, `[.a.]`) and a `[` with no `]` (which glob(3)
/// would take literally: ambiguous, so refused).
fn parse(component: &[u8]) -> Result<Vec<Tok>, String> {
    let text = || String::from_utf8_lossy(component).into_owned();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = component.get(i) {
        i += 1;
        match c {
            b'*' => toks.push(Tok::Star),
            b'?' => toks.push(Tok::Any),
            b'\\' => match component.get(i) {
                Some(&n) => {
                    toks.push(Tok::Byte(n));
                    i += 1;
                }
                None => toks.push(Tok::Byte(b'\\')),
            },
            b'[' => {
                let mut negated = false;
                if matches!(component.get(i), Some(b'!' | b'^')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = component.get(i) else {
                        return Err(format!(
                            "{:?}: a [ with no closing ], which sshd-setup does not resolve; \
                             write the pattern without it",
                            text()
                        ));
                    };
                    i += 1;
                    if c == b']' && !first {
                        break;
                    }
                    first = false;
                    if c == b'[' && matches!(component.get(i), Some(b':' | b'=' | b'.')) {
                        return Err(format!(
                            "{:?}: character classes ([:name:], [=c=], [.c.]) are not resolved by \
                             sshd-setup; list the characters instead",
                            text()
                        ));
                    }
                    let lo = if c == b'\\' {
                        let n = component.get(i).copied().unwrap_or(b'\\');
                        i += 1;
                        n
                    } else {
                        c
                    };
                    let mut hi = lo;
                    if component.get(i) == Some(&b'-')
                        && component.get(i + 1).is_some_and(|n| *n != b']')
                    {
                        let mut n = component.get(i + 1).copied().unwrap_or(b'-');
                        i += 2;
                        if n == b'\\' {
                            n = component.get(i).copied().unwrap_or(b'\\');
                            i += 1;
                        }
                        hi = n;
                    }
                    ranges.push((lo, hi));
                }
                toks.push(Tok::Set { negated, ranges });
            }
            _ => toks.push(Tok::Byte(c)),
        }
    }
    Ok(toks)
}

fn is_magic(toks: &[Tok]) -> bool {
    toks.iter().any(|t| !matches!(t, Tok::Byte(_)))
}

fn one(tok: &Tok, c: u8) -> bool {
    match tok {
        Tok::Byte(b) => *b == c,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Set { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
    }
}

/// Whether `name` (one path component) matches: a leading `.` only by a
/// literal `.` (glob(3) without `GLOB_PERIOD`). Iterative, so linear in
/// the input for each star.
fn matches(toks: &[Tok], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && toks.first() != Some(&Tok::Byte(b'.')) {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while n < name.len() {
        match toks.get(p) {
            Some(Tok::Star) => {
                back = Some((p, n));
                p += 1;
            }
            Some(t) if one(t, name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match back {
                Some((bp, bn)) => {
                    p = bp + 1;
                    n = bn + 1;
                    back = Some((bp, bn + 1));
                }
                None => return false,
            },
        }
    }
    toks[p.min(toks.len())..].iter().all(|t| *t == Tok::Star)
}

fn components(pattern: &str) -> Vec<&[u8]> {
    pattern
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

/// Whether the absolute `path` is one the absolute glob `pattern` names.
pub fn glob_matches(pattern: &str, path: &Path) -> Result<bool, String> {
    let path = path.to_string_lossy();
    let (pat, name) = (components(pattern), components(&path));
    if pat.len() != name.len() {
        return Ok(false);
    }
    for (p, n) in pat.iter().zip(&name) {
        if !matches(&parse(p)?, n) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The files an absolute `pattern` names now, sorted as glob(3) sorts
/// them (bytewise, sshd's C locale). A directory that cannot be listed, a
/// wildcard that could name `.` or `..`, or more than [`MAX_FILES`] names
/// is an error.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let mut at = vec![PathBuf::from("/")];
    for comp in components(pattern) {
        let toks = parse(comp)?;
        let mut next = Vec::new();
        if !is_magic(&toks) {
            let literal: Vec<u8> = toks
                .iter()
                .map(|t| match t {
                    Tok::Byte(b) => *b,
                    _ => b'?',
                })
                .collect();
            let literal = String::from_utf8_lossy(&literal).into_owned();
            next.extend(at.iter().map(|d| d.join(&literal)));
        } else {
            if matches(&toks, b".") || matches(&toks, b"..") {
                return Err(format!(
                    "Include {pattern:?}: the wildcard {:?} can name . or .., which sshd-setup does \
                     not resolve; write the pattern so it cannot",
                    String::from_utf8_lossy(comp)
                ));
            }
            for dir in &at {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        return Err(format!(
                            "Include {pattern:?}: cannot list {} ({e}), so cannot tell which files \
                             sshd reads; run sshd-setup as root or fix the directory's permissions",
                            dir.display()
                        ));
                    }
                };
                for entry in entries {
                    let entry = entry
                        .map_err(|e| format!("Include {pattern:?}: {}: {e}", dir.display()))?;
                    use std::os::unix::ffi::OsStrExt;
                    if matches(&toks, entry.file_name().as_bytes()) {
                        next.push(entry.path());
                    }
                }
            }
        }
        if next.len() > MAX_FILES {
            return Err(format!(
                "Include {pattern:?} names more than {MAX_FILES} files"
            ));
        }
        at = next;
    }
    // Existing names only (glob(3) returns no missing ones; a dangling
    // link it returns fails to read later, which is then an error).
    let mut files: Vec<PathBuf> = at
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    use std::os::unix::ffi::OsStrExt;
    files.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Option<(String, Vec<String>)> {
        split(line).expect("splits")
    }

    #[test]
    fn lines_split_as_sshd_splits_them() {
        let w =
            |k: &str, a: &[&str]| Some((k.to_owned(), a.iter().map(|s| (*s).to_owned()).collect()));
        assert_eq!(words("Include /a/*.conf"), w("include", &["/a/*.conf"]));
        assert_eq!(
            words("  include \"/a b/*.conf\" x"),
            w("include", &["/a b/*.conf", "x"])
        );
        assert_eq!(words("Include='/a/x'"), w("include", &["/a/x"]));
        assert_eq!(words("Include = /a/x # comment"), w("include", &["/a/x"]));
        assert_eq!(
            words("Include /a\\ b /c\\d"),
            w("include", &["/a b", "/c\\d"])
        );
        assert_eq!(words("Include /a\"b c\"d"), w("include", &["/ab cd"]));
        assert_eq!(
            words("PasswordAuthentication=yes"),
            w("passwordauthentication", &["yes"])
        );
        assert_eq!(words("# Include /x"), None);
        assert_eq!(words("   "), None);
        assert!(split("Include \"/a").is_err(), "unclosed quote");
        assert!(split("\"Match\" all").is_err(), "quoted keyword");
    }

    #[test]
    fn a_leading_equals_or_a_nul_does_not_hide_a_keyword() {
        // sshd 9.2 (`sshd -T -C user=alice,...`) reads each of these as the
        // keyword after the `=`: strdelim skips whitespace and one `=`
        // before the keyword, too.
        for (line, key) in [
            ("=Match User alice", "match"),
            (" =Match User alice", "match"),
            ("\t= Match User alice", "match"),
            ("=PasswordAuthentication yes", "passwordauthentication"),
            ("=Include /tmp/x.conf", "include"),
        ] {
            assert_eq!(
                split(line).expect(line).map(|(k, _)| k).as_deref(),
                Some(key),
                "{line:?}"
            );
        }
        // ... but not after a second `=` (sshd ignores these lines).
        assert_eq!(words("= =Match all"), None);
        assert_eq!(words("==Match all"), None);
        // sshd keeps a line only up to a NUL and joins the next line to it
        // ("Match\0\n=User alice" is `Match User alice`): refused.
        assert!(split("Match\0").is_err());
        assert!(split("PasswordAuthentication\0 x").is_err());
    }

    #[test]
    fn the_matcher_has_globs_semantics() {
        let m = |p: &str, n: &str| matches(&parse(p.as_bytes()).expect("parses"), n.as_bytes());
        assert!(m("*.conf", "00-ztssh.conf"));
        assert!(m("0?-*.conf", "00-ztssh.conf"));
        assert!(!m("*.conf", "00-ztssh.conf.bak"));
        assert!(!m("*.conf", ".hidden.conf"), "a leading dot only literally");
        assert!(!m("?hidden", ".hidden"));
        assert!(!m("[.]hidden", ".hidden"));
        assert!(m(".h*", ".hidden"));
        assert!(m("[0-9]*.conf", "5x.conf"));
        assert!(!m("[0-9]*.conf", "x5.conf"));
        assert!(m("[!0-9]*", "x5"));
        assert!(m("[^0-9]*", "x5"));
        assert!(!m("[!0-9]*", "5x"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b", "ac"));
        assert!(m("*", "x"));
        assert!(parse(b"[0-9").is_err());
        assert!(parse(b"[[:digit:]]").is_err());
        let big = "a".repeat(5000);
        assert!(!m(&"*a".repeat(50), &format!("{big}b")), "no blow-up");
    }

    #[test]
    fn whole_paths_match_component_by_component() {
        let g = |p: &str, f: &str| glob_matches(p, Path::new(f)).expect("glob");
        let f = "/etc/ssh/sshd_config.d/00-ztssh.conf";
        assert!(g("/etc/ssh/sshd_config.d/*.conf", f));
        assert!(
            g("/etc/ssh/*/*.conf", f),
            "a wildcard in the directory part"
        );
        assert!(g("/etc/ssh/sshd_config.[d]/[0-9]?-*", f));
        assert!(!g("/etc/ssh/*.conf", f), "* does not cross /");
        assert!(g("/etc//ssh/sshd_config.d/*.conf", f));
        assert_eq!(
            absolute("sshd_config.d/*.conf").expect("rel"),
            "/etc/ssh/sshd_config.d/*.conf"
        );
        assert!(absolute("~/x.conf").is_err());
    }

    #[test]
    fn expansion_reads_every_matching_directory_and_refuses_what_it_cannot() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        for sub in ["site1", "site2", "other"] {
            std::fs::create_dir(d.join(sub)).expect("dir");
            std::fs::write(d.join(sub).join("a.conf"), "").expect("file");
        }
        std::fs::write(d.join("site1/.hidden.conf"), "").expect("file");
        let p = format!("{}/site*/*.conf", d.display());
        let got = expand(&p).expect("expands");
        assert_eq!(got, vec![d.join("site1/a.conf"), d.join("site2/a.conf")]);
        let p = format!("{}/site[2-9]/a.conf", d.display());
        assert_eq!(expand(&p).expect("expands"), vec![d.join("site2/a.conf")]);
        let p = format!("{}/missing/*.conf", d.display());
        assert!(expand(&p).expect("nothing").is_empty());
        let p = format!("{}/site1/.*", d.display());
        assert!(expand(&p).is_err(), ".* can name . and ..");
    }
}
