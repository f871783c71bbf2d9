//! Zero standing keys in tests: sshd's `AuthorizedKeysCommand` installed
//! where sshd accepts it, and a local account to log in as.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{bin, run_bounded, stderr, wait_until};

/// The local account the zero-standing-keys tests log in as (created if
/// missing).
pub const ACCOUNT: &str = "ztsshe2e";

/// A copy of the release `ztssh-proxy` in a root-owned directory that
/// only root can write (sshd refuses an `AuthorizedKeysCommand` anywhere
/// else, /tmp included), and a root-owned run directory for the proxy's
/// socket that the command's user can reach. Both are removed on drop.
pub struct Installed {
    /// The installed binary.
    pub command: PathBuf,
    /// The directory for the socket.
    pub run_dir: PathBuf,
    libexec: PathBuf,
}

impl Installed {
    /// Installs under `/usr/local/libexec/ztssh-tests-PID-N/` and
    /// `/run/ztssh-tests-PID-N/`, mode 0755.
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "ztssh-tests-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let libexec = PathBuf::from("/usr/local/libexec").join(&tag);
        let run_dir = PathBuf::from("/run").join(&tag);
        for d in [&libexec, &run_dir] {
            fs::create_dir_all(d)
                .unwrap_or_else(|e| panic!("create {}: {e} (run as root)", d.display()));
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        }
        let command = libexec.join("ztssh-proxy");
        fs::copy(bin("ztssh-proxy"), &command).expect("install ztssh-proxy");
        fs::set_permissions(&command, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        Self {
            command,
            run_dir,
            libexec,
        }
    }

    /// The proxy's socket path.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("akc.sock")
    }
}

impl Default for Installed {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.libexec);
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

fn account_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Creates the local account `name` if it is missing (no home, /bin/sh),
/// with a password field sshd does not treat as locked. Idempotent, and
/// safe when several test processes race (useradd takes a lock and may
/// fail; it is tried again).
pub fn ensure_account(name: &str) {
    wait_until(Duration::from_secs(30), "useradd", || {
        account_exists(name)
            || run_bounded(
                Command::new("useradd").args(["-M", "-d", "/", "-s", "/bin/sh", name]),
                Duration::from_secs(10),
            )
            .status
            .success()
    });
    // "!" (useradd's default) is a locked account to sshd without PAM.
    wait_until(Duration::from_secs(30), "usermod", || {
        run_bounded(
            Command::new("usermod").args(["-p", "*", name]),
            Duration::from_secs(10),
        )
        .status
        .success()
    });
}

/// Asserts that sshd refused a login (`Permission denied`).
pub fn refused(out: &std::process::Output, what: &str) {
    assert!(!out.status.success(), "{what} should have been refused");
    assert!(
        stderr(out).contains("Permission denied"),
        "{what}: {}",
        stderr(out)
    );
}
