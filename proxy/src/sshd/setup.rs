//! `ztssh-proxy sshd-setup`: puts the lines `sshd-config` prints into a
//! drop-in that sshd_config includes, checks the result, reloads sshd,
//! checks a login, and restores the old files exactly on any failure.
//!
//! Order (each step only once the previous one passed):
//! 1. read-only checks, before anything changes: sshd_config includes the
//!    drop-in (or `--add-include`), `sshd -t` passes on the current files,
//!    the `AuthorizedKeysCommand` runs as its user and reaches the proxy,
//!    (clap requires a login check or `--skip-login-check`); a dry run
//!    also runs step 3 on a copy of the new files (`shadow.rs`);
//! 2. backups of every file that will change, then atomic writes;
//! 3. `sshd -t`, then `sshd -T`: every line of the drop-in is in effect
//!    (sshd keeps the first value it reads, so an earlier line can win);
//! 4. reload ([`crate::sshd::reload`]): a new listening socket that answers
//!    with an SSH banner;
//! 5. the login check (a real login through ztssh, given by the operator).
//!
//! A failure in 2–5 restores the files (contents, mode, owner; a new file is
//! removed) and, if sshd was reloaded, reloads it again.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use crate::config::AuthorizedKeysConfig;
use crate::sshd::config_lines as sshd_config;
pub use crate::sshd::guard::Guard;
use crate::sshd::include;
use crate::sshd::reload::{self as sshd_reload, Reload, run_bounded};

/// Exit code: the host is not ready; nothing was changed.
pub const EXIT_NOT_READY: u8 = 65;
/// Exit code: a step failed after the change; the old files are back.
pub const EXIT_ROLLED_BACK: u8 = 1;
/// Exit code: a step failed and so did the rollback: act by hand.
pub const EXIT_ROLLBACK_FAILED: u8 = 2;

const SSHD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to set up.
pub struct Options {
    /// sshd's main config file.
    pub sshd_config: PathBuf,
    /// The drop-in file to write.
    pub drop_in: PathBuf,
    /// Add an `Include` of the drop-in's directory at the top of
    /// sshd_config when none reads it.
    pub add_include: bool,
    /// The sshd binary (`sshd -t`, `sshd -T`).
    pub sshd: PathBuf,
    /// The file whose `SSHD_OPTS` sshd's unit passes to sshd (Debian's
    /// /etc/default/ssh; [`crate::sshd::defaults`]).
    pub sshd_defaults: PathBuf,
    /// Where systemd's unit files for sshd are (`ssh.service`,
    /// `ssh.service.d/*.conf`; [`crate::sshd::unit`]).
    pub systemd_dirs: Vec<PathBuf>,
    /// How to reload sshd.
    pub reload: Reload,
    /// Where copies of the old files go.
    pub backup_dir: PathBuf,
    /// A shell command that logs in through ztssh (exit 0 = it works).
    pub login_check: Option<String>,
    /// `--skip-login-check` was given.
    pub skip_login_check: bool,
    /// How long the login check may take.
    pub login_timeout: Duration,
    /// Print the change; change nothing.
    pub dry_run: bool,
    /// The nftables guard (`--nft-guard`), installed with the rest.
    pub guard: Option<Guard>,
}

/// What the proxy's config says sshd must do.
pub struct Target<'a> {
    /// The lines for the drop-in (`sshd_config::lines`).
    pub lines: &'a str,
    /// The `AuthorizedKeysCommand` binary.
    pub command: &'a Path,
    /// Its socket and user.
    pub akc: &'a AuthorizedKeysConfig,
    /// Where sshd listens for the proxy.
    pub upstream: std::net::SocketAddr,
}

/// A failed setup: the exit code and what to tell the operator.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: u8,
    /// The message.
    pub message: String,
}

fn not_ready(message: String) -> Failure {
    Failure {
        code: EXIT_NOT_READY,
        message: format!("{message}\nNothing was changed."),
    }
}

/// A file as it was, to be put back exactly.
#[derive(Clone, PartialEq, Eq)]
struct FileState {
    bytes: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// One file to replace.
struct Change {
    path: PathBuf,
    before: Option<FileState>,
    after: Vec<u8>,
}

/// A config file sshd-setup may replace (sshd_config, the drop-in, the
/// guard's nft file), read with the cap of every config file it reads.
fn read_state(path: &Path) -> Result<Option<FileState>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        Ok(_) => {}
    }
    let bytes = ztssh_keyfile::read_regular(path, include::MAX_CONFIG_FILE)?;
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(FileState {
        bytes,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    }))
}

