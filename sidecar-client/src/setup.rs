//! `ztssh-sidecar setup`: makes `ssh HOST` go through ztssh for the hosts
//! named, and `ztssh-sidecar setup --undo` takes it out again.
//!
//! It writes, each file atomically (a temporary file and a rename):
//! - `~/.config/ztssh/root.pub`, a copy of the root key given, and
//!   `~/.config/ztssh/sidecar.toml` naming it (with the principal and
//!   identity given); the directory is created 0700, the files 0600;
//! - a `Host` block with `ProxyCommand <this binary> %h %p`, the proxies'
//!   `Port` and (with `--identity`) `IdentityFile` at the top of
//!   `~/.ssh/config` (ssh takes the first value it finds, so ztssh's
//!   `ProxyCommand` wins over a later `Host *`);
//! - with `--host-ca`, an `@cert-authority` line in `~/.ssh/known_hosts`,
//!   so ssh trusts the host certificates `ztssh-ca sign-host` makes.
//!
//! What it adds to a file the user owns sits between marker comments, so a
//! re-run finds and replaces it (one block, however often it runs) and
//! `--undo` removes exactly it. A file it changes is first copied to
//! `FILE.ztssh-bak-<unix time>`. A run that would change nothing changes
//! nothing and says "unchanged".
//!
//! The host CA key cannot come from the root public key: it is derived
//! from the root's private seed through a one-way hash (`proto/src/hostca.rs`),
//! so the user gets it from their administrators with `root.pub`: the line
//! `ztssh-ca known-hosts` prints, or the bare public key.

use std::fs;
use std::path::{Path, PathBuf};

use ztssh_sidecar::platform;

/// The first line of every block setup adds.
pub const BEGIN: &str =
    "# >>> ztssh-sidecar setup (managed; `ztssh-sidecar setup --undo` removes it) >>>";
/// The last line.
pub const END: &str = "# <<< ztssh-sidecar setup <<<";
const BEGIN_PREFIX: &str = "# >>> ztssh-sidecar setup";
const END_PREFIX: &str = "# <<< ztssh-sidecar setup";
/// The first line of a sidecar.toml that setup wrote.
pub const TOML_HEADER: &str =
    "# Written by `ztssh-sidecar setup`; `ztssh-sidecar setup --undo` removes it.";
/// Largest file setup reads (ssh config, known_hosts, keys).
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What `setup` was asked to do.
pub struct Request {
    /// The root CA public key file.
    pub root: PathBuf,
    /// The ztssh principal, if not the local user name.
    pub principal: Option<String>,
    /// The user's key file, if not the agent's.
    pub identity: Option<PathBuf>,
    /// ssh `Host` patterns to send through ztssh.
    pub hosts: Vec<String>,
    /// The host CA's public key (or its known_hosts line).
    pub host_ca: Option<PathBuf>,
    /// The proxies' port, for the block's `Port` line.
    pub port: u16,
}

/// The port `setup` writes without `--port`: the proxy's `listen` in
/// `config-examples/proxy.toml` and docs/OPERATOR.md.
pub const DEFAULT_PORT: u16 = 2222;

/// Where setup writes, from `HOME` (`USERPROFILE` on Windows) and
/// `XDG_CONFIG_HOME`.
pub struct Paths {
    /// `~/.ssh/config`.
    pub ssh_config: PathBuf,
    /// `~/.ssh/known_hosts`.
    pub known_hosts: PathBuf,
    /// `~/.config/ztssh/sidecar.toml`.
    pub sidecar_toml: PathBuf,
    /// `~/.config/ztssh/root.pub`.
    pub root_copy: PathBuf,
}

