//! The CA directory: who may write it, and one command at a time.
//!
//! Every command that takes `--dir` first checks the directory
//! ([`check`]): a directory others can write to, or that another user
//! owns, lets them replace what the CA reads (its records, its version
//! counter), so it is refused. `init` creates it 0700.
//!
//! Commands that read and then write the directory (`init`, `revoke`,
//! `crl`, `krl`) hold an exclusive `flock` on the directory itself and on
//! `DIR/lock` for their whole run ([`lock`]; the directory's lock is the
//! one that deleting `DIR/lock` cannot defeat): two of them racing would otherwise each read the same
//! records or version and one's write would be lost, or two different lists
//! would carry one version. A second command waits (bounded) and says
//! which command holds the lock.
//!
//! The lock and every file operation of a command go through one
//! descriptor of the directory ([`CaLock::dir`]): it is opened once
//! (`O_DIRECTORY|O_NOFOLLOW`), checked and locked, and the command reads
//! and writes through `/proc/self/fd/N`, so a rename or a symlink swap of
//! the path (or of a parent) cannot make it read one directory and write
//! another. A path that no longer names the locked directory once the
//! lock is held (moved while the command waited) is refused.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the CA directory.
const LOCK_FILE: &str = "lock";
/// How long a command waits for another to finish.
const LOCK_WAIT: Duration = Duration::from_secs(120);
/// How often it tries again meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Creates the CA directory with mode 0700 if it is missing (its parents
/// as usual), then checks it.
pub fn create(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    check(dir)
}

/// Refuses a CA directory that is not a directory, that group or others
/// can write to, or that neither this user nor root owns.
pub fn check(dir: &Path) -> Result<()> {
    let meta =
        fs::metadata(dir).with_context(|| format!("cannot open CA directory {}", dir.display()))?;
    check_meta(dir, &meta)
}

/// [`check`] on metadata already read (the locked descriptor's).
fn check_meta(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    if !meta.is_dir() {
        bail!("CA directory {} is not a directory", dir.display());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "CA directory {} can be written by {} (mode {:o}): whoever can write it can replace \
             the revocation records and the list version; run: chmod 700 {}",
            dir.display(),
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode,
            dir.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "CA directory {} is owned by uid {}, not by this user (uid {me}) or root; whoever owns \
             it can replace what the CA reads: run: chown {me} {}",
            dir.display(),
            meta.uid(),
            dir.display()
        );
    }
    Ok(())
}

/// An exclusive lock on the CA directory, released when dropped: a
/// `flock` on the directory itself (which deleting or replacing `DIR/lock`
/// cannot undo) and on `DIR/lock` (which names the holder).
pub struct CaLock {
    file: Flock<fs::File>,
    _dir: Flock<fs::File>,
    through: PathBuf,
}

impl CaLock {
    /// The locked directory as a path through its descriptor
    /// (`/proc/self/fd/N`): what the command reads and writes, whatever
    /// the `--dir` path names meanwhile.
    pub fn dir(&self) -> &Path {
        &self.through
    }
}

impl Drop for CaLock {
    fn drop(&mut self) {
        // No stale holder named once this command is done.
        let _ = self.file.set_len(0);
    }
}

/// How many times a lock file found replaced after it was locked is
/// opened and locked again before giving up.
const LOCK_REOPENS: u32 = 16;

/// Opens the lock file at `path`, named `shown` in messages.
fn open_lock_file(path: &Path, shown: &Path) -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open the CA's lock file {}", shown.display()))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        bail!("{} is not a regular file", shown.display());
    }
    Ok(file)
}

/// The locked directory's path through its descriptor, and the path the
/// operator gave (one locked directory per run).
static NAMES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// `text` (a message, a path) with the locked directory's descriptor path
/// put back as the path the operator gave, so that messages name
/// `--dir`, never `/proc/self/fd/N`.
pub fn shown(text: &str) -> String {
    match NAMES.get() {
        Some((through, given)) => text.replace(through.as_str(), given),
        None => text.to_owned(),
    }
}

/// [`shown`] for a path.
pub fn shown_path(path: &Path) -> String {
    shown(&path.display().to_string())
}

/// Whether two metadata are of one file (device and inode).
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether `file` is still what `path` names (not deleted or replaced
/// since it was opened).
fn still_at(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    }
}

