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

use crate::sshd::reload::{run_bounded, run_bounded_input};

/// The nftables table (family `inet`) the guard owns unless
/// `--nft-table` names another; rollback deletes it.
pub const DEFAULT_TABLE: &str = "ztssh_sshd_guard";

/// The longest table name `--nft-table` takes (nftables' own limit is
/// 256 bytes; a name this long is a mistake).
const MAX_TABLE_NAME: usize = 64;

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
    /// The nftables table (family `inet`) the guard owns, checked by
    /// [`check_table`].
    pub table: String,
}

/// Checks a table name for `--nft-table`: an identifier nft reads as one
/// word in any position (a letter or `_`, then letters, digits and `_`),
/// so the name cannot end the ruleset's text early or add to it.
pub fn check_table(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || name.len() > MAX_TABLE_NAME
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "--nft-table {name:?} is not a table name: use a letter or _ and then letters, digits \
             and _, at most {MAX_TABLE_NAME} characters (the default is {DEFAULT_TABLE})"
        ));
    }
    Ok(())
}

/// The uid of `nobody`, which other hardening uses too (daemons dropping
/// privileges, NFS squashing): a guard that let it through would let all
/// of those through.
pub const NOBODY_UID: u32 = 65534;

/// Checks the user the guard lets through: never a shared account like
/// `nobody`.
pub fn check_user(user: &nix::unistd::User) -> Result<(), String> {
    if user.uid.as_raw() == NOBODY_UID || user.name == "nobody" {
        return Err(format!(
            "--nft-guard cannot let {} (uid {}) through: every process that drops privileges to nobody \
             could then borrow a live session's address. Run the proxy as a user of its own (useradd \
             --system ztssh) and set `user` in proxy.toml, or pass --proxy-user NAME",
            user.name,
            user.uid.as_raw()
        ));
    }
    Ok(())
}

impl Guard {
    /// The ruleset for sshd's `port`: loading it replaces the table whole.
    /// It fails closed: a connection's first packet (a SYN) from the range
    /// to sshd is accepted only when its socket's owner is positively the
    /// proxy's user, and refused otherwise, also when the kernel knows no
    /// owner (`meta skuid` matches no socket without a file on some
    /// kernels, so `!= uid` alone would let those through). Later packets
    /// of a connection pass: none exists without its SYN.
    pub fn ruleset(&self, port: u16) -> String {
        format!(
            "# Written by ztssh-proxy sshd-setup --nft-guard (docs/OPERATOR.md, section 11).\n\
             # Only the proxy's user ({name}, uid {uid}) may connect from upstream_source_range\n\
             # {range} to sshd's port {port}: no other local process can borrow a live\n\
             # session's address. Load it at boot (nft -f {file}); loading replaces the table.\n\
             table inet {table}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\tip saddr {range} tcp dport {port} tcp flags & (syn | ack) == syn meta skuid {uid} accept\n\
             \t\tip saddr {range} tcp dport {port} tcp flags & (syn | ack) == syn counter reject with tcp reset\n\
             \t}}\n\
             }}\n",
            name = self.user.name,
            uid = self.user.uid.as_raw(),
            range = self.range.trunc(),
            // A comment ends at a newline: none in the path may end it.
            file = self
                .file
                .display()
                .to_string()
                .replace(|c: char| c.is_control(), "?"),
            table = self.table,
        )
    }

    /// `nft -c` on `ruleset` (changes nothing).
    pub fn check_ruleset(&self, ruleset: &str) -> Result<(), String> {
        self.nft_input(&["-c", "-f", "-"], ruleset)
            .map(drop)
            .map_err(|e| format!("nft -c refuses the guard's ruleset: {e}"))
    }