impl Paths {
    /// From the environment; `HOME` (`USERPROFILE` on Windows) must be set.
    pub fn from_env() -> Result<Self, String> {
        let var = platform::HOME_VAR;
        let home = platform::home_dir().ok_or_else(|| {
            format!("{var} is not set: setup writes under your home directory; set {var}")
        })?;
        let sidecar_toml = crate::settings::default_path()
            .ok_or_else(|| format!("cannot tell where sidecar.toml goes: set {var}"))?;
        let config_dir = sidecar_toml
            .parent()
            .ok_or("sidecar.toml has no directory")?;
        Ok(Self {
            ssh_config: home.join(".ssh").join("config"),
            known_hosts: home.join(".ssh").join("known_hosts"),
            root_copy: config_dir.join("root.pub"),
            sidecar_toml,
        })
    }
}

/// What happened to one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and now does.
    Created,
    /// Its content changed; the old one is at the path given.
    Updated(PathBuf),
    /// Already as wanted.
    Unchanged,
    /// Removed (setup's own file, or the file held only setup's block);
    /// a copy is at the path given.
    Removed(PathBuf),
    /// Nothing of setup's was there.
    Absent,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::Updated(b) => write!(f, "updated (previous version in {})", b.display()),
            Self::Unchanged => f.write_str("unchanged"),
            Self::Removed(b) => write!(
                f,
                "removed ztssh's part (previous version in {})",
                b.display()
            ),
            Self::Absent => f.write_str("nothing of ztssh's there"),
        }
    }
}

/// Runs setup; returns one report line per file.
pub fn setup(req: &Request, paths: &Paths, sidecar: &Path) -> Result<Vec<String>, String> {
    if req.hosts.is_empty() {
        return Err(
            "name the hosts ztssh serves: --host 'web1' --host '*.corp.example' \
             (ssh Host patterns; --host '*' sends every host through ztssh)"
                .into(),
        );
    }
    for h in &req.hosts {
        check_pattern(h)?;
    }
    // Everything is read and checked before anything is written.
    let root_bytes = read_limited(&req.root)?;
    ztssh_keyfile::read_root_public(&req.root)?;
    let identity = match &req.identity {
        Some(p) => Some(absolute_file(p, "identity")?),
        None => None,
    };
    if let Some(p) = &req.principal {
        check_principal(p)?;
    }
    let ca_line = match &req.host_ca {
        Some(p) => Some(known_hosts_line(&host_ca_key(p)?, &req.hosts)),
        None => None,
    };
    let toml = sidecar_toml(
        &paths.root_copy,
        req.principal.as_deref(),
        identity.as_deref(),
    );
    let own = |p: &Path| {
        fs::read_to_string(p)
            .ok()
            .filter(|t| t.starts_with(TOML_HEADER))
    };
    if paths.sidecar_toml.exists() && own(&paths.sidecar_toml).is_none() {
        return Err(format!(
            "{} exists and was not written by setup; move it aside (setup then writes its own) \
             or edit it by hand",
            paths.sidecar_toml.display()
        ));
    }
    let block = ssh_block(sidecar, &req.hosts, req.port, identity.as_deref())?;
    let ssh_config = plan_edit(&paths.ssh_config, |t| upsert(t, &block))?;
    let known_hosts = match &ca_line {
        Some(l) => {
            let block = format!("{BEGIN}\n{l}\n{END}\n");
            Some(plan_edit(&paths.known_hosts, |t| upsert(t, &block))?)
        }
        None => None,
    };
    let mut report = Vec::new();
    let mut line = |p: &Path, o: Outcome| report.push(format!("{}: {o}", p.display()));
    if let Some(dir) = paths.sidecar_toml.parent() {
        private_dir(dir)?;
    }
    line(
        &paths.root_copy,
        replace_file(&paths.root_copy, &root_bytes)?,
    );
    line(
        &paths.sidecar_toml,
        replace_file(&paths.sidecar_toml, toml.as_bytes())?,
    );
    if let Some(dir) = paths.ssh_config.parent() {
        private_dir(dir)?;
    }
    line(&paths.ssh_config, ssh_config.apply()?);
    match known_hosts {
        Some(k) => line(&paths.known_hosts, k.apply()?),
        None => report.push(format!(
            "{}: not changed: no --host-ca, so ssh asks you to accept each host key on first use; \
             ask your administrators for the line `ztssh-ca known-hosts` prints and re-run with --host-ca FILE",
            paths.known_hosts.display()
        )),
    }
    Ok(report)
}