/// Every option sshd starts with beyond its config files: `SSHD_OPTS`,
/// then what a systemd unit or drop-in adds, then what the running sshd's
/// command line holds; a guarded keyword in any is refused.
fn sshd_opts(target: &Target, opts: &Options) -> Result<Vec<String>, String> {
    let guarded = guarded_keys(target.lines);
    let mut extra =
        crate::sshd::defaults::sshd_opts(&opts.sshd_defaults, &opts.sshd_config, &guarded)?;
    extra.extend(crate::sshd::unit::sshd_opts(
        &opts.systemd_dirs,
        &opts.sshd_defaults,
        &opts.sshd_config,
        &guarded,
    )?);
    // What the running sshd was really started with, whatever the files
    // above say: a reload keeps those options.
    let running =
        crate::sshd::running::sshd_opts(&opts.reload, &opts.sshd, &opts.sshd_config, &guarded)?;
    let known: Vec<Vec<String>> = option_groups(&extra).map(<[String]>::to_vec).collect();
    for group in option_groups(&running) {
        if !known.iter().any(|k| k.as_slice() == group) {
            extra.extend_from_slice(group);
        }
    }
    Ok(extra)
}

/// The options [`crate::sshd::defaults::options`] returns, one option
/// (with its value) at a time: `-4` and `-6` alone, every other with the
/// word after it.
fn option_groups(flat: &[String]) -> impl Iterator<Item = &[String]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = flat.get(i)?;
        let n = if matches!(first.as_str(), "-4" | "-6") {
            1
        } else {
            2
        };
        let group = &flat[i..(i + n).min(flat.len())];
        i += n;
        Some(group)
    })
}

/// Runs the setup; returns the report for stdout.
pub fn run(target: &Target, opts: &Options) -> Result<String, Failure> {
    let sshd = Sshd {
        bin: &opts.sshd,
        config: &opts.sshd_config,
        extra: sshd_opts(target, opts).map_err(not_ready)?,
    };
    let changes = plan(target, opts)?;
    if changes.is_empty() {
        // In place already, but a Match block, an earlier drop-in or an
        // SSHD_OPTS option may have been added since: checked exactly as
        // after a change.
        let overridden = match_overrides(&opts.sshd_config, target.lines)?;
        if !overridden.is_empty() {
            return Err(match_failure(&overridden));
        }
        let verified = verify(&sshd, target, opts).map_err(|e| {
            not_ready(format!(
                "{} already holds the drop-in's lines, but {e}",
                opts.drop_in.display()
            ))
        })?;
        let guard = match &opts.guard {
            None => String::new(),
            Some(g) if opts.dry_run => match g.ensure(target.upstream, false) {
                Ok(held) => format!(" {}.", held.report),
                Err(e) => format!(
                    " The guard's table would be loaded from {}: {}.",
                    g.file.display(),
                    e.why
                ),
            },
            Some(g) => format!(" {}.", guard_only(g, target.upstream)?),
        };
        let methods = if opts.dry_run {
            String::new()
        } else {
            let checked = crate::sshd::methods::check(
                target.upstream,
                probe_as(opts),
                &allowed_methods(target),
            )
            .map_err(|e| {
                not_ready(format!(
                    "{} already holds the drop-in's lines, but {e}",
                    opts.drop_in.display()
                ))
            })?;
            format!(" {checked}.")
        };
        return Ok(format!(
            "sshd-setup: nothing to change: {} already holds these lines and {} includes it; \
             sshd was not reloaded.{guard}{methods}\n{}\n",
            opts.drop_in.display(),
            opts.sshd_config.display(),
            verified
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if opts.dry_run {
        let mut out = String::from("sshd-setup: dry run: nothing was changed. The change:\n");
        for c in &changes {
            let before = c.before.as_ref().map(|b| (b.bytes.as_slice(), b.mode));
            out.push_str(&sshd_config::diff(&c.path, before, &c.after));
        }
        return match prechecks(&sshd, target, opts)
            .and_then(|c| dry_check(&sshd, &changes, target, opts, c))
        {
            Ok(checked) => Ok(format!(
                "{out}Checks that pass now: {checked}.\nThen: sshd -t and sshd -T on the new files, {}, {}{}.\n",
                opts.reload.describe(),
                guard_text(opts, target.upstream),
                login_check_text(opts)
            )),
            Err(f) => Err(Failure {
                code: f.code,
                message: format!("{out}{}", f.message),
            }),
        };
    }
    let prechecked = prechecks(&sshd, target, opts)?;
    let old_listen = effective(&sshd, None)
        .map(|t| listen_addresses(&t))
        .map_err(not_ready)?;
    catch_signals().map_err(not_ready)?;
    let backups = backup(&changes, &opts.backup_dir).map_err(not_ready)?;
    let mut done = vec![format!("before: {prechecked}")];
    done.extend(backups);
    let mut reloaded = false;
    let mut table: Option<Option<String>> = None;
    let applied = apply(
        &sshd,
        &changes,
        target,
        opts,
        &mut done,
        &mut reloaded,
        &mut table,
    );
    match applied.and_then(|()| interrupted()) {
        Ok(()) => Ok(format!(
            "sshd-setup: applied.\n{}\n",
            done.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Err(why) => Err(rollback(
            &changes,
            opts,
            &old_listen,
            reloaded,
            table.as_ref().map(Option::as_deref),
            &done,
            &why,
        )),
    }
}

/// The signal that interrupted the setup (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set with [`SIGNAL`], to stop a running login check.
static STOP: AtomicBool = AtomicBool::new(false);

/// From here on SIGINT, SIGTERM and SIGHUP no longer end the process: they
/// make the setup stop at the next step and roll back. (Handlers do not
/// survive exec: sshd -t and the login check run with the defaults.)
fn catch_signals() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("sshd-setup-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot catch signals: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let kinds = [
                    (SignalKind::interrupt(), 2),
                    (SignalKind::terminate(), 15),
                    (SignalKind::hangup(), 1),
                ];
                let mut streams = Vec::new();
                for (kind, number) in kinds {
                    match signal(kind) {
                        Ok(s) => streams.push((s, number)),
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot catch signal {number}: {e}")));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(()));
                let [(a, na), (b, nb), (c, nc)] = &mut streams[..] else {
                    return;
                };
                loop {
                    let number = tokio::select! {
                        _ = a.recv() => *na,
                        _ = b.recv() => *nb,
                        _ = c.recv() => *nc,
                    };
                    let _ = SIGNAL.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst);
                    STOP.store(true, Ordering::SeqCst);
                }
            });
        })
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "cannot catch signals: no answer".to_owned())?
}