    /// The table as `nft list table` prints it now, if it exists.
    pub fn current(&self) -> Result<Option<String>, String> {
        match self.nft(&["list", "table", "inet", &self.table]) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.contains("No such file or directory") => Ok(None),
            Err(e) => Err(format!("nft list table inet {}: {e}", self.table)),
        }
    }

    /// Loads the guard's ruleset for sshd's `port` (the table is replaced
    /// atomically). The bytes go to nft on its standard input: what root
    /// loads is what was checked, never a file read again.
    pub fn load(&self, port: u16) -> Result<(), String> {
        self.nft_input(&["-f", "-"], &self.ruleset(port))
            .map(drop)
            .map_err(|e| {
                format!(
                    "nft -f (the guard's ruleset for {}) failed: {e}",
                    self.file.display()
                )
            })
    }

    /// Puts the table back as `old` was (`None`: deletes it).
    pub fn restore(&self, old: Option<&str>) -> Result<(), String> {
        match old {
            None => match self.nft(&["delete", "table", "inet", &self.table]) {
                Err(e) if !e.contains("No such file or directory") => {
                    Err(format!("nft delete table inet {}: {e}", self.table))
                }
                _ => Ok(()),
            },
            Some(text) => {
                let table = &self.table;
                let body = format!("table inet {table}\ndelete table inet {table}\n{text}");
                self.nft_input(&["-f", "-"], &body)
                    .map(drop)
                    .map_err(|e| format!("restoring the old table inet {table}: {e}"))
            }
        }
    }

    fn nft(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(args);
        nft_output(run_bounded(&mut cmd, NFT_TIMEOUT)?)
    }

    fn nft_input(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(args);
        nft_output(run_bounded_input(
            &mut cmd,
            input.as_bytes().to_vec(),
            NFT_TIMEOUT,
        )?)
    }

    /// Refuses a ruleset file that another user could change: it is what
    /// root loads at boot (`include` in /etc/nftables.conf). Its directory
    /// and the file, when it exists, must be root's and writable by no
    /// one else, and the file must not be a symbolic link.
    pub fn check_location(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let file = &self.file;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let loose = |path: &Path, m: &std::fs::Metadata| {
            (m.uid() != 0 || m.mode() & 0o022 != 0).then(|| {
                format!(
                    "{} is owned by uid {} with mode {:o}: the guard's ruleset, which root loads at \
                     boot, must sit where only root can write (chown root and chmod go-w it, or \
                     pass another --nft-file)",
                    path.display(),
                    m.uid(),
                    m.mode() & 0o7777
                )
            })
        };
        let d = std::fs::metadata(dir).map_err(|e| {
            format!(
                "the directory of --nft-file {}: {e}; create it (root-owned) or pass another --nft-file",
                file.display()
            )
        })?;
        if let Some(e) = loose(dir, &d) {
            return Err(e);
        }
        match std::fs::symlink_metadata(file) {
            Ok(m) if m.file_type().is_symlink() => Err(format!(
                "{} is a symbolic link; point --nft-file at the real file",
                file.display()
            )),
            Ok(m) => loose(file, &m).map_or(Ok(()), Err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    }

    /// Whether the table holds exactly the guard's rules for sshd's `port`
    /// (counters aside): another rule in it (an `accept` for some other
    /// uid) would pass the probe, which tries one uid and one address.
    /// The expected rules are printed by the same nft, from a copy of the
    /// ruleset as a table of its own with no hook (inert), so the
    /// comparison does not depend on how an nft version prints a rule.
    fn matches(&self, port: u16, listing: &str) -> Result<Result<(), String>, String> {
        // A name no --nft-table can take (a dot; [`check_table`] refuses
        // one) and no other run shares (this process's id).
        let probe_table = format!("{}.expected.{}", self.table, std::process::id());
        let hook = "\t\ttype filter hook output priority filter; policy accept;\n";
        let ruleset = self.ruleset(port);
        let inert = ruleset
            .replace(hook, "")
            .replace(
                &format!("inet {} ", self.table),
                &format!("inet {probe_table} "),
            )
            .replace(
                &format!("inet {}\n", self.table),
                &format!("inet {probe_table}\n"),
            );
        self.nft_input(&["-f", "-"], &inert).map_err(|e| {
            format!("nft -f (the guard's rules as an inert table {probe_table}): {e}")
        })?;
        let expected = self.nft(&["list", "table", "inet", &probe_table]);
        let _ = self.nft(&["delete", "table", "inet", &probe_table]);
        let expected = canonical(&expected?);
        let header = listing
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("type "))
            .collect::<Vec<_>>();
        // The chain's hook, exactly as the ruleset sets it (nft prints the
        // priority by name, or by number with -n): another type, hook or
        // priority would run the rules elsewhere (at `raw`, before an
        // output DNAT to sshd's port, say).
        let hooked = matches!(
            header.as_slice(),
            [h] if *h == "type filter hook output priority filter; policy accept;"
                || *h == "type filter hook output priority 0; policy accept;"
        );
        let found = canonical(listing);
        if hooked && found == expected {
            return Ok(Ok(()));
        }
        let extra: Vec<&String> = found.iter().filter(|l| !expected.contains(l)).collect();
        let missing: Vec<&String> = expected.iter().filter(|l| !found.contains(l)).collect();
        Ok(Err(format!(
            "table inet {} holds other rules than the guard's (chain hooks: {header:?}; not the guard's: \
             {extra:?}; missing: {missing:?})",
            self.table
        )))
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
    pub fn probe(&self, upstream: SocketAddr) -> Result<Probe, String> {
        let src = self.probe_source();
        let proxy = self.user.uid.as_raw();
        // Another user: nobody (never the proxy's: [`check_user`]), or one
        // below it should that check ever be bypassed.
        let other = if proxy == NOBODY_UID {
            NOBODY_UID - 1
        } else {
            NOBODY_UID
        };
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
                         but not by the guard's rule (its counter stayed at {before}): the table inet {} \
                         is not in effect, or another rule refuses first",
                        self.table
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
        // The proxy's user: let through to sshd's banner. Refused, it is the
        // guard's doing only if its counter moved; else nothing listens
        // (sshd stopped or restarting), which says nothing against the
        // guard: the other user's refusal above is what it is for.
        let before = self.refused()?;
        let mut s = match connect_as(proxy, src, upstream) {
            Ok(s) => s,
            // Refused, not by the guard, with nothing listening on sshd's
            // port: sshd is down. With a listener there, some other rule
            // refuses the proxy's user (below: an error).
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && self.refused()? <= before
                    && crate::sshd::reload::listen_inodes(upstream.port()).is_empty() =>
            {
                return Ok(Probe {
                    report: format!(
                        "the nftables guard (table inet {}) refuses uid {other} from {src} to {upstream}; \
                         sshd is not listening at {upstream} (stopped or restarting), so the proxy's \
                         user's way through was not checked",
                        self.table
                    ),
                    sshd_listening: false,
                });
            }
            Err(e) => {
                return Err(format!(
                    "a connection from {src} to sshd at {upstream} made as the proxy's user {} (uid {proxy}) \
                     failed ({e}): the guard would cut the proxy off",
                    self.user.name
                ));
            }
        };
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
        Ok(Probe {
            report: format!(
                "the nftables guard (table inet {}) holds: from {src} to sshd at {upstream}, uid {other} is refused \
                 and the proxy's user {} (uid {proxy}) gets sshd's banner",
                self.table, self.user.name
            ),
            sshd_listening: true,
        })
    }

    /// [`Self::probe`], with sshd required to answer (right after setup
    /// reloaded it).
    pub fn probe_answered(&self, upstream: SocketAddr) -> Result<String, String> {
        let p = self.probe(upstream)?;
        if p.sshd_listening {
            Ok(p.report)
        } else {
            Err(format!("{}: sshd must be listening here", p.report))
        }
    }
}

/// What [`Guard::probe`] found when the guard refused the other user.
#[derive(Debug)]
pub struct Probe {
    /// What was checked.
    pub report: String,
    /// Whether sshd answered the proxy's user (false: nothing listened,
    /// and the guard did not refuse it).
    pub sshd_listening: bool,
}

/// nft's standard output, or its error.
fn nft_output(out: std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A table listing's lines that say what it does: trimmed, without the
/// `table` line, chain hooks and closing braces, counters as `counter`.
fn canonical(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty() || *l == "}" || l.starts_with("table ") || l.starts_with("type "))
        })
        .map(|l| match l.split_once("counter packets ") {
            Some((head, tail)) => {
                let rest = tail.splitn(4, ' ').nth(3).unwrap_or_default();
                format!("{head}counter {rest}").trim_end().to_owned()
            }
            None => l.to_owned(),
        })
        .collect()
}