/// Undoes setup: removes its blocks and its own files; leaves the backups.
pub fn undo(paths: &Paths) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    let mut line = |p: &Path, o: Outcome| report.push(format!("{}: {o}", p.display()));
    let ssh_config = plan_edit(&paths.ssh_config, |t| remove(t).map(|(t, _)| t))?;
    let known_hosts = plan_edit(&paths.known_hosts, |t| remove(t).map(|(t, _)| t))?;
    line(&paths.ssh_config, ssh_config.apply()?);
    line(&paths.known_hosts, known_hosts.apply()?);
    let ours = fs::read_to_string(&paths.sidecar_toml)
        .map(|t| t.starts_with(TOML_HEADER))
        .unwrap_or(false);
    if ours {
        line(&paths.sidecar_toml, remove_file(&paths.sidecar_toml)?);
        line(&paths.root_copy, remove_file(&paths.root_copy)?);
    } else if paths.sidecar_toml.exists() {
        report.push(format!(
            "{}: not written by setup; left as it is",
            paths.sidecar_toml.display()
        ));
    } else {
        line(&paths.sidecar_toml, Outcome::Absent);
    }
    Ok(report)
}

/// An ssh Host pattern that fits on the `Host` line as one word.
fn check_pattern(p: &str) -> Result<(), String> {
    let bad = p.is_empty()
        || p.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | '"' | ','));
    if bad {
        return Err(format!(
            "--host {p:?}: give one ssh Host pattern per --host (no spaces, commas, quotes or #)"
        ));
    }
    Ok(())
}

fn check_principal(p: &str) -> Result<(), String> {
    if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("--principal {p:?}: a principal is one word"));
    }
    Ok(())
}

fn read_limited(p: &Path) -> Result<Vec<u8>, String> {
    ztssh_keyfile::read_regular(p, MAX_FILE)
}

fn absolute_file(p: &Path, what: &str) -> Result<PathBuf, String> {
    let p = crate::settings::expand_tilde(p);
    let abs = std::path::absolute(&p).map_err(|e| format!("--{what} {}: {e}", p.display()))?;
    if !abs.is_file() {
        return Err(format!("--{what} {}: no such file", abs.display()));
    }
    Ok(abs)
}

/// The host CA public key from FILE: the line `ztssh-ca known-hosts`
/// prints, or a bare OpenSSH public key.
fn host_ca_key(p: &Path) -> Result<String, String> {
    let bytes = read_limited(p)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", p.display()))?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(first), None) = (lines.next(), lines.next()) else {
        return Err(format!(
            "{}: expected one line, the output of `ztssh-ca known-hosts` or the host CA public key",
            p.display()
        ));
    };
    let key_text = match first.strip_prefix("@cert-authority") {
        Some(rest) => rest
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" "),
        None => first.to_owned(),
    };
    let key = ssh_key::PublicKey::from_openssh(&key_text)
        .map_err(|e| format!("{}: not an OpenSSH public key: {e}", p.display()))?;
    key.to_openssh()
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// `@cert-authority PATTERNS KEY`; each Host pattern also as `[P]:*`, which
/// is how ssh looks a host up when it is reached on a port other than 22.
pub fn known_hosts_line(key: &str, hosts: &[String]) -> String {
    let patterns: Vec<String> = hosts
        .iter()
        .flat_map(|h| match h.strip_prefix('!') {
            Some(rest) => [h.clone(), format!("![{rest}]:*")],
            None => [h.clone(), format!("[{h}]:*")],
        })
        .collect();
    format!("@cert-authority {} {key}", patterns.join(","))
}

