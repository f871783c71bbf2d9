//! ztssh-keyfile: key, licence and list files for the binaries. The
//! protocol core (ztssh-proto) never touches the file system; the proxy,
//! the sidecar and the CA tool read and write their files through here:
//! secrets written 0600 atomically and never over an existing file, key
//! files read only directly (no symlink) from their owner, and every other
//! file read with a size cap and no way to hang on a FIFO. Config files'
//! unknown keys are reported through [`config_keys`].
//!
//! On Windows (the sidecar's build there) there are no mode bits, owners
//! by uid, FIFOs or O_NOFOLLOW: see [`read_private`] for what is checked
//! instead; `mode` arguments are ignored, and a new file takes its
//! directory's access control list.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::fs;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
#[cfg(windows)]
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

pub mod config_keys;

use ztssh_proto::armor;
use ztssh_proto::keys::{Secret, SigningKey, hex};
use ztssh_proto::rootkey::RootKey;

/// What [`write_atomic`] does when something already exists at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Leave it and fail with `AlreadyExists`: for files that must be new
    /// (keys). Whatever is there counts, a dangling symlink included, and
    /// there is no window between a check and the write.
    Refuse,
    /// Replace it atomically: for files that are meant to be updated
    /// (lists, licences, version counters).
    Replace,
}

/// Writes `contents` to `path` atomically: a 0600 temporary file with a
/// random name in the same directory, fsync, then rename (`Replace`), or
/// move it into place only if nothing is at `path` (`Refuse`).
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tag = hex(&random_tag()?);
    let tmp = dir.join(format!(".{name}.tmp{}-{tag}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(&tmp)?;
    let result = (|| {
        f.write_all(contents)?;
        #[cfg(unix)]
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        #[cfg(not(unix))]
        let _ = mode;
        f.sync_all()?;
        match existing {
            Existing::Replace => fs::rename(&tmp, path)?,
            Existing::Refuse => place_new(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "{} already exists; refusing to overwrite it",
                            path.display()
                        ),
                    )
                } else {
                    e
                }
            })?,
        }
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `dir` durable. Windows cannot open a directory as a
/// file here; NTFS journals the rename itself.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// Six random bytes for a temporary file's name, from the OS.
fn random_tag() -> std::io::Result<[u8; 6]> {
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).map_err(std::io::Error::other)?;
    Ok(tag)
}

/// Moves `tmp` to `path` unless anything at all is there, in one step with
/// no window between the check and the move: rename with
/// `RENAME_NOREPLACE` where the kernel and file system take it, else a hard
/// link (which never replaces either) and the temporary name removed.
fn place_new(tmp: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Not supported here: fall back to a link.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::hard_link(tmp, path)?;
    fs::remove_file(tmp)
}

/// Writes a 32-byte secret as PEM with mode 0600; never over an existing file.
pub fn write_secret(path: &Path, label: &str, secret: &Secret<32>) -> std::io::Result<()> {
    let text = zeroize::Zeroizing::new(
        armor::encode(label, secret.expose()).map_err(std::io::Error::other)?,
    );
    write_atomic(path, text.as_bytes(), 0o600, Existing::Refuse)
}

/// The most a secret key file may hold (a PEM-armored 32-byte key is about
/// 100 bytes).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a 32-byte secret written by [`write_secret`], through
/// [`read_private`].
pub fn read_secret(path: &Path, label: &'static str) -> FileResult<Secret<32>> {
    let text = zeroize::Zeroizing::new(read_private(path, MAX_SECRET_FILE)?);
    let bytes = zeroize::Zeroizing::new(
        armor::decode_expect(label, &text).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{}: key has the wrong length", path.display()))?;
    Ok(Secret::new(arr))
}

/// Reads a private file. It is opened without following a symlink in its
/// place (`O_NOFOLLOW`), then checked on that same descriptor, so nothing
/// can be swapped in between the check and the read: a regular file, owned
/// by this user or by root, that group and others can neither read nor
/// write.
///
/// On Windows, which has no mode bits or uid owners: opened without
/// following a symbolic link or junction in its place
/// (FILE_FLAG_OPEN_REPARSE_POINT) and refused if what was opened is one, a
/// regular file, within `max`. Who else may read it (its access control
/// list) is **not** checked: a key under the user's profile inherits an
/// ACL for the user, SYSTEM and Administrators alone.
#[cfg(windows)]
pub fn read_private(path: &Path, max: u64) -> FileResult<Vec<u8>> {
    /// Open the link itself, not what it points to.
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x0400;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(format!(
            "{} is a symbolic link or junction; key files are opened only directly, so that \
             nobody who can change a link can point the key elsewhere: give the file's own path",
            path.display()
        ));
    }
    if !meta.is_file() {
        return Err(format!(
            "cannot read {}: not a regular file",
            path.display()
        ));
    }
    read_at_most(file, max, path)
}