/// An error once a signal arrived.
fn interrupted() -> Result<(), String> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => Ok(()),
        n => {
            let name = match n {
                2 => "SIGINT",
                15 => "SIGTERM",
                _ => "SIGHUP",
            };
            Err(format!("interrupted by {name}"))
        }
    }
}

/// The methods the drop-in's `AuthenticationMethods` line allows
/// (`publickey`, and any `--allow-auth-method` keeps).
fn allowed_methods<'a>(target: &'a Target) -> Vec<&'a str> {
    target
        .lines
        .lines()
        .find_map(|l| l.strip_prefix("AuthenticationMethods "))
        .map_or_else(|| vec!["publickey"], |m| m.split_whitespace().collect())
}

/// Who asks sshd which methods it offers ([`crate::sshd::methods`]): with
/// the nftables guard, the proxy's user from the guard's probe address
/// (the only one sshd's port lets in); without, this process.
fn probe_as(opts: &Options) -> crate::sshd::methods::As {
    match &opts.guard {
        Some(g) => crate::sshd::methods::As {
            ids: Some((g.user.uid.as_raw(), g.user.gid.as_raw())),
            source: Some(std::net::IpAddr::V4(g.probe_source())),
        },
        None => crate::sshd::methods::As {
            ids: None,
            source: None,
        },
    }
}

fn login_check_text(opts: &Options) -> String {
    match (&opts.login_check, opts.skip_login_check) {
        (Some(c), _) => format!("the login check `{c}`"),
        (None, true) => "no login check (--skip-login-check)".into(),
        (None, false) => {
            "the login check (give --login-check COMMAND, or --skip-login-check, to the real run)"
                .into()
        }
    }
}