/// The `Host` block for `~/.ssh/config`: the `ProxyCommand`, the
/// proxies' `Port`, and with `identity` the `IdentityFile` ssh then logs in
/// to sshd with (ztssh hands sshd the key the tunnel was opened with, so
/// ssh must offer that one: `IdentitiesOnly yes`). It ends with `Host *` so
/// that the options that followed it (it goes at the top of the file)
/// still apply to every host, as they did before.
pub fn ssh_block(
    sidecar: &Path,
    hosts: &[String],
    port: u16,
    identity: Option<&Path>,
) -> Result<String, String> {
    // ssh expands %-tokens, then runs the line with the shell (Unix) or
    // CreateProcess (Windows): platform::quote.
    let cmd = sidecar
        .to_str()
        .and_then(platform::proxy_command_word)
        .ok_or_else(|| {
            format!(
                "the sidecar's path {} cannot go on a ProxyCommand line; install it elsewhere",
                sidecar.display()
            )
        })?;
    let mut opts = format!("    ProxyCommand {cmd} %h %p\n    Port {port}\n");
    if let Some(key) = identity {
        let key = key
            .to_str()
            .filter(|k| !k.contains(['\n', '\r', '"']))
            .ok_or_else(|| {
                format!(
                    "--identity {}: this path cannot go on an IdentityFile line; move the key",
                    key.display()
                )
            })?;
        // ssh expands % and ~ in IdentityFile.
        let key = key.replace('%', "%%");
        opts.push_str(&format!(
            "    IdentityFile \"{key}\"\n    IdentitiesOnly yes\n"
        ));
    }
    Ok(format!(
        "{BEGIN}\nHost {}\n{opts}Host *\n{END}\n",
        hosts.join(" ")
    ))
}

/// The sidecar.toml setup writes.
pub fn sidecar_toml(root: &Path, principal: Option<&str>, identity: Option<&Path>) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut t = format!("{TOML_HEADER}\nroot = {}\n", q(&root.to_string_lossy()));
    if let Some(p) = principal {
        t.push_str(&format!("principal = {}\n", q(p)));
    }
    if let Some(i) = identity {
        t.push_str(&format!("identity = {}\n", q(&i.to_string_lossy())));
    }
    t
}

/// The byte ranges of setup's blocks in `text` (none: empty); an error for a begin marker without its end (or the reverse),
/// which setup will not guess about.
fn blocks(text: &str) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut found = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with(BEGIN_PREFIX) {
            if open.is_some() {
                return Err("a ztssh begin marker inside another ztssh block".into());
            }
            open = Some(at);
        } else if t.starts_with(END_PREFIX) {
            let start = open
                .take()
                .ok_or("a ztssh end marker without its begin marker")?;
            found.push(start..at + line.len());
        }
        at += line.len();
    }
    if open.is_some() {
        return Err("a ztssh begin marker without its end marker".into());
    }
    Ok(found)
}

/// `text` with every setup block taken out; also whether there was one.
pub fn remove(text: &str) -> Result<(String, bool), String> {
    let found = blocks(text)?;
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for r in &found {
        out.push_str(&text[from..r.start]);
        from = r.end;
    }
    out.push_str(&text[from..]);
    Ok((out, !found.is_empty()))
}

/// `text` with exactly one setup block, `block`: where the first one was,
/// else at the top. (At the top of known_hosts too: ssh reads every line
/// there, and a block that ends with its own newline added before the
/// user's text comes out again leaving that text byte for byte.)
pub fn upsert(text: &str, block: &str) -> Result<String, String> {
    let found = blocks(text)?;
    let Some(first) = found.first() else {
        return Ok(format!("{block}{text}"));
    };
    let (before, after) = (&text[..first.start], &text[first.end..]);
    let (after, _) = remove(after)?;
    Ok(format!("{before}{block}{after}"))
}

/// The file a write to `p` must replace: a symbolic link's target (a
/// dotfile manager's link stays a link).
fn target_of(p: &Path) -> PathBuf {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(p).unwrap_or_else(|_| p.to_owned()),
        _ => p.to_owned(),
    }
}

