//! Key and certificate files for the tools (feature `fs`). The protocol core
//! never touches the file system; only the binaries call these.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::armor;
use crate::keys::{Secret, SigningKey};

/// Writes `contents` to `path` atomically: a 0600 temporary file in the same
/// directory, fsync, then rename. Refuses to replace an existing file unless
/// `overwrite` is set.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> std::io::Result<()> {
    if !overwrite && path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ),
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a 32-byte secret as PEM with mode 0600.
pub fn write_secret(path: &Path, label: &str, secret: &Secret<32>) -> std::io::Result<()> {
    let text = zeroize::Zeroizing::new(armor::encode(label, secret.expose()));
    write_atomic(path, text.as_bytes(), 0o600, false)
}

/// Reads a 32-byte secret written by [`write_secret`]; refuses files that
/// group or others can read.
pub fn read_secret(path: &Path, label: &'static str) -> FileResult<Secret<32>> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by other users (mode {:o}); run: chmod 600 {}",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        ));
    }
    let text = zeroize::Zeroizing::new(
        fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let bytes = zeroize::Zeroizing::new(
        armor::decode_expect(label, &text).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{}: key has the wrong length", path.display()))?;
    Ok(Secret::new(arr))
}

/// Reads an Ed25519 signing key file.
pub fn read_signing_key(path: &Path, label: &'static str) -> FileResult<SigningKey> {
    read_secret(path, label).map(|s| SigningKey::from_seed(&s))
}

/// Reads the root CA's public key file (`root.pub`).
pub fn read_root_public(path: &Path) -> FileResult<crate::keys::PublicKey> {
    let bytes = read_pem(path, crate::labels::pem::ROOT_PUBLIC)?;
    crate::keys::to_array(&bytes, "root public key")
        .map(crate::keys::PublicKey)
        .map_err(|e| format!("{}: {e}", path.display()))
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
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
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
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
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

#[cfg(test)]
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
        let key = SigningKey::generate();
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
}