/// The dry run's `sshd -t` and `sshd -T`, on a copy of the new files
/// (`shadow`): whatever the real run would refuse after writing, the dry
/// run refuses before.
fn dry_check(
    sshd: &Sshd,
    changes: &[Change],
    target: &Target,
    opts: &Options,
    checked: String,
) -> Result<String, Failure> {
    let main = match changes.iter().find(|c| c.path == opts.sshd_config) {
        Some(c) => c.after.clone(),
        None => read_state(&opts.sshd_config)
            .map_err(not_ready)?
            .map(|s| s.bytes)
            .unwrap_or_default(),
    };
    let copy =
        crate::sshd::shadow::make(&String::from_utf8_lossy(&main), &opts.drop_in, target.lines)
            .map_err(not_ready)?;
    let on_copy = Sshd {
        bin: sshd.bin,
        config: &copy.config,
        extra: sshd.extra.clone(),
    };
    verify(&on_copy, target, opts).map_err(|why| {
        not_ready(format!(
            "the real run would write the files and then roll back: {why}"
        ))
    })?;
    Ok(format!(
        "{checked}; sshd -t and sshd -T on a copy of the new files show every line of the drop-in in effect"
    ))
}

/// What the dry run says the guard step will do.
fn guard_text(opts: &Options, upstream: std::net::SocketAddr) -> String {
    match &opts.guard {
        Some(g) => format!(
            ", nft -f {} (table inet {}) and its probes from {} to {upstream} (another user refused, the \
             proxy's user {} answered), ",
            g.file.display(),
            g.table,
            g.probe_source(),
            g.user.name
        ),
        None => ", no nftables guard (--nft-guard), ".into(),
    }
}

/// The drop-in is in place, but the guard's table may be gone (nftables
/// rules do not survive a reboot unless loaded at boot): probe it, and
/// load it (restoring the old table on failure) when it does not hold.
fn guard_only(g: &Guard, upstream: std::net::SocketAddr) -> Result<String, Failure> {
    match g.ensure(upstream, true) {
        Ok(held) if held.reloaded => Ok(format!(
            "The guard's table was loaded from {}: {}",
            g.file.display(),
            held.report
        )),
        Ok(held) => Ok(held.report),
        Err(crate::sshd::guard::NotHeld {
            why,
            restore_failed: None,
        }) => Err(Failure {
            code: EXIT_ROLLED_BACK,
            message: format!(
                "sshd-setup failed: {why}\nRolled back: the table inet {} is as it was.",
                g.table
            ),
        }),
        Err(crate::sshd::guard::NotHeld {
            why,
            restore_failed: Some(e),
        }) => Err(Failure {
            code: EXIT_ROLLBACK_FAILED,
            message: format!(
                "sshd-setup failed: {why}\nTHE ROLLBACK FAILED: {e}\nDelete the table by hand: nft delete table inet {}",
                g.table
            ),
        }),
    }
}

/// The files to change (none when all is in place already).
fn plan(target: &Target, opts: &Options) -> Result<Vec<Change>, Failure> {
    for path in [&opts.sshd_config, &opts.drop_in] {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(not_ready(format!(
                "{} is a symbolic link; sshd-setup replaces files whole and would replace the link, \
                 not its target. Point --sshd-config or --drop-in at the real file",
                path.display()
            )));
        }
    }
    let cfg = read_state(&opts.sshd_config)
        .map_err(not_ready)?
        .ok_or_else(|| not_ready(format!("{} does not exist", opts.sshd_config.display())))?;
    let dir = opts
        .drop_in
        .parent()
        .filter(|d| d.is_dir())
        .ok_or_else(|| {
            not_ready(format!(
                "the drop-in's directory for {} does not exist; create it (root-owned, mode 755) or pass --drop-in",
                opts.drop_in.display()
            ))
        })?;
    let mut changes = Vec::new();
    let text = String::from_utf8_lossy(&cfg.bytes);
    let included = sshd_config::includes(&text, &opts.drop_in).map_err(|e| {
        not_ready(format!(
            "{}: {e}. sshd-setup must know exactly which files sshd reads; fix the line",
            opts.sshd_config.display()
        ))
    })?;
    if !included {
        if !opts.add_include {
            return Err(not_ready(format!(
                "{} has no Include that reads {} before its first Match block, so sshd would never see the \
                 drop-in. Add `Include {}/*.conf` at its top (sshd keeps the first value it reads), or pass \
                 --add-include to have it added (the old file is backed up)",
                opts.sshd_config.display(),
                opts.drop_in.display(),
                dir.display()
            )));
        }
        let mut after = format!(
            "# Added by ztssh-proxy sshd-setup: drop-ins first, since sshd keeps the first value it reads.\n\
             Include {}/*.conf\n",
            dir.display()
        )
        .into_bytes();
        after.extend_from_slice(&cfg.bytes);
        changes.push(Change {
            path: opts.sshd_config.clone(),
            before: Some(cfg),
            after,
        });
    }
    let old = read_state(&opts.drop_in).map_err(not_ready)?;
    if old.as_ref().map(|s| s.bytes.as_slice()) != Some(target.lines.as_bytes()) {
        changes.push(Change {
            path: opts.drop_in.clone(),
            before: old,
            after: target.lines.as_bytes().to_vec(),
        });
    }
    if let Some(g) = &opts.guard {
        g.check_location().map_err(not_ready)?;
        let ruleset = g.ruleset(target.upstream.port());
        let old = read_state(&g.file).map_err(not_ready)?;
        if old.as_ref().map(|s| s.bytes.as_slice()) != Some(ruleset.as_bytes()) {
            changes.push(Change {
                path: g.file.clone(),
                before: old,
                after: ruleset.into_bytes(),
            });
        }
    }
    Ok(changes)
}