/// What [`Guard::ensure`] found when the guard holds.
#[derive(Debug)]
pub struct Held {
    /// What the probe checked.
    pub report: String,
    /// The table was not in effect, and was loaded again from its file.
    pub reloaded: bool,
}

/// Why [`Guard::ensure`] could not make the guard hold.
#[derive(Debug)]
pub struct NotHeld {
    /// What the probe (and the reload, if one was tried) found.
    pub why: String,
    /// Set when a reload was tried, failed, and putting the old table
    /// back failed too.
    pub restore_failed: Option<String>,
}

/// The longest ruleset file read back (the guard's own is under 1 KiB).
const MAX_RULESET: u64 = 64 * 1024;

impl Guard {
    /// Probes the guard for sshd at `upstream`. When it does not hold and
    /// `repair` is set, loads the ruleset again and probes again; if that
    /// fails too, the table is put back as it was. The ruleset is loaded
    /// only while its file holds exactly what [`Self::ruleset`] makes from
    /// proxy.toml now: a file edited by hand, or left from an older
    /// proxy.toml, is reported, not loaded.
    pub fn ensure(&self, upstream: SocketAddr, repair: bool) -> Result<Held, NotHeld> {
        let not_held = |why: String| NotHeld {
            why,
            restore_failed: None,
        };
        let first = match self.holds(upstream) {
            Ok(Ok(report)) => {
                return Ok(Held {
                    report,
                    reloaded: false,
                });
            }
            Ok(Err(why)) => why,
            Err(e) => return Err(not_held(e)),
        };
        if !repair {
            return Err(not_held(first));
        }
        let old = self.current().map_err(not_held)?;
        let again = self
            .load_checked(upstream.port())
            .and_then(|()| self.holds(upstream)?);
        match again {
            Ok(report) => Ok(Held {
                report,
                reloaded: true,
            }),
            Err(why) => Err(NotHeld {
                why: format!(
                    "{first}\nLoading the guard's ruleset from {} again did not make it hold: {why}",
                    self.file.display()
                ),
                restore_failed: self.restore(old.as_deref()).err(),
            }),
        }
    }

