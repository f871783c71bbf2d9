//! `sshd-setup --nft-guard`: an nftables table of its own that lets only
//! the proxy's user originate connections from `upstream_source_range` to
//! sshd's port, so no other local process can bind a live session's
//! loopback address and log in with a copy of that user's key (sshd before
//! 9.4 has no `%C`, so the AuthorizedKeysCommand can bind a key to an
//! address but not to a connection).
//!
//! The rule is kept in a file (`--nft-file`, written and rolled back like
//! the drop-in, and loaded at boot by the operator) and loaded with
//! `nft -f`, which replaces the table atomically. [`probe`] checks that it
//! holds with two real connections to sshd from an address in the range:
//! one made as another user must be reset, one made as the proxy's user
//! must get sshd's banner.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::sshd::reload::run_bounded;

/// The nftables table (family `inet`) the guard owns; rollback deletes it.
pub const TABLE: &str = "ztssh_sshd_guard";

const NFT_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The guard sshd-setup installs.
pub struct Guard {
    /// The `nft` binary.
    pub nft: PathBuf,
    /// The file the ruleset is kept in.
    pub file: PathBuf,
    /// `upstream_source_range`.
    pub range: ipnet::Ipv4Net,
    /// The user the proxy connects to sshd as.
    pub user: nix::unistd::User,
}

impl Guard {
    /// The ruleset for sshd's `port`: loading it replaces the table whole.
    pub fn ruleset(&self, port: u16) -> String {
        format!(
            "# Written by ztssh-proxy sshd-setup --nft-guard (docs/OPERATOR.md, section 11).\n\
             # Only the proxy's user ({name}, uid {uid}) may connect from upstream_source_range\n\
             # {range} to sshd's port {port}: no other local process can borrow a live\n\
             # session's address. Load it at boot (nft -f {file}); loading replaces the table.\n\
             table inet {TABLE}\n\
             delete table inet {TABLE}\n\
             table inet {TABLE} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\tip saddr {range} tcp dport {port} meta skuid != {uid} counter reject with tcp reset\n\
             \t}}\n\
             }}\n",
            name = self.user.name,
            uid = self.user.uid.as_raw(),
            range = self.range.trunc(),
            file = self.file.display(),
        )
    }

    /// `nft -c` on the ruleset in `file` (changes nothing).
    pub fn check_file(&self, file: &Path) -> Result<(), String> {
        self.nft(&["-c", "-f"], Some(file))
            .map(drop)
            .map_err(|e| format!("nft -c refuses the guard's ruleset: {e}"))
    }