/// Checks that change nothing; returns what was checked.
fn prechecks(sshd: &Sshd, target: &Target, opts: &Options) -> Result<String, Failure> {
    sshd_t(sshd).map_err(|e| {
        not_ready(format!(
            "sshd -t fails on the current files, before any change; fix that first:\n{e}"
        ))
    })?;
    let overridden = match_overrides(&opts.sshd_config, target.lines)?;
    if !overridden.is_empty() {
        return Err(match_failure(&overridden));
    }
    let user = &target.akc.command_user;
    let asked = run_bounded(
        Command::new(target.command)
            .arg("authorized-keys")
            .arg("--socket")
            .arg(&target.akc.socket)
            .arg("root")
            .env_clear()
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw()),
        Duration::from_secs(10),
    )
    .map_err(not_ready)?;
    if !asked.status.success() {
        return Err(not_ready(format!(
            "the AuthorizedKeysCommand {} authorized-keys, run as {} the way sshd runs it, failed ({}): {}\n\
             sshd would then refuse every key. Start ztssh-proxy (with this config) first",
            target.command.display(),
            user.name,
            asked.status,
            String::from_utf8_lossy(&asked.stderr).trim()
        )));
    }
    let guard = match &opts.guard {
        Some(g) => {
            g.check_ruleset(&g.ruleset(target.upstream.port()))
                .map_err(|e| {
                    not_ready(format!(
                        "{e}\nIs nftables installed ({}) and does this kernel have nf_tables?",
                        g.nft.display()
                    ))
                })?;
            format!(
                "; nft -c accepts the guard's ruleset (only {} may connect from {} to port {})",
                g.user.name,
                g.range.trunc(),
                target.upstream.port()
            )
        }
        None => String::new(),
    };
    Ok(format!(
        "sshd -t passes; no Match block overrides the drop-in; {} (root-owned path) ran as {} and reached the proxy at {}{guard}",
        target.command.display(),
        user.name,
        target.akc.socket.display()
    ))
}

/// The sshd binary and config `sshd-setup` checks, and the options
/// (`SSHD_OPTS`) the running sshd is started with.
struct Sshd<'a> {
    bin: &'a Path,
    config: &'a Path,
    extra: Vec<String>,
}

impl Sshd<'_> {
    /// `sshd [SSHD_OPTS] MODE -f CONFIG`.
    fn command(&self, mode: &str) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.args(&self.extra).arg(mode).arg("-f").arg(self.config);
        cmd
    }
}