/// Reads a private file (see the Windows version above for the checks
/// there).
#[cfg(unix)]
pub fn read_private(path: &Path, max: u64) -> FileResult<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                format!(
                    "{} is a symbolic link; key files are opened only directly, so that \
                     nobody who can change a link can point the key elsewhere: give the \
                     file's own path (in Kubernetes, mount each key with subPath)",
                    path.display()
                )
            } else {
                cannot(e)
            }
        })?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read {}: not a regular file",
            path.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}); run: chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not by this user (uid {me}) or root; \
             whoever owns it can replace the key: run: chown {me} {}",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    read_at_most(file, max, path)
}

/// Reads an Ed25519 signing key file.
pub fn read_signing_key(path: &Path, label: &'static str) -> FileResult<SigningKey> {
    read_secret(path, label).map(|s| SigningKey::from_seed(&s))
}

/// Reads the root CA's public key file (`root.pub`): an Ed25519 root, or
/// a hybrid (Ed25519 + ML-DSA-65) one, whose signatures must then carry
/// both halves.
pub fn read_root_public(path: &Path) -> FileResult<RootKey> {
    let bytes = read_pem(path, ztssh_proto::labels::pem::ROOT_PUBLIC)?;
    RootKey::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The most a PEM file read here may hold: a revocation list at its caps
/// (1,000,000 serials and 10,000 names) is about 22 MB armored.
pub const MAX_PEM_FILE: u64 = 32 * 1024 * 1024;

/// Reads a PEM file that must carry `label`.
pub fn read_pem(path: &Path, label: &'static str) -> FileResult<Vec<u8>> {
    let text = read_regular(path, MAX_PEM_FILE)?;
    armor::decode_expect(label, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a regular file of at most `max` bytes. Whatever is put in its
/// place cannot hang or exhaust the reader: the open does not wait (a FIFO
/// with no writer), anything but a regular file is refused (a FIFO, a
/// device such as /dev/zero behind a symlink, a directory), and no more
/// than `max` bytes are read.
pub fn read_regular(path: &Path, max: u64) -> FileResult<Vec<u8>> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut options = fs::OpenOptions::new();
    options.read(true);
    // Windows has no FIFOs among files (its pipes live under \\.\pipe\).
    #[cfg(unix)]
    options.custom_flags(libc::O_NONBLOCK);
    let file = options.open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read {}: not a regular file",
            path.display()
        ));
    }
    if meta.len() > max {
        return Err(format!(
            "cannot read {}: {} bytes, more than the {max} allowed",
            path.display(),
            meta.len()
        ));
    }
    read_at_most(file, max, path)
}

/// Reads `file` to its end, refusing more than `max` bytes.
fn read_at_most(file: fs::File, max: u64, path: &Path) -> FileResult<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "cannot read {}: grew past the {max} bytes allowed while being read",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Errors here are plain sentences meant for the user.
pub type FileResult<T> = Result<T, String>;