/// One non-blocking attempt at a lock: `Ok(Err(file))` while another holds it.
fn try_lock(file: fs::File, what: &Path) -> Result<std::result::Result<Flock<fs::File>, fs::File>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Ok(held)),
        Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => Ok(Err(f)),
        Err((_, e)) => {
            Err(std::io::Error::from(e)).with_context(|| format!("cannot lock {}", what.display()))
        }
    }
}

/// Takes the CA directory's lock for `command` (the subcommand's name),
/// waiting up to [`LOCK_WAIT`] for another command to finish. The
/// directory is locked first, then `DIR/lock`; a lock file that turns out
/// to have been deleted or replaced once locked is opened again (at most
/// [`LOCK_REOPENS`] times).
pub fn lock(dir: &Path, command: &str) -> Result<CaLock> {
    let dir_file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| {
            format!(
                "cannot open CA directory {} to lock it (a symbolic link is refused: give the \
                 directory's real path)",
                dir.display()
            )
        })?;
    let meta = dir_file
        .metadata()
        .with_context(|| format!("cannot read CA directory {}", dir.display()))?;
    check_meta(dir, &meta)?;
    let through = PathBuf::from(format!("/proc/self/fd/{}", dir_file.as_raw_fd()));
    if !fs::metadata(&through).is_ok_and(|m| same_file(&m, &meta)) {
        bail!(
            "cannot reach CA directory {} through its descriptor ({} is missing: is /proc \
             mounted?)",
            dir.display(),
            through.display()
        );
    }
    let path = through.join(LOCK_FILE);
    let shown = dir.join(LOCK_FILE);
    let mut dir_lock: std::result::Result<Flock<fs::File>, fs::File> = Err(dir_file);
    let mut file = open_lock_file(&path, &shown)?;
    let start = Instant::now();
    let mut told = false;
    let mut reopens = 0;
    let max_tries = LOCK_WAIT.as_millis() / LOCK_RETRY.as_millis() + 1;
    for _ in 0..max_tries {
        if let Err(d) = dir_lock {
            dir_lock = try_lock(d, dir)?;
        }
        if let Ok(dir_held) = dir_lock {
            match try_lock(file, &path)? {
                Ok(mut held) if still_at(&held, &path) => {
                    // Moved or swapped while this command waited: the
                    // operator named the directory by its path.
                    if !fs::symlink_metadata(dir).is_ok_and(|m| same_file(&m, &meta)) {
                        bail!(
                            "CA directory {} was moved or replaced while this command waited for \
                             its lock; nothing was changed: check which directory is the CA's \
                             and run the command again",
                            dir.display()
                        );
                    }
                    let _ = NAMES.set((through.display().to_string(), dir.display().to_string()));
                    let _ = held.set_len(0);
                    let _ = held.rewind();
                    let _ = writeln!(held, "ztssh-ca {command} (pid {})", std::process::id());
                    let _ = held.sync_data();
                    return Ok(CaLock {
                        file: held,
                        _dir: dir_held,
                        through,
                    });
                }
                Ok(replaced) => {
                    dir_lock = Ok(dir_held);
                    reopens += 1;
                    if reopens > LOCK_REOPENS {
                        bail!(
                            "{} keeps being deleted or replaced while it is locked; stop whatever \
                             removes it and try again",
                            shown.display()
                        );
                    }
                    drop(replaced);
                    file = open_lock_file(&path, &shown)?;
                    continue;
                }
                Err(f) => {
                    dir_lock = Ok(dir_held);
                    file = f;
                }
            }
        }
        if !told {
            eprintln!(
                "ztssh-ca: waiting for {} to finish with CA directory {} (it holds {})",
                holder(&mut file),
                dir.display(),
                shown.display()
            );
            told = true;
        }
        if start.elapsed() >= LOCK_WAIT {
            break;
        }
        std::thread::sleep(LOCK_RETRY);
    }
    bail!(
        "CA directory {} is still locked by {} after {} s; try again when it has finished \
         (if no ztssh-ca command is running, something else holds {} or the directory itself)",
        dir.display(),
        holder(&mut file),
        LOCK_WAIT.as_secs(),
        shown.display()
    )
}

/// What the lock file says about the command holding it.
fn holder(file: &mut fs::File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = Read::take(&mut *file, 256).read_to_string(&mut text);
    let text = text.trim();
    let printable = !text.is_empty() && text.chars().all(|c| !c.is_control());
    if printable {
        format!("`{text}`")
    } else {
        "another ztssh-ca command".to_owned()
    }
}