    /// Whether the guard holds: the probe, and the table holding exactly
    /// the guard's rules. `Err` when nft itself fails (nothing can be
    /// told); `Ok(Err(why))` when it does not hold.
    fn holds(&self, upstream: SocketAddr) -> Result<Result<String, String>, String> {
        let probe = match self.probe(upstream) {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let Some(listing) = self.current()? else {
            return Ok(Err(format!("table inet {} is gone", self.table)));
        };
        Ok(self
            .matches(upstream.port(), &listing)?
            .map(|()| probe.report))
    }

    /// Loads the ruleset after checking that its file holds exactly the
    /// ruleset for sshd's `port` and sits where only root can write. What
    /// is loaded is the bytes checked, on nft's standard input.
    fn load_checked(&self, port: u16) -> Result<(), String> {
        self.check_location()?;
        let expected = self.ruleset(port);
        let found = ztssh_keyfile::read_regular(&self.file, MAX_RULESET).map_err(|e| {
            format!(
                "{e}. Re-run `ztssh-proxy sshd-setup --nft-guard` to write the guard's ruleset and load it"
            )
        })?;
        if found != expected.as_bytes() {
            return Err(format!(
                "{} does not hold the ruleset made from proxy.toml now (it was edited, proxy.toml's \
                 upstream, upstream_source_range or user changed since sshd-setup wrote it, or this \
                 check's --nft-table or --proxy-user differs from sshd-setup's), so it was not \
                 loaded. Re-run `ztssh-proxy sshd-setup --nft-guard` to write and load the right one",
                self.file.display()
            ));
        }
        self.load(port)
    }

    /// The result of a check in the text format of node_exporter's
    /// textfile collector: whether the guard holds, whether this check
    /// had to load it again, and when it ran (`now`, Unix seconds). A
    /// check that could not run at all reports `holds` 0.
    pub fn textfile(table: &str, holds: bool, reloaded: bool, now: u64) -> String {
        let flag = |b: bool| u8::from(b);
        format!(
            "# HELP ztssh_sshd_guard_holds 1 when the last sshd-guard-check found the nftables guard in \
             effect (another user refused, the proxy's user let through), else 0.\n\
             # TYPE ztssh_sshd_guard_holds gauge\n\
             ztssh_sshd_guard_holds{{table=\"{table}\"}} {}\n\
             # HELP ztssh_sshd_guard_reloaded 1 when the last sshd-guard-check found the guard's table \
             gone or not holding and loaded it again from its file.\n\
             # TYPE ztssh_sshd_guard_reloaded gauge\n\
             ztssh_sshd_guard_reloaded{{table=\"{table}\"}} {}\n\
             # HELP ztssh_sshd_guard_last_check_timestamp_seconds When the last sshd-guard-check ran \
             (Unix time).\n\
             # TYPE ztssh_sshd_guard_last_check_timestamp_seconds gauge\n\
             ztssh_sshd_guard_last_check_timestamp_seconds{{table=\"{table}\"}} {now}\n",
            flag(holds),
            flag(reloaded),
        )
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
            table: DEFAULT_TABLE.into(),
        };
        let text = g.ruleset(22);
        // Fails closed: a SYN is accepted for the proxy's uid alone, and
        // every other SYN (no owner known included) refused.
        assert!(
            text.contains(
                "\t\tip saddr 127.77.0.0/16 tcp dport 22 tcp flags & (syn | ack) == syn meta skuid 0 accept\n\
                 \t\tip saddr 127.77.0.0/16 tcp dport 22 tcp flags & (syn | ack) == syn counter reject with tcp reset\n"
            ),
            "{text}"
        );
        assert!(!text.contains("!="), "{text}");
        assert!(text.contains(&format!("delete table inet {DEFAULT_TABLE}\n")));
        assert_eq!(g.probe_source(), Ipv4Addr::new(127, 77, 255, 254));
    }

