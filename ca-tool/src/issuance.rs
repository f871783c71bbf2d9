//! The CA's issuance log: one line per licence it signs, appended (never
//! rewritten) to `CA/issued.log` under the CA's lock, before the licence
//! is written out. It answers "which licences did this CA hand out for
//! this key?" when keys are stolen.
//!
//! ```text
//! TIME licence SERIAL server=ID noise=HEX subca=HEX not_before=N not_after=N hostnames=H1,H2
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ztssh_proto::cert::LicenceBody;
use ztssh_proto::keys::hex;

/// The log's file name in the CA directory.
pub const LOG: &str = "issued.log";

/// The log line for a licence signed at `now`.
pub fn line(b: &LicenceBody, now: u64) -> String {
    format!(
        "{now} licence {} server={} noise={} subca={} not_before={} not_after={} hostnames={}\n",
        b.serial,
        b.server_id,
        hex(&b.noise_key),
        hex(&b.subca_key.0),
        b.not_before,
        b.not_after,
        b.hostnames.join(",")
    )
}

/// Appends `line` to the log and syncs it: a licence is only written out
/// once its record is on disk. The file is opened append-only, not
/// through a symbolic link, and created 0600.
pub fn append(dir: &Path, line: &str) -> Result<()> {
    append_to(dir, LOG, line)
}

/// The audit log's file name in the CA directory: one line for every
/// signature the CA makes, whatever it signs.
pub const AUDIT_LOG: &str = "audit.log";

/// Appends one line to the audit log (`TIME KIND key=value... signer=HOLDER`),
/// synced before the signed object is written out. `fields` is what was
/// signed, for whom, and its validity. A key file is named by the path
/// the operator gave (`--dir`), never by the locked directory's
/// `/proc/self/fd/N`, which says nothing once the command has ended.
pub fn audit(dir: &Path, now: u64, kind: &str, fields: &str, signer: &str) -> Result<()> {
    let clean = |s: &str| s.replace(|c: char| c.is_control() || c == ' ', "_");
    append_to(
        dir,
        AUDIT_LOG,
        &format!(
            "{now} {kind} {fields} signer={}\n",
            clean(&crate::cadir::shown(signer))
        ),
    )
}

/// Appends `line` to `dir/name`, as [`append`] does.
fn append_to(dir: &Path, name: &str, line: &str) -> Result<()> {
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("cannot open the CA's log {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o022 != 0 {
        bail!(
            "{} can be written by others; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_data())
        .with_context(|| format!("cannot write the CA's log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztssh_proto::cert::Serial;
    use ztssh_proto::keys::PublicKey;

    /// A directory of this test's own, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("ztssh-ca-issuance-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("dir");
            Self(path)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn each_licence_is_appended_and_nothing_is_rewritten() {
        let dir = TempDir::new("log");
        let body = LicenceBody {
            serial: Serial([1; 16]),
            server_id: "web1".into(),
            hostnames: vec!["web1".into(), "web1.example.com".into()],
            subca_key: PublicKey([2; 32]),
            noise_key: [3; 32],
            not_before: 100,
            not_after: 200,
            issuer: PublicKey([4; 32]),
        };
        let first = line(&body, 100);
        assert_eq!(
            first,
            format!(
                "100 licence {} server=web1 noise={} subca={} not_before=100 not_after=200 \
                 hostnames=web1,web1.example.com\n",
                "01".repeat(16),
                "03".repeat(32),
                "02".repeat(32)
            )
        );
        append(dir.path(), &first).expect("first");
        append(dir.path(), &line(&body, 150)).expect("second");
        let text = std::fs::read_to_string(dir.path().join(LOG)).expect("log");
        assert!(text.starts_with(&first));
        assert_eq!(text.lines().count(), 2);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(LOG))
                .expect("meta")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // Not through a symbolic link.
        let other = TempDir::new("other");
        std::fs::remove_file(dir.path().join(LOG)).expect("rm");
        std::os::unix::fs::symlink(other.path().join("x"), dir.path().join(LOG)).expect("link");
        assert!(append(dir.path(), &first).is_err());
    }
}