    /// The table as `nft list table` prints it now, if it exists.
    pub fn current(&self) -> Result<Option<String>, String> {
        match self.nft(&["list", "table", "inet", TABLE], None) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.contains("No such file or directory") => Ok(None),
            Err(e) => Err(format!("nft list table inet {TABLE}: {e}")),
        }
    }

    /// Loads the ruleset file (the table is replaced atomically).
    pub fn load(&self) -> Result<(), String> {
        self.nft(&["-f"], Some(&self.file))
            .map(drop)
            .map_err(|e| format!("nft -f {} failed: {e}", self.file.display()))
    }

    /// Puts the table back as `old` was (`None`: deletes it).
    pub fn restore(&self, old: Option<&str>) -> Result<(), String> {
        match old {
            None => match self.nft(&["delete", "table", "inet", TABLE], None) {
                Err(e) if !e.contains("No such file or directory") => {
                    Err(format!("nft delete table inet {TABLE}: {e}"))
                }
                _ => Ok(()),
            },
            Some(text) => {
                let path = self.scratch("restore");
                let body = format!("table inet {TABLE}\ndelete table inet {TABLE}\n{text}");
                ztssh_keyfile::write_atomic(
                    &path,
                    body.as_bytes(),
                    0o600,
                    ztssh_keyfile::Existing::Replace,
                )
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                let done = self.nft(&["-f"], Some(&path)).map(drop);
                let _ = std::fs::remove_file(&path);
                done.map_err(|e| format!("restoring the old table inet {TABLE}: {e}"))
            }
        }
    }

    fn nft(&self, args: &[&str], file: Option<&Path>) -> Result<String, String> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(args);
        if let Some(f) = file {
            cmd.arg(f);
        }
        let out = run_bounded(&mut cmd, NFT_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// A scratch file for `nft -f` beside `--nft-file`, in its (root's)
    /// directory: a name in the shared /tmp could be taken first by any
    /// local user (a directory there, at the next pids, made every check
    /// and rollback of the guard fail).
    pub fn scratch(&self, what: &str) -> PathBuf {
        let name = self
            .file
            .file_name()
            .map_or_else(|| "sshd-guard".into(), |n| n.to_string_lossy().into_owned());
        self.file
            .with_file_name(format!(".{name}.{what}-{}.nft", std::process::id()))
    }

    /// The packets the guard's rule has refused so far (its counter); 0
    /// when the table is not loaded.
    fn refused(&self) -> Result<u64, String> {
        Ok(self.current()?.as_deref().map_or(0, refused_count))
    }

    /// The address in the range the probes connect from: its last host.
    pub fn probe_source(&self) -> Ipv4Addr {
        let last = u32::from(self.range.broadcast());
        Ipv4Addr::from(last.saturating_sub(1).max(u32::from(self.range.network())))
    }

    /// Checks that the rule holds for sshd at `upstream`: a connection
    /// from the range made as another user is refused, and one made as the
    /// proxy's user gets sshd's banner. Returns what was checked.
    pub fn probe(&self, upstream: SocketAddr) -> Result<String, String> {
        let src = self.probe_source();
        let proxy = self.user.uid.as_raw();
        // Another user: nobody, or one below it when the proxy is nobody.
        let other = if proxy == 65534 { 65533 } else { 65534 };
        // The refusal must be this table's: another rule that refuses uid
        // 65534 alone (an operator's own hardening) would otherwise pass
        // the probe while the table is gone and every other user gets in.
        let before = self.refused()?;
        match connect_as(other, src, upstream) {
            Ok(_) => {
                return Err(format!(
                    "a connection from {src} to sshd at {upstream} made as uid {other} was accepted: \
                     the guard's rule is not in effect"
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let after = self.refused()?;
                if after <= before {
                    return Err(format!(
                        "a connection from {src} to sshd at {upstream} made as uid {other} was refused, \
                         but not by the guard's rule (its counter stayed at {before}): the table inet {TABLE} \
                         is not in effect, or another rule refuses first"
                    ));
                }
            }
            Err(e) => {
                return Err(format!(
                    "a connection from {src} to sshd at {upstream} made as uid {other} failed \
                     otherwise than refused ({e}); cannot tell whether the guard holds"
                ));
            }
        }
        let mut s = connect_as(proxy, src, upstream).map_err(|e| {
            format!(
                "a connection from {src} to sshd at {upstream} made as the proxy's user {} (uid {proxy}) \
                 failed ({e}): the guard would cut the proxy off",
                self.user.name
            )
        })?;
        s.set_read_timeout(Some(PROBE_TIMEOUT))
            .map_err(|e| format!("probe: {e}"))?;
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner).map_err(|e| {
            format!("sshd at {upstream} sent no banner to the proxy's user's probe from {src}: {e}")
        })?;
        if &banner != b"SSH-2.0-" {
            return Err(format!(
                "sshd at {upstream} answered the probe from {src} with {:?}, not an SSH banner",
                String::from_utf8_lossy(&banner)
            ));
        }
        Ok(format!(
            "the nftables guard (table inet {TABLE}) holds: from {src} to sshd at {upstream}, uid {other} is refused \
             and the proxy's user {} (uid {proxy}) gets sshd's banner",
            self.user.name
        ))
    }
}

/// The guard's counter in `nft list table` text: the sum of every
/// `counter packets N` (the table has one rule with a counter).
fn refused_count(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A TCP connection from `src` to `dst` whose socket belongs to `uid`
/// (nftables' `meta skuid`). The socket is made on a thread of its own
/// whose filesystem uid (which the kernel gives a new socket) is `uid`;
/// setfsuid(2) changes only the calling thread, not the process.
fn connect_as(uid: u32, src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let before = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
                let socket = tokio::net::TcpSocket::new_v4();
                nix::unistd::setfsuid(before);
                let socket = socket?;
                socket.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let stream = rt.block_on(async {
                    tokio::time::timeout(PROBE_TIMEOUT, socket.connect(dst))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
                })?;
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                Ok(stream)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the probe's thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_the_range_the_port_and_the_proxys_uid() {
        let g = Guard {
            nft: "/usr/sbin/nft".into(),
            file: "/etc/ztssh/sshd-guard.nft".into(),
            range: "127.77.0.0/16".parse().expect("range"),
            user: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
                .expect("getpwuid")
                .expect("root"),
        };
        let text = g.ruleset(22);
        assert!(
            text.contains(
                "ip saddr 127.77.0.0/16 tcp dport 22 meta skuid != 0 counter reject with tcp reset"
            ),
            "{text}"
        );
        assert!(text.contains(&format!("delete table inet {TABLE}\n")));
        assert_eq!(g.probe_source(), Ipv4Addr::new(127, 77, 255, 254));
        let scratch = g.scratch("check");
        assert_eq!(
            scratch.parent(),
            Some(Path::new("/etc/ztssh")),
            "{scratch:?}"
        );
    }

    #[test]
    fn the_counter_is_read_from_nfts_listing() {
        let listing = "table inet ztssh_sshd_guard {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tip saddr 127.77.0.0/16 tcp dport 22 meta skuid != 0 counter packets 17 bytes 1020 reject with tcp reset\n\t}\n}\n";
        assert_eq!(refused_count(listing), 17);
        assert_eq!(refused_count("table inet ztssh_sshd_guard {\n}\n"), 0);
    }
}