    #[test]
    fn nobody_is_refused_as_the_proxys_user() {
        let user = |name: &str, uid: u32| nix::unistd::User {
            name: name.into(),
            passwd: Default::default(),
            uid: nix::unistd::Uid::from_raw(uid),
            gid: nix::unistd::Gid::from_raw(uid),
            gecos: Default::default(),
            dir: "/".into(),
            shell: "/bin/false".into(),
        };
        for (name, uid) in [("nobody", 65534), ("renamed", 65534), ("nobody", 999)] {
            let e = check_user(&user(name, uid)).expect_err(name);
            assert!(e.contains("--proxy-user"), "{e}");
        }
        assert_eq!(check_user(&user("ztssh", 998)), Ok(()));
    }

    #[test]
    fn table_names_are_single_nft_identifiers() {
        for good in ["ztssh_sshd_guard", "_t", "guard2", &"a".repeat(64)] {
            assert_eq!(check_table(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "2guard",
            "a b",
            "t}",
            "t;flush ruleset",
            "t\nflush ruleset",
            "t.x",
            "ätable",
            &"a".repeat(65),
        ] {
            let e = check_table(bad).expect_err(bad);
            assert!(
                e.contains("--nft-table") && e.contains(DEFAULT_TABLE),
                "{e}"
            );
        }
    }

    #[test]
    fn the_textfile_is_node_exporters_format_with_the_table_label() {
        let text = Guard::textfile("t1", false, true, 1_765_000_000);
        for line in [
            "ztssh_sshd_guard_holds{table=\"t1\"} 0",
            "ztssh_sshd_guard_reloaded{table=\"t1\"} 1",
            "ztssh_sshd_guard_last_check_timestamp_seconds{table=\"t1\"} 1765000000",
            "# TYPE ztssh_sshd_guard_holds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with('\n'));
        assert!(
            Guard::textfile("t1", true, false, 1)
                .contains("ztssh_sshd_guard_holds{table=\"t1\"} 1\n")
        );
    }

    #[test]
    fn the_counter_is_read_from_nfts_listing() {
        let listing = "table inet ztssh_sshd_guard {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tip saddr 127.77.0.0/16 tcp dport 22 meta skuid != 0 counter packets 17 bytes 1020 reject with tcp reset\n\t}\n}\n";
        assert_eq!(refused_count(listing), 17);
        assert_eq!(refused_count("table inet ztssh_sshd_guard {\n}\n"), 0);
    }
}