fn sshd_t(sshd: &Sshd) -> Result<(), String> {
    let out = run_bounded(&mut sshd.command("-t"), SSHD_TIMEOUT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn match_failure(overridden: &[String]) -> Failure {
    not_ready(format!(
        "a Match block sets what the drop-in must decide for every connection, so the drop-in \
         would not hold for the connections it matches (sshd -T shows only the defaults): {}. \
         Move these lines out of the Match blocks, or remove them",
        overridden.join("; ")
    ))
}

/// Keywords a Match block must not set: what decides which keys,
/// passwords and other methods log in, beside every keyword the drop-in
/// sets.
const GUARDED: &[&str] = &[
    "authorizedkeysfile",
    "authorizedkeyscommand",
    "authorizedkeyscommanduser",
    "pubkeyauthentication",
    // sshd 9.2's alias of PubkeyAuthentication.
    "dsaauthentication",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "challengeresponseauthentication",
    // sshd 9.2's other alias of KbdInteractiveAuthentication (Match: yes).
    "skeyauthentication",
    "authenticationmethods",
    "hostbasedauthentication",
    "gssapiauthentication",
    "trustedusercakeys",
    "authorizedprincipalsfile",
    "authorizedprincipalscommand",
    "authorizedprincipalscommanduser",
];

/// Keywords of the drop-in that an sshd built without the feature does not
/// show in `sshd -T` at all: set to `no`, the method is off either way.
const MAY_BE_COMPILED_OUT: &[&str] = &["gssapiauthentication"];

/// Keywords of the drop-in that only make room for a login burst
/// (`MaxStartups`, `PerSourceMaxStartups`, from
/// [`crate::sshd::config_lines::startup_lines`]): an earlier value in
/// sshd_config may win without refusing the change. They guard nothing the
/// proxy relies on for trust; a lower `MaxStartups` shows at run time as
/// `upstream_refused`, which names it (docs/OPERATOR.md, "Logins at once").
const ROOM_ONLY: &[&str] = &["maxstartups", "persourcemaxstartups"];

/// The guarded keywords and every keyword the drop-in sets, lower case.
fn guarded_keys(lines: &str) -> Vec<String> {
    let mut keys: Vec<String> = GUARDED.iter().map(|k| (*k).to_owned()).collect();
    keys.extend(
        lines
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_ascii_lowercase)
            .filter(|k| !ROOM_ONLY.contains(&k.as_str())),
    );
    keys
}

/// Every `FILE:LINE: line` in sshd_config or a file it includes that sets
/// a guarded keyword (or one the drop-in sets) inside a Match block.
fn match_overrides(config: &Path, lines: &str) -> Result<Vec<String>, Failure> {
    let keys = guarded_keys(lines);
    let mut found = Vec::new();
    scan(config, false, &keys, 0, &mut found)?;
    Ok(found)
}

fn scan(
    path: &Path,
    in_match: bool,
    keys: &[String],
    depth: u32,
    found: &mut Vec<String>,
) -> Result<(), Failure> {
    if depth > 16 {
        return Err(not_ready(format!(
            "{}: Include nested more than 16 deep",
            path.display()
        )));
    }
    let text = include::read_config(path).map_err(|e| {
        not_ready(format!(
            "{e} (sshd reads it; sshd-setup must read all of it to know what it sets): \
             make it a regular file of at most {} bytes, or remove the Include that names it",
            include::MAX_CONFIG_FILE
        ))
    })?;
    let mut in_match = in_match;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| {
            not_ready(format!(
                "{}:{}: {e}. sshd-setup must know exactly which files sshd reads and what they \
                 set; fix the line",
                path.display(),
                i + 1
            ))
        };
        let Some((key, args)) = include::split(line).map_err(at)? else {
            continue;
        };
        if key == "match" {
            in_match = true;
        } else if key == "include" {
            for arg in args {
                let pattern = include::absolute(&arg).map_err(at)?;
                for file in include::expand(&pattern).map_err(at)? {
                    scan(&file, in_match, keys, depth + 1, found)?;
                }
            }
        } else if in_match && keys.contains(&key) {
            found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
        }
    }
    Ok(())
}

