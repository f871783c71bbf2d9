//! The agent key that last opened a session for a principal on a server,
//! remembered in `~/.cache/ztssh/agent-keys` (honours `XDG_CACHE_HOME`), so
//! that the next login tries it first and costs the proxy no refused keys.
//! One line per principal and server: `principal host:port SHA256:...`.
//! Only public fingerprints are kept; the file is still written 0600
//! atomically (it says which servers the user logs in to).

use std::path::{Path, PathBuf};

/// Most lines kept: the newest first, older ones dropped.
const MAX_ENTRIES: usize = 256;
/// A larger file is not read (it is not ours, or it was tampered with).
const MAX_BYTES: u64 = 64 * 1024;

/// The cache file, if a home or cache directory is known.
pub fn path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("ztssh/agent-keys"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/ztssh/agent-keys"))
}

fn read(path: &Path) -> Vec<(String, String)> {
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_BYTES);
    let text = if small {
        std::fs::read_to_string(path).unwrap_or_default()
    } else {
        String::new()
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(p), Some(s), Some(fp), None) => Some((format!("{p} {s}"), fp.to_owned())),
                _ => None,
            }
        })
        .collect()
}

/// The fingerprint of the key that last worked for `principal` on
/// `server` (`host:port`).
pub fn lookup(path: &Path, principal: &str, server: &str) -> Option<String> {
    let entry = format!("{principal} {server}");
    read(path)
        .into_iter()
        .find_map(|(e, fp)| (e == entry).then_some(fp))
}

/// Remembers that `fingerprint` worked for `principal` on `server`.
pub fn remember(
    path: &Path,
    principal: &str,
    server: &str,
    fingerprint: &str,
) -> Result<(), String> {
    let entry = format!("{principal} {server}");
    if entry.contains(['\n', '\r']) || fingerprint.contains([' ', '\n', '\r']) {
        return Ok(());
    }
    let mut lines = vec![format!("{entry} {fingerprint}\n")];
    lines.extend(
        read(path)
            .into_iter()
            .filter(|(e, _)| *e != entry)
            .take(MAX_ENTRIES - 1)
            .map(|(e, fp)| format!("{e} {fp}\n")),
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    ztssh_sidecar::platform::write_atomic(path, lines.concat().as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_last_key_is_remembered_per_principal_and_server() {
        let dir = std::env::temp_dir().join(format!("ztssh-lastkey-{}", std::process::id()));
        let p = dir.join("sub/agent-keys");
        assert_eq!(lookup(&p, "alice", "web1:22"), None);
        remember(&p, "alice", "web1:22", "SHA256:a").unwrap();
        remember(&p, "bob", "web1:22", "SHA256:b").unwrap();
        remember(&p, "alice", "web1:22", "SHA256:c").unwrap();
        assert_eq!(lookup(&p, "alice", "web1:22").as_deref(), Some("SHA256:c"));
        assert_eq!(lookup(&p, "bob", "web1:22").as_deref(), Some("SHA256:b"));
        assert_eq!(lookup(&p, "alice", "web2:22"), None);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Bounded: the oldest entries go.
        for i in 0..300 {
            remember(&p, "alice", &format!("h{i}:22"), "SHA256:x").unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), MAX_ENTRIES);
        assert_eq!(lookup(&p, "alice", "h299:22").as_deref(), Some("SHA256:x"));
        assert_eq!(lookup(&p, "bob", "web1:22"), None);
        // A line that is not ours is ignored.
        std::fs::write(&p, "garbage\nalice web1:22 SHA256:z\n").unwrap();
        assert_eq!(lookup(&p, "alice", "web1:22").as_deref(), Some("SHA256:z"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
