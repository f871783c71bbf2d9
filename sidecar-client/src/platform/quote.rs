//! Quoting the sidecar's path as the first word of a `ProxyCommand` line,
//! for each system's ssh. Both are here on every system, so both are
//! tested everywhere. Either escapes `%` as `%%`: ssh expands `%`-tokens
//! in the line before it runs it.

/// For OpenSSH on Unix, which runs `ProxyCommand` with `$SHELL -c`: a
/// plain path as it is, anything else in single quotes. `None` when the
/// path cannot be written on one line safely (a newline or a `'`).
pub fn posix(path: &str) -> Option<String> {
    if path.contains(['\n', '\r', '\'']) || path.is_empty() {
        return None;
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-".contains(c);
    let word = if path.chars().all(plain) {
        path.to_owned()
    } else {
        format!("'{path}'")
    };
    Some(word.replace('%', "%%"))
}

/// For OpenSSH for Windows, which starts `ProxyCommand` with
/// CreateProcess, so the line is split by the C runtime's rules: a path
/// with a space or tab in double quotes, backslashes as they are (no
/// Windows path ends in one, and none holds a `"`). `None` for a `"`, a
/// newline or a trailing backslash, which those rules would read
/// differently, and for a path not absolute (`C:\...` or `\\server\...`):
/// ssh's working directory is not the user's.
pub fn windows(path: &str) -> Option<String> {
    let absolute = path.starts_with(r"\\")
        || (path.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && path.get(1..3) == Some(":\\"));
    if !absolute || path.contains(['"', '\n', '\r']) || path.ends_with('\\') {
        return None;
    }
    let word = if path.contains([' ', '\t', '&', '^', '|', '<', '>', '(', ')']) {
        format!("\"{path}\"")
    } else {
        path.to_owned()
    };
    Some(word.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::{posix, windows};

    #[test]
    fn posix_paths_are_shell_words() {
        assert_eq!(
            posix("/usr/bin/ztssh-sidecar").as_deref(),
            Some("/usr/bin/ztssh-sidecar")
        );
        assert_eq!(
            posix("/opt/my tools/100%/ztssh-sidecar").as_deref(),
            Some("'/opt/my tools/100%%/ztssh-sidecar'")
        );
        assert_eq!(posix("/tmp/$(reboot)").as_deref(), Some("'/tmp/$(reboot)'"));
        for bad in ["/tmp/it's", "/tmp/a\nb", ""] {
            assert_eq!(posix(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn windows_paths_follow_the_command_line_rules() {
        assert_eq!(
            windows(r"C:\Users\alice\bin\ztssh-sidecar.exe").as_deref(),
            Some(r"C:\Users\alice\bin\ztssh-sidecar.exe")
        );
        assert_eq!(
            windows(r"C:\Program Files\ztssh\ztssh-sidecar.exe").as_deref(),
            Some(r#""C:\Program Files\ztssh\ztssh-sidecar.exe""#)
        );
        assert_eq!(
            windows(r"D:\100% tools\ztssh-sidecar.exe").as_deref(),
            Some(r#""D:\100%% tools\ztssh-sidecar.exe""#)
        );
        assert_eq!(
            windows(r"C:\a&b\ztssh-sidecar.exe").as_deref(),
            Some(r#""C:\a&b\ztssh-sidecar.exe""#)
        );
        assert_eq!(
            windows(r"\\server\share\ztssh-sidecar.exe").as_deref(),
            Some(r"\\server\share\ztssh-sidecar.exe")
        );
        for bad in [
            r#"C:\a"b\ztssh-sidecar.exe"#,
            "C:\\a\nb.exe",
            r"C:\tools\",
            r"ztssh-sidecar.exe",
            r"bin\ztssh-sidecar.exe",
            "/usr/bin/ztssh-sidecar",
            "",
        ] {
            assert_eq!(windows(bad), None, "{bad:?}");
        }
    }
}