/// `sshd -T` (with `-C spec` when given): the effective config.
fn effective(sshd: &Sshd, spec: Option<&str>) -> Result<String, String> {
    let mut cmd = sshd.command("-T");
    if let Some(spec) = spec {
        cmd.arg("-C").arg(spec);
    }
    let out = run_bounded(&mut cmd, SSHD_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!(
            "sshd -T{} failed: {}",
            spec.map(|s| format!(" -C {s}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The addresses the `listenaddress` lines of `sshd -T` output name.
fn listen_addresses(effective: &str) -> Vec<std::net::SocketAddr> {
    effective
        .lines()
        .filter_map(|l| l.trim().strip_prefix("listenaddress "))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Every directive of the drop-in that `sshd -T` does not show in effect,
/// for a plain `sshd -T` and for connections from outside and from
/// loopback as root and as another account (`-C`: Match blocks applied);
/// and any address sshd listens on besides the drop-in's.
fn not_in_effect(
    sshd: &Sshd,
    lines: &str,
    upstream: std::net::SocketAddr,
) -> Result<Vec<String>, String> {
    let mut specs = vec![None];
    for user in ["root", "ztssh-check"] {
        for addr in ["198.51.100.7", "127.0.0.1"] {
            specs.push(Some(format!(
                "user={user},host=check.invalid,addr={addr},laddr={},lport={}",
                upstream.ip(),
                upstream.port()
            )));
        }
    }
    let mut lost = Vec::new();
    for spec in &specs {
        let effective = effective(sshd, spec.as_deref())?;
        let shown: Vec<&str> = effective.lines().map(str::trim).collect();
        let when = spec
            .as_ref()
            .map(|s| format!(" (for a connection {s})"))
            .unwrap_or_default();
        for l in lines
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let Some((k, v)) = l.split_once(' ') else {
                continue;
            };
            let key = k.to_ascii_lowercase();
            if ROOM_ONLY.contains(&key.as_str()) {
                continue;
            }
            let want = format!("{key} {}", v.trim());
            let compiled_out = MAY_BE_COMPILED_OUT.contains(&key.as_str())
                && v.trim() == "no"
                && !shown
                    .iter()
                    .any(|l| l.split_whitespace().next() == Some(key.as_str()));
            if !shown.contains(&want.as_str()) && !compiled_out {
                lost.push(format!("{l}{when}"));
            }
        }
        if spec.is_none() {
            let extra: Vec<String> = listen_addresses(&effective)
                .into_iter()
                .filter(|a| *a != upstream)
                .map(|a| format!("ListenAddress {a} (sshd would listen there too)"))
                .collect();
            lost.extend(extra);
        }
    }
    lost.dedup();
    Ok(lost)
}

fn backup(changes: &[Change], dir: &Path) -> Result<Vec<String>, String> {
    use std::os::unix::fs::DirBuilderExt;
    let mut out = Vec::new();
    let stamp = crate::ops::clock::unix();
    for c in changes {
        let Some(before) = &c.before else {
            out.push(format!("{} is new (no backup needed)", c.path.display()));
            continue;
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the backup directory {}: {e}", dir.display()))?;
        let name = c
            .path
            .file_name()
            .map_or("file".into(), |n| n.to_string_lossy());
        // Never over an older backup: NAME.STAMP, else NAME.STAMP.1, .2...
        let mut path = dir.join(format!("{name}.{stamp}"));
        for n in 1..=1000 {
            match ztssh_keyfile::write_atomic(
                &path,
                &before.bytes,
                before.mode,
                ztssh_keyfile::Existing::Refuse,
            ) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                    path = dir.join(format!("{name}.{stamp}.{n}"));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot back up {} to {}: {e}",
                        c.path.display(),
                        path.display()
                    ));
                }
            }
        }
        out.push(format!(
            "backup of {}: {}",
            c.path.display(),
            path.display()
        ));
    }
    Ok(out)
}

fn write(path: &Path, state: &FileState) -> Result<(), String> {
    ztssh_keyfile::write_atomic(
        path,
        &state.bytes,
        state.mode,
        ztssh_keyfile::Existing::Replace,
    )
    .and_then(|()| std::os::unix::fs::chown(path, Some(state.uid), Some(state.gid)))
    .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The checks after a change, and on a host where nothing is to change:
/// `sshd -t`, then `sshd -T` with and without `-C` shows every line of
/// the drop-in in effect and no other ListenAddress (both run with the
/// `SSHD_OPTS` options). Returns what was checked.
fn verify(sshd: &Sshd, target: &Target, opts: &Options) -> Result<Vec<String>, String> {
    sshd_t(sshd).map_err(|e| format!("sshd -t refuses the files: {e}"))?;
    let lost = not_in_effect(sshd, target.lines, target.upstream)?;
    if !lost.is_empty() {
        return Err(format!(
            "sshd -T shows these lines of {} not in effect (an earlier line in sshd_config or in a drop-in \
             read before it wins, since sshd keeps the first value it reads; ListenAddress lines add up): {}",
            opts.drop_in.display(),
            lost.join("; ")
        ));
    }
    let mut done = vec![format!(
        "sshd -t passes and sshd -T shows every line of the drop-in in effect, with and without Match \
         (-C), and no other ListenAddress{}",
        if sshd.extra.is_empty() {
            String::new()
        } else {
            format!(
                " (with SSHD_OPTS from {} and sshd's systemd unit: {})",
                opts.sshd_defaults.display(),
                sshd.extra.join(" ")
            )
        }
    )];
    if let Some(methods) = target
        .lines
        .lines()
        .find_map(|l| l.strip_prefix("AuthenticationMethods "))
    {
        let kept = if methods.trim() == "publickey" {
            " (every other method is off)"
        } else {
            " (kept by --allow-auth-method: these log in without a ztssh session)"
        };
        done.push(format!("sshd's login methods: {}{kept}", methods.trim()));
    }
    Ok(done)
}

fn apply(
    sshd: &Sshd,
    changes: &[Change],
    target: &Target,
    opts: &Options,
    done: &mut Vec<String>,
    reloaded: &mut bool,
    table: &mut Option<Option<String>>,
) -> Result<(), String> {
    for c in changes {
        let state = FileState {
            bytes: c.after.clone(),
            ..c.before.clone().unwrap_or(FileState {
                bytes: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            })
        };
        interrupted()?;
        write(&c.path, &state)?;
        done.push(format!("wrote {}", c.path.display()));
    }
    interrupted()?;
    done.extend(verify(sshd, target, opts)?);
    interrupted()?;
    *reloaded = true;
    done.push(sshd_reload::reload(&opts.reload, &[target.upstream])?);
    // The sshd signalled is read again, as before the change: a pid file
    // that names another sshd since (a second instance started meanwhile)
    // is not taken on trust (review, tenth round).
    sshd_opts(target, opts).map_err(|e| format!("after the reload, {e}"))?;
    interrupted()?;
    if let Some(g) = &opts.guard {
        *table = Some(g.current()?);
        g.load(target.upstream.port())?;
        done.push(format!(
            "loaded {} (table inet {})",
            g.file.display(),
            g.table
        ));
        done.push(g.probe_answered(target.upstream)?);
        interrupted()?;
    }
    done.push(crate::sshd::methods::check(
        target.upstream,
        probe_as(opts),
        &allowed_methods(target),
    )?);
    interrupted()?;
    if let Some(check) = &opts.login_check {
        sshd_reload::login_check(check, opts.login_timeout, Some(&STOP))
            .map_err(|e| interrupted().err().unwrap_or(e))?;
        done.push(format!("the login check `{check}` succeeded"));
    }
    Ok(())
}

fn rollback(
    changes: &[Change],
    opts: &Options,
    old_listen: &[std::net::SocketAddr],
    reloaded: bool,
    table: Option<Option<&str>>,
    done: &[String],
    why: &str,
) -> Failure {
    let mut errors = Vec::new();
    let mut steps = done.join("\n  ");
    if let (Some(old), Some(g)) = (table, &opts.guard) {
        match g.restore(old) {
            Ok(()) => steps.push_str(&format!(
                "\n  rollback: table inet {} {}",
                g.table,
                if old.is_some() { "restored" } else { "deleted" }
            )),
            Err(e) => errors.push(e),
        }
    }
    for c in changes.iter().rev() {
        let restored = match &c.before {
            Some(state) => write(&c.path, state),
            None => match std::fs::remove_file(&c.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove {}: {e}", c.path.display()))
                }
                _ => Ok(()),
            },
        };
        if let Err(e) = restored {
            errors.push(e);
        }
    }
    if reloaded && errors.is_empty() {
        // The old config's addresses: after a port change the new one is gone.
        match sshd_reload::reload(&opts.reload, old_listen) {
            Ok(r) => steps.push_str(&format!("\n  rollback: {r}")),
            Err(e) => errors.push(format!("the reload after restoring the files failed: {e}")),
        }
    }
    if errors.is_empty() {
        Failure {
            code: EXIT_ROLLED_BACK,
            message: format!(
                "sshd-setup failed: {why}\nRolled back: the old files are restored exactly{}.\nSteps done:\n  {steps}",
                if reloaded {
                    " and sshd reloaded with them"
                } else {
                    " (sshd had not been reloaded)"
                }
            ),
        }
    } else {
        Failure {
            code: EXIT_ROLLBACK_FAILED,
            message: format!(
                "sshd-setup failed: {why}\nTHE ROLLBACK FAILED: {}\nRestore from the backups in {} by hand and \
                 reload sshd.\nSteps done:\n  {steps}",
                errors.join("; "),
                opts.backup_dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_read_from_sshd_t() {
        let text =
            "port 22\nlistenaddress [::1]:2222\nlistenaddress 0.0.0.0:22\npermitlisten any\n";
        assert_eq!(
            listen_addresses(text),
            vec![
                "[::1]:2222".parse::<std::net::SocketAddr>().expect("v6"),
                "0.0.0.0:22".parse().expect("v4"),
            ]
        );
    }
}