/// A change to a text file, worked out before anything is written.
struct Pending {
    path: PathBuf,
    /// The old text and mode, when the file exists.
    old: Option<(String, u32)>,
    new: String,
}

/// Works out `change` applied to the file's text (empty if missing).
fn plan_edit(
    p: &Path,
    change: impl FnOnce(&str) -> Result<String, String>,
) -> Result<Pending, String> {
    let path = target_of(p);
    let old = match fs::symlink_metadata(&path) {
        Ok(_) => {
            let bytes = read_limited(&path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                format!(
                    "{} is not UTF-8 text; setup leaves it alone",
                    path.display()
                )
            })?;
            let mode =
                platform::file_mode(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some((text, mode))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let current = old.as_ref().map(|(t, _)| t.as_str()).unwrap_or("");
    let new = change(current).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Pending { path, old, new })
}

impl Pending {
    /// Writes the change (atomically, after a backup); creates the file
    /// 0600 if it was missing; removes it if nothing but blanks is left.
    fn apply(self) -> Result<Outcome, String> {
        let p = &self.path;
        match self.old {
            None if self.new.is_empty() => Ok(Outcome::Absent),
            None => {
                write(p, self.new.as_bytes(), 0o600)?;
                Ok(Outcome::Created)
            }
            Some((t, _)) if t == self.new => Ok(Outcome::Unchanged),
            Some((t, mode)) => {
                let bak = backup(p, t.as_bytes(), mode)?;
                if self.new.trim().is_empty() {
                    fs::remove_file(p)
                        .map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
                    return Ok(Outcome::Removed(bak));
                }
                write(p, self.new.as_bytes(), mode)?;
                Ok(Outcome::Updated(bak))
            }
        }
    }
}

/// Replaces a whole file setup owns with `bytes` (0600).
fn replace_file(p: &Path, bytes: &[u8]) -> Result<Outcome, String> {
    let p = target_of(p);
    match fs::read(&p) {
        Ok(old) if old == bytes => Ok(Outcome::Unchanged),
        Ok(old) => {
            let bak = backup(&p, &old, 0o600)?;
            write(&p, bytes, 0o600)?;
            Ok(Outcome::Updated(bak))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(&p, bytes, 0o600)?;
            Ok(Outcome::Created)
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn remove_file(p: &Path) -> Result<Outcome, String> {
    let p = target_of(p);
    match fs::read(&p) {
        Ok(old) => {
            let bak = backup(&p, &old, 0o600)?;
            fs::remove_file(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
            Ok(Outcome::Removed(bak))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Absent),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn write(p: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    platform::write_atomic(p, bytes, mode).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

fn private_dir(dir: &Path) -> Result<(), String> {
    platform::create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Copies the old content to `FILE.ztssh-bak-<unix time>` (a new name if
/// that one exists) with the file's mode.
fn backup(p: &Path, old: &[u8], mode: u32) -> Result<PathBuf, String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100u32 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let bak = p.with_file_name(format!("{name}.ztssh-bak-{secs}{suffix}"));
        if fs::symlink_metadata(&bak).is_err() {
            write(&bak, old, mode & 0o600)?;
            return Ok(bak);
        }
    }
    Err(format!(
        "cannot find a free backup name beside {}",
        p.display()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BLOCK: &str = "# >>> ztssh-sidecar setup x\nHost a\n    ProxyCommand z %h %p\nHost *\n# <<< ztssh-sidecar setup <<<\n";

    #[test]
    fn upsert_puts_one_block_at_the_top_and_replaces_it_in_place() {
        let user = "ServerAliveInterval 60\nHost old\n    User bob\n";
        let once = upsert(user, BLOCK).unwrap();
        assert_eq!(once, format!("{BLOCK}{user}"));
        assert_eq!(upsert(&once, BLOCK).unwrap(), once, "idempotent");
        let other = BLOCK.replace("Host a", "Host b");
        let twice = upsert(&once, &other).unwrap();
        assert_eq!(twice, format!("{other}{user}"), "replaced where it was");
        assert_eq!(remove(&twice).unwrap(), (user.to_owned(), true));
    }

    #[test]
    fn remove_gives_back_text_without_a_final_newline_exactly() {
        assert_eq!(upsert("", BLOCK).unwrap(), BLOCK);
        let with = upsert("h1 k", BLOCK).unwrap();
        assert_eq!(remove(&with).unwrap(), ("h1 k".to_owned(), true));
    }

    #[test]
    fn duplicate_blocks_collapse_to_one_and_broken_markers_are_refused() {
        let two = format!("x\n{BLOCK}y\n{BLOCK}z\n");
        assert_eq!(upsert(&two, BLOCK).unwrap(), format!("x\n{BLOCK}y\nz\n"));
        let open = "x\n# >>> ztssh-sidecar setup\nHost a\n";
        assert!(upsert(open, BLOCK).unwrap_err().contains("without its end"));
        assert!(remove("# <<< ztssh-sidecar setup <<<\n").is_err());
    }

    // POSIX quoting and paths: Windows quotes for CreateProcess
    // (platform/quote.rs has its tests).
    #[cfg(unix)]
    #[test]
    fn the_block_quotes_odd_paths_and_keeps_global_options_global() {
        let b = ssh_block(
            Path::new("/usr/bin/ztssh-sidecar"),
            &["web*".into(), "db1".into()],
            2222,
            None,
        )
        .unwrap();
        assert!(
            b.contains(
                "\nHost web* db1\n    ProxyCommand /usr/bin/ztssh-sidecar %h %p\n    Port 2222\nHost *\n"
            ),
            "{b}"
        );
        let b = ssh_block(
            Path::new("/opt/my tools/100%/ztssh-sidecar"),
            &["a".into()],
            22,
            None,
        )
        .unwrap();
        assert!(
            b.contains("ProxyCommand '/opt/my tools/100%%/ztssh-sidecar' %h %p\n    Port 22\n"),
            "{b}"
        );
        assert!(ssh_block(Path::new("/a'b"), &["a".into()], 22, None).is_err());
    }

    // POSIX quoting and paths: Windows quotes for CreateProcess
    // (platform/quote.rs has its tests).
    #[cfg(unix)]
    #[test]
    fn the_block_names_the_identity_ssh_must_log_in_with() {
        let sidecar = Path::new("/usr/bin/ztssh-sidecar");
        let key = Path::new("/home/a b/.ssh/id_100%");
        let b = ssh_block(sidecar, &["web1".into()], 2222, Some(key)).unwrap();
        assert!(
            b.contains(
                "    Port 2222\n    IdentityFile \"/home/a b/.ssh/id_100%%\"\n    IdentitiesOnly yes\nHost *\n"
            ),
            "{b}"
        );
        let quote = Path::new("/home/a\"b/key");
        assert!(ssh_block(sidecar, &["web1".into()], 2222, Some(quote)).is_err());
    }

    #[test]
    fn known_hosts_patterns_cover_other_ports() {
        let l = known_hosts_line("ssh-ed25519 AAAA ca", &["web1".into(), "!db".into()]);
        assert_eq!(
            l,
            "@cert-authority web1,[web1]:*,!db,![db]:* ssh-ed25519 AAAA ca"
        );
    }

    #[test]
    fn host_patterns_are_single_words() {
        assert!(check_pattern("*.corp.example").is_ok());
        for bad in ["", "a b", "a,b", "a#", "\"a\""] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sidecar_toml_escapes_and_parses_back() {
        let t = sidecar_toml(Path::new("/h/\"q\"/root.pub"), Some("alice"), None);
        assert!(t.starts_with(TOML_HEADER));
        let v: toml::Table = t.parse().unwrap();
        assert_eq!(v["root"].as_str(), Some("/h/\"q\"/root.pub"));
        assert_eq!(v["principal"].as_str(), Some("alice"));
        assert!(v.get("identity").is_none());
    }
}