/// Windows: what keyfile does there (run under Wine where it runs).
#[cfg(all(test, windows))]
mod windows_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn secrets_round_trip_and_are_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("ztssh-keyfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let _ = fs::remove_file(&path);
        let s = Secret::new([7u8; 32]);
        write_secret(&path, "ZTSSH TEST KEY", &s).unwrap();
        let back = read_secret(&path, "ZTSSH TEST KEY").unwrap();
        assert_eq!(back.expose(), s.expose());
        let e = write_secret(&path, "ZTSSH TEST KEY", &s).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        write_atomic(&path, b"new", 0o600, Existing::Replace).unwrap();
        assert_eq!(read_private(&path, 16).unwrap(), b"new");
        assert!(read_private(&path, 2).is_err());
        assert!(read_regular(&dir, 16).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

// Unix: modes, owners, symlinks and FIFOs.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Runs `read_regular` in a thread, so a read that hangs fails the
    /// test after 10 s instead of hanging it.
    fn read_within(path: &Path, max: u64) -> FileResult<Vec<u8>> {
        let path = path.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_regular(&path, max));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read returned")
    }

    #[test]
    fn what_stands_in_a_files_place_neither_hangs_nor_floods_the_reader() {
        let dir = std::env::temp_dir().join(format!("ztssh-regular-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let err = read_within(&fifo, 1024).expect_err("a FIFO");
        assert!(err.ends_with("not a regular file"), "{err}");
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let err = read_within(&zero, 1024).expect_err("/dev/zero");
        assert!(err.ends_with("not a regular file"), "{err}");
        let err = read_within(&dir, 1024).expect_err("a directory");
        assert!(err.ends_with("not a regular file"), "{err}");
        let big = dir.join("big");
        fs::write(&big, vec![b'x'; 2048]).expect("write");
        let err = read_within(&big, 1024).expect_err("too big");
        assert!(
            err.ends_with("2048 bytes, more than the 1024 allowed"),
            "{err}"
        );
        assert_eq!(read_within(&big, 2048).expect("fits").len(), 2048);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn secret_files_are_0600_and_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("ztssh-keyfile-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k.pem");
        let _ = fs::remove_file(&path);
        let key = SigningKey::from_seed(&Secret::new([9; 32]));
        write_secret(&path, "ZTSSH ROOT KEY", &key.to_seed()).expect("write");
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(write_secret(&path, "ZTSSH ROOT KEY", &key.to_seed()).is_err());
        let back = read_signing_key(&path, "ZTSSH ROOT KEY").expect("read");
        assert_eq!(back.public(), key.public());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            read_secret(&path, "ZTSSH ROOT KEY")
                .expect_err("too open")
                .contains("chmod 600")
        );
        assert!(read_pem(&path, "ZTSSH LICENCE").is_err());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ztssh-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn create_new_never_replaces_what_is_there_not_even_a_dangling_link() {
        let dir = scratch("refuse");
        let path = dir.join("k.pem");
        // A dangling symlink: `Path::exists` says no, but it is something.
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).expect("symlink");
        let e = write_atomic(&path, b"new", 0o600, Existing::Refuse).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(
            e.to_string()
                .ends_with("already exists; refusing to overwrite it"),
            "{e}"
        );
        assert!(
            fs::symlink_metadata(&path)
                .expect("still there")
                .is_symlink()
        );
        assert!(!dir.join("elsewhere").exists());
        // Racing writers: exactly one creates the file, and it holds that
        // one's bytes whole.
        let racy = dir.join("race.pem");
        let wins: Vec<_> = (0..8u8)
            .map(|i| {
                let racy = racy.clone();
                std::thread::spawn(move || {
                    write_atomic(&racy, &[i; 64], 0o600, Existing::Refuse)
                        .is_ok()
                        .then_some(i)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(wins.len(), 1, "{wins:?}");
        assert_eq!(fs::read(&racy).expect("read"), vec![wins[0]; 64]);
        // Replace does replace, and no temporary file is left behind.
        write_atomic(&racy, b"v2", 0o644, Existing::Replace).expect("replace");
        assert_eq!(fs::read(&racy).expect("read"), b"v2");
        let left: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn key_files_are_not_read_through_a_symlink_or_from_another_owner() {
        let dir = scratch("private");
        let real = dir.join("real.pem");
        let key = SigningKey::from_seed(&Secret::new([9; 32]));
        write_secret(&real, "ZTSSH ROOT KEY", &key.to_seed()).expect("write");
        assert!(read_secret(&real, "ZTSSH ROOT KEY").is_ok());
        let link = dir.join("link.pem");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let e = read_secret(&link, "ZTSSH ROOT KEY").expect_err("through a symlink");
        assert!(e.contains("is a symbolic link"), "{e}");
        // Group-writable is refused like group-readable.
        fs::set_permissions(&real, fs::Permissions::from_mode(0o620)).expect("chmod");
        let e = read_secret(&real, "ZTSSH ROOT KEY").expect_err("group-writable");
        assert!(e.contains("(mode 620); run: chmod 600"), "{e}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).expect("chmod");
        // Owned by someone else (the suite runs as root, which may chown).
        nix::unistd::chown(&real, Some(nix::unistd::Uid::from_raw(65534)), None)
            .expect("chown (the suite runs as root)");
        let e = read_secret(&real, "ZTSSH ROOT KEY").expect_err("another owner");
        assert!(e.contains("is owned by uid 65534"), "{e}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
