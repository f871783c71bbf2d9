//! ztssh-proxy: terminates the hybrid tunnel beside a stock sshd and splices
//! authorized sessions to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::cert::LicenceRequest;
use ztssh_proto::keys::{NoiseKeypair, SigningKey};
use ztssh_proto::labels::pem;
use ztssh_proxy::config::{self, Config, ConfigError, Overrides};
use ztssh_proxy::ops::clock::unix as now;
use ztssh_proxy::trust::authority::Authority;

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "ztssh-proxy",
    version,
    about = "ztssh proxy: zero-trust tunnel in front of a stock sshd"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What decides the sshd_config lines, for `sshd-config` and `sshd-setup`.
#[derive(clap::Args)]
struct LinesArgs {
    /// Config file (TOML) of the proxy.
    #[arg(long, env = "ZTSSH_CONFIG")]
    config: PathBuf,
    /// The ztssh-proxy binary sshd runs (default: this one). It and every
    /// directory above it must be root-owned and not group/world-writable.
    #[arg(long)]
    command: Option<PathBuf>,
    /// The sshd binary: its version decides the lines (sshd-setup also runs
    /// its -t and -T).
    #[arg(long, default_value = "/usr/sbin/sshd")]
    sshd: PathBuf,
    /// The sshd version (X.Y) instead of asking `sshd -V`.
    #[arg(long)]
    sshd_version: Option<String>,
    /// Keep this login method on besides public keys (repeatable). The
    /// drop-in turns every other method off: a password or any other
    /// method logs in without a ztssh session.
    #[arg(long = "allow-auth-method", value_enum)]
    allow_auth_methods: Vec<ztssh_proxy::sshd::config_lines::AuthMethod>,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "the command line, parsed once per process"
)]
enum Cmd {
    /// Create the Sub-CA and Noise keys in DIR and write the licence request.
    Keygen {
        /// State directory (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Validate the configuration, like `sshd -t`.
    Check {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
    },
    /// For sshd's AuthorizedKeysCommand: print the keys that may log in as
    /// ACCOUNT now (those of live ztssh sessions, each bound to its
    /// session's source address). Prints nothing on any failure.
    AuthorizedKeys {
        /// The proxy's socket (`authorized_keys_socket`).
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        socket: Option<PathBuf>,
        /// Or the proxy's config file, to read `authorized_keys_socket` from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// sshd's `%C` (sshd 9.4+): only the session whose connection to
        /// sshd this is gets an answer.
        #[arg(long)]
        connection: Option<String>,
        /// The account sshd is logging in (`%u`).
        account: String,
        /// The offered key's type and base64 (`%t %k`), optional.
        #[arg(num_args = 0..=2)]
        key: Vec<String>,
    },
    /// Print the sshd_config lines for zero standing keys (with
    /// --loopback: for sshd behind the proxy without them).
    SshdConfig {
        #[command(flatten)]
        lines: LinesArgs,
        /// The lines of docs/OPERATOR.md section 3 (sshd on loopback behind
        /// the proxy, keys as before) for this sshd's version.
        #[arg(long)]
        loopback: bool,
    },
    /// Install the `sshd-config` lines safely: write a drop-in, check it
    /// with `sshd -t` and `sshd -T`, reload sshd, check a login through
    /// ztssh, and restore the old files on any failure (docs/OPERATOR.md).
    /// Exit 0: applied or nothing to change; 64: a usage or config error;
    /// 65: not ready, nothing changed; 1: failed and rolled back; 2: the
    /// rollback failed too.
    SshdSetup {
        #[command(flatten)]
        lines: LinesArgs,
        /// sshd's main config file.
        #[arg(long, default_value = "/etc/ssh/sshd_config")]
        sshd_config: PathBuf,
        /// The drop-in to write; sshd_config must include it (or --add-include).
        #[arg(long, default_value = "/etc/ssh/sshd_config.d/00-ztssh.conf")]
        drop_in: PathBuf,
        /// Add `Include DIR/*.conf` at the top of sshd_config if nothing includes the drop-in.
        #[arg(long)]
        add_include: bool,
        /// The file whose SSHD_OPTS sshd's unit passes to sshd (Debian's
        /// EnvironmentFile); its options are checked and passed to sshd -t/-T.
        #[arg(long, default_value = "/etc/default/ssh")]
        sshd_defaults: PathBuf,
        /// Where systemd's unit files are: ssh.service (sshd.service,
        /// ssh@.service), their drop-ins (NAME.d/*.conf) and those for
        /// every service (service.d/*.conf) there are read, and a guarded
        /// keyword in an ExecStart= or Environment=SSHD_OPTS= there is
        /// refused. The default is every directory systemd reads units
        /// from. Repeat for more than one. (The running sshd's own
        /// command line is checked as well.)
        #[arg(long = "systemd-dir", default_values = [
            "/etc/systemd/system.control",
            "/run/systemd/system.control",
            "/run/systemd/transient",
            "/run/systemd/generator.early",
            "/etc/systemd/system",
            "/run/systemd/system",
            "/run/systemd/generator",
            "/usr/local/lib/systemd/system",
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
            "/run/systemd/generator.late",
        ])]
        systemd_dirs: Vec<PathBuf>,
        /// Reload by SIGHUP to the pid in this file (sshd's PidFile).
        #[arg(long, conflicts_with = "service", default_value = "/run/sshd.pid")]
        pid_file: PathBuf,
        /// Reload with `systemctl reload SERVICE` instead.
        #[arg(long)]
        service: Option<String>,
        /// Where the old files are copied first.
        #[arg(long, default_value = "/var/backups/ztssh")]
        backup_dir: PathBuf,
        /// A shell command that logs in through ztssh after the reload
        /// (exit 0 = success), such as `ssh -o ProxyCommand=... user@host true`.
        #[arg(long, required_unless_present_any = ["skip_login_check", "dry_run"])]
        login_check: Option<String>,
        /// Rely on the other checks only.
        #[arg(long, conflicts_with = "login_check")]
        skip_login_check: bool,
        /// Seconds the login check may take.
        #[arg(long, default_value_t = 60)]
        login_timeout: u64,
        /// Print the change and run the read-only checks; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also install an nftables table that lets only the proxy's user
        /// connect from upstream_source_range to sshd's port, so no other
        /// local process can borrow a live session's address (checked,
        /// and rolled back, with the rest).
        #[arg(long)]
        nft_guard: bool,
        /// The user the proxy runs as (default: `user` in proxy.toml).
        #[arg(long, requires = "nft_guard")]
        proxy_user: Option<String>,
        /// The file the guard's ruleset is kept in (load it at boot).
        #[arg(
            long,
            requires = "nft_guard",
            default_value = "/etc/ztssh/sshd-guard.nft"
        )]
        nft_file: PathBuf,
        /// The nft binary.
        #[arg(long, requires = "nft_guard", default_value = "/usr/sbin/nft")]
        nft: PathBuf,
        /// The nftables table (family inet) the guard owns.
        #[arg(long, requires = "nft_guard", default_value = ztssh_proxy::sshd::guard::DEFAULT_TABLE)]
        nft_table: String,
    },
    /// Check that the nftables guard `sshd-setup --nft-guard` installed
    /// still holds, for a timer (the package's
    /// ztssh-sshd-guard-check.timer): the same two probes as sshd-setup.
    /// With --repair, a guard that does not hold is loaded again from
    /// --nft-file (only while that file holds the ruleset proxy.toml
    /// makes). With --textfile, the result is written for node_exporter's
    /// textfile collector (docs/OPERATOR.md). Runs as root. Exit 0: the
    /// guard holds (or was loaded again); 1: it does not hold; 2: a reload
    /// failed and the old table could not be put back; 64: a usage or
    /// config error (the textfile then says it does not hold).
    SshdGuardCheck {
        /// The proxy's config file: sshd's address, upstream_source_range
        /// and user (the keys, licence and lists are not read).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
        /// The user the proxy runs as (default: `user` in proxy.toml).
        #[arg(long)]
        proxy_user: Option<String>,
        /// The file sshd-setup kept the guard's ruleset in.
        #[arg(long, default_value = "/etc/ztssh/sshd-guard.nft")]
        nft_file: PathBuf,
        /// The nft binary.
        #[arg(long, default_value = "/usr/sbin/nft")]
        nft: PathBuf,
        /// The nftables table (family inet) the guard owns.
        #[arg(long, default_value = ztssh_proxy::sshd::guard::DEFAULT_TABLE)]
        nft_table: String,
        /// Load the guard again when it does not hold.
        #[arg(long)]
        repair: bool,
        /// Write the result here for node_exporter's textfile collector (a
        /// NAME.prom file in its --collector.textfile.directory).
        #[arg(long)]
        textfile: Option<PathBuf>,
    },
    /// `completions SHELL` and `man` (ztssh-cli, shared by every binary).
    #[command(flatten)]
    Generate(ztssh_cli::Generate),
    /// Run the proxy.
    Run {
        /// Config file (TOML).
        #[arg(long, env = "ZTSSH_CONFIG")]
        config: PathBuf,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Override `upstream`.
        #[arg(long)]
        upstream: Option<String>,
        /// Override `log_format` (text or json).
        #[arg(long)]
        log_format: Option<String>,
    },
}

/// mimalloc in secure mode (guard pages around its metadata, randomized and
/// encoded free lists, double-free detection): heap hardening at least on a
/// par with glibc's, and a third less CPU for
/// a mass kill, whose cost is mostly freeing thousands of sessions at once
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// A fuzzing build's public-key operations are insecure stand-ins
// (ztssh_proto::primitives): no binary may ever be built with them.
const _: () = assert!(
    !ztssh_proto::primitives::CRYPTO_STANDINS,
    "ztssh-proxy cannot be built with --cfg fuzzing and ztssh-proto's crypto-standins feature: its cryptography would be fuzzing stand-ins"
);

// Nor with proto's test hooks (ztssh_proto::TESTKIT), which only the tests
// crate takes, as a dev-dependency. Not checked in this file's own unit
// tests or under clippy: a workspace-wide test or clippy run unifies the
// tests crate's dev-dependency features into every member, and neither
// produces the binary.
#[cfg(not(any(test, clippy)))]
const _: () = assert!(
    !ztssh_proto::TESTKIT,
    "ztssh-proxy cannot be built with ztssh-proto's testkit feature: it would link test hooks that play a hostile peer"
);

/// Parses the command line; a usage error exits 64 (EX_USAGE), not
/// clap's 2, which `sshd-setup` gives to "the rollback failed".
fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Generate(g) => g.print::<Cli>(),
        Cmd::Keygen { dir } => report(keygen(&dir)),
        Cmd::Check { config } => match load(&config, &Overrides::default()) {
            Ok((cfg, authority)) => {
                println!(
                    "{}: OK\n{}",
                    config.display(),
                    cfg.summary(&authority, now())
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Cmd::AuthorizedKeys {
            socket,
            config,
            connection,
            account,
            key,
        } => authorized_keys(socket, config, connection.as_deref(), &account, &key),
        Cmd::SshdConfig {
            lines,
            loopback: true,
        } => loopback_lines(&lines),
        Cmd::SshdConfig { lines, .. } => match sshd_lines(&lines) {
            Ok((_, _, text)) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::SshdSetup {
            lines,
            sshd_config,
            drop_in,
            add_include,
            sshd_defaults,
            systemd_dirs,
            pid_file,
            service,
            backup_dir,
            login_check,
            skip_login_check,
            login_timeout,
            dry_run,
            nft_guard,
            proxy_user,
            nft_file,
            nft,
            nft_table,
        } => {
            use ztssh_proxy::sshd::reload::Reload;
            let opts = ztssh_proxy::sshd::setup::Options {
                sshd_config,
                drop_in,
                add_include,
                sshd: lines.sshd.clone(),
                sshd_defaults,
                systemd_dirs,
                reload: service.map_or(Reload::PidFile(pid_file), Reload::Service),
                backup_dir,
                login_check,
                skip_login_check,
                login_timeout: std::time::Duration::from_secs(login_timeout),
                dry_run,
                guard: None,
            };
            let guard = nft_guard.then_some(GuardArgs {
                proxy_user,
                file: nft_file,
                nft,
                table: nft_table,
            });
            sshd_setup(&lines, opts, guard)
        }
        Cmd::SshdGuardCheck {
            config,
            proxy_user,
            nft_file,
            nft,
            nft_table,
            repair,
            textfile,
        } => sshd_guard_check(
            &config,
            GuardArgs {
                proxy_user,
                file: nft_file,
                nft,
                table: nft_table,
            },
            repair,
            textfile.as_deref(),
        ),
        Cmd::Run {
            config,
            listen,
            upstream,
            log_format,
        } => {
            let (cfg, authority) = match load(
                &config,
                &Overrides {
                    listen,
                    upstream,
                    log_format,
                },
            ) {
                Ok(loaded) => loaded,
                Err(e) => return config_error(&e),
            };
            // Held to the end of main: dropping it writes out the queue.
            let _log = ztssh_proxy::ops::logging::init(
                cfg.settings.log_format,
                &authority.licence.body.server_id,
            );
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e.into())),
            };
            let result = rt.block_on(ztssh_proxy::server::run(cfg, authority));
            // A read stuck on a hung filesystem must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            report(result)
        }
    }
}

fn authorized_keys(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    connection: Option<&str>,
    account: &str,
    key: &[String],
) -> ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match config::settings(&c, &Overrides::default()) {
            Ok(s) => match s.authorized_keys_socket {
                Some(p) => p,
                None => {
                    eprintln!(
                        "ztssh-proxy: {}: authorized_keys_socket is not set",
                        c.display()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            Err(e) => return config_error(&e),
        },
        (None, None) => return ExitCode::from(EXIT_CONFIG),
    };
    let key = match key {
        [t, k] => Some((t.as_str(), k.as_str())),
        [] => None,
        _ => {
            eprintln!(
                "ztssh-proxy: authorized-keys: give the key as TYPE BASE64 (%t %k), or not at all"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let client = match connection.map(ztssh_proxy::sshd::akc::parse_connection) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("ztssh-proxy: authorized-keys: --connection: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    report(ztssh_proxy::sshd::akc::ask(
        &socket, account, key, client, &mut out,
    ))
}

/// `sshd-config --loopback`: no zero standing keys needed.
fn loopback_lines(args: &LinesArgs) -> ExitCode {
    use ztssh_proxy::sshd::config_lines as sc;
    let path = args.config.as_path();
    let cfg = match load(path, &Overrides::default()) {
        Ok((cfg, _)) => cfg,
        Err(e) => return config_error(&e),
    };
    let version = match &args.sshd_version {
        Some(v) => sc::parse_version(&format!("OpenSSH_{v}"))
            .ok_or_else(|| format!("--sshd-version {v:?}: expected X.Y, such as 9.2")),
        None => sc::detect_version(&args.sshd),
    };
    match version {
        Ok(v) => {
            let config_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            print!("{}", sc::loopback_lines(&cfg, &config_path, v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ztssh-proxy: sshd-config: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The proxy's config, the command sshd runs, and the lines; on error,
/// the message is printed and the exit code returned.
fn sshd_lines(args: &LinesArgs) -> Result<(Config, PathBuf, String), ExitCode> {
    use ztssh_proxy::sshd::config_lines as sc;
    let path = args.config.as_path();
    let (cfg, _authority) = load(path, &Overrides::default()).map_err(|e| config_error(&e))?;
    let version = match &args.sshd_version {
        Some(v) => sc::parse_version(&format!("OpenSSH_{v}"))
            .ok_or_else(|| format!("--sshd-version {v:?}: expected X.Y, such as 9.2")),
        None => sc::detect_version(&args.sshd),
    };
    let config_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let made = version.and_then(|v| {
        let command = sc::command_path(args.command.clone())?;
        sc::check_command_path(&command)?;
        let text = sc::lines(&cfg, &config_path, &command, v, &args.allow_auth_methods)?;
        Ok((command, text))
    });
    if !args.allow_auth_methods.is_empty() {
        let names: Vec<&str> = args.allow_auth_methods.iter().map(|m| m.name()).collect();
        eprintln!(
            "ztssh-proxy: warning: --allow-auth-method keeps {} on in sshd beside public keys: \
             such logins need no ztssh session and are not bound to the policy's accounts",
            names.join(", ")
        );
    }
    match made {
        Ok((command, text)) => Ok((cfg, command, text)),
        Err(e) => {
            eprintln!("ztssh-proxy: sshd-config: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// The nftables guard's options, as sshd-setup and sshd-guard-check take
/// them.
struct GuardArgs {
    proxy_user: Option<String>,
    file: PathBuf,
    nft: PathBuf,
    table: String,
}

/// The guard for `cmd` from proxy.toml's range and user (`path` names the
/// file in messages) and the options; on error, the message is printed
/// and 64 returned.
fn make_guard(
    cmd: &str,
    path: &Path,
    range: Option<ipnet::Ipv4Net>,
    cfg_user: Option<&nix::unistd::User>,
    args: GuardArgs,
) -> Result<ztssh_proxy::sshd::guard::Guard, ExitCode> {
    let usage = |msg: String| {
        eprintln!("ztssh-proxy: {cmd}: {msg}");
        ExitCode::from(EXIT_CONFIG)
    };
    ztssh_proxy::sshd::guard::check_table(&args.table).map_err(usage)?;
    let Some(range) = range else {
        return Err(usage(format!(
            "the nftables guard needs upstream_source_range in {}",
            path.display()
        )));
    };
    let user = match (args.proxy_user, cfg_user) {
        (Some(name), _) => ztssh_proxy::ops::process::lookup_user(&name)
            .map_err(|e| usage(format!("--proxy-user: {e}")))?,
        (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err(usage(format!(
                "the nftables guard needs the user the proxy connects to sshd as: \
                 set `user` in {} or pass --proxy-user NAME (under systemd's DynamicUser, create a \
                 static user for the unit's User= first: a dynamic uid cannot be named in a rule)",
                path.display()
            )));
        }
    };
    ztssh_proxy::sshd::guard::check_user(&user).map_err(usage)?;
    Ok(ztssh_proxy::sshd::guard::Guard {
        nft: args.nft,
        file: args.file,
        range,
        user,
        table: args.table,
    })
}

/// `sshd-guard-check`: probes the guard, loads it again with `repair`,
/// and writes the result to `textfile` whatever it is (a check that
/// cannot run says the guard does not hold).
fn sshd_guard_check(
    config: &Path,
    args: GuardArgs,
    repair: bool,
    textfile: Option<&Path>,
) -> ExitCode {
    use ztssh_proxy::sshd::guard::{Guard, NotHeld};
    let table = args.table.clone();
    if let Err(e) = ztssh_proxy::sshd::guard::check_table(&table) {
        eprintln!("ztssh-proxy: sshd-guard-check: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(t) = textfile {
        let named = t.extension().is_some_and(|e| e == "prom");
        if !named
            || !t
                .parent()
                .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir())
        {
            eprintln!(
                "ztssh-proxy: sshd-guard-check: --textfile {}: node_exporter's textfile collector reads \
                 NAME.prom files in an existing directory (its --collector.textfile.directory, \
                 /var/lib/prometheus/node-exporter on Debian); give such a path",
                t.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let write = |holds: bool, reloaded: bool| {
        let Some(t) = textfile else { return true };
        let text = Guard::textfile(&table, holds, reloaded, now());
        match ztssh_keyfile::write_atomic(
            t,
            text.as_bytes(),
            0o644,
            ztssh_keyfile::Existing::Replace,
        ) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "ztssh-proxy: sshd-guard-check: cannot write {}: {e}; the alerts on \
                     ztssh_sshd_guard_* will see a stale check",
                    t.display()
                );
                false
            }
        }
    };
    let refused = |msg: String| {
        eprintln!("ztssh-proxy: sshd-guard-check: {msg}");
        write(false, false);
        ExitCode::from(EXIT_CONFIG)
    };
    if !nix::unistd::geteuid().is_root() {
        return refused(
            "runs as root: it reads the table with nft and probes as another user (run it from \
             ztssh-sshd-guard-check.service, or with sudo)"
                .into(),
        );
    }
    let target =
        config::settings(config, &Overrides::default()).and_then(|s| config::guard_target(&s));
    let (upstream, range, user) = match target {
        Ok(t) => t,
        Err(e) => return refused(format!("config error: {e}")),
    };
    let guard = match make_guard("sshd-guard-check", config, range, user.as_ref(), args) {
        Ok(g) => g,
        Err(code) => {
            write(false, false);
            return code;
        }
    };
    match guard.ensure(upstream, repair) {
        Ok(held) => {
            let written = write(true, held.reloaded);
            if held.reloaded {
                eprintln!(
                    "ztssh-proxy: sshd-guard-check: warning: the guard did not hold, and its table was \
                     loaded again from {}. Something removed or changed it (a firewall reload such as \
                     `systemctl restart nftables` or `nft flush ruleset` deletes every table): include \
                     the file from /etc/nftables.conf so that a reload keeps it (docs/OPERATOR.md).",
                    guard.file.display()
                );
            }
            println!("sshd-guard-check: {}", held.report);
            if written {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(NotHeld {
            why,
            restore_failed,
        }) => {
            write(false, false);
            let fix = if repair {
                format!(
                    "Find what changed the table (nft list ruleset), then re-run `ztssh-proxy sshd-setup \
                     --nft-guard` for {}",
                    config.display()
                )
            } else {
                format!(
                    "Load it again with `ztssh-proxy sshd-guard-check --repair` (or re-run sshd-setup \
                     --nft-guard), and include {} from /etc/nftables.conf so that it survives reboots \
                     and firewall reloads",
                    guard.file.display()
                )
            };
            eprintln!(
                "ztssh-proxy: sshd-guard-check: THE GUARD DOES NOT HOLD: any local user can connect \
                 from {} to sshd and borrow a live session's address. {why}\n{fix}.",
                guard.range.trunc()
            );
            match restore_failed {
                Some(e) => {
                    eprintln!(
                        "ztssh-proxy: sshd-guard-check: putting the old table back failed too: {e}"
                    );
                    ExitCode::from(2)
                }
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn sshd_setup(
    args: &LinesArgs,
    mut opts: ztssh_proxy::sshd::setup::Options,
    guard: Option<GuardArgs>,
) -> ExitCode {
    use ztssh_proxy::sshd::setup;
    let path = args.config.as_path();
    let (cfg, command, lines) = match sshd_lines(args) {
        Ok(made) => made,
        Err(code) => return code,
    };
    let Some(akc) = &cfg.authorized_keys else {
        eprintln!(
            "ztssh-proxy: sshd-setup: zero standing keys are off in {}",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    if let Some(args) = guard {
        match make_guard(
            "sshd-setup",
            path,
            cfg.upstream_sources,
            cfg.user.as_ref(),
            args,
        ) {
            Ok(g) => opts.guard = Some(g),
            Err(code) => return code,
        }
    }
    let target = setup::Target {
        lines: &lines,
        command: &command,
        akc,
        upstream: cfg.upstream,
    };
    match setup::run(&target, &opts) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("ztssh-proxy: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn load(path: &Path, overrides: &Overrides) -> Result<(Config, Authority), ConfigError> {
    config::load(config::settings(path, overrides)?, now())
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("ztssh-proxy: config error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztssh-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The OS CSPRNG, the only random source the core is given.
    let subca = SigningKey::generate(&mut UnwrapErr(SysRng));
    let noise = NoiseKeypair::generate(&mut UnwrapErr(SysRng));
    keyfile::write_secret(
        &dir.join(config::SUBCA_KEY_FILE),
        pem::SUBCA_KEY,
        &subca.to_seed(),
    )?;
    keyfile::write_secret(
        &dir.join(config::NOISE_KEY_FILE),
        pem::NOISE_KEY,
        noise.private(),
    )?;
    let request = LicenceRequest::new(&subca, noise.public(), now());
    let req_path = dir.join(config::REQUEST_FILE);
    keyfile::write_atomic(
        &req_path,
        armor::encode(pem::REQUEST, &request.encode())?.as_bytes(),
        0o644,
        keyfile::Existing::Replace,
    )?;
    println!("keys written to {} (mode 0600)", dir.display());
    println!("licence request: {}", req_path.display());
    println!("next, on the offline CA machine:");
    println!(
        "  ztssh-ca authorize-server --dir CA --request {} --server-id NAME --hostname HOST --out licence.pem",
        req_path.display()
    );
    Ok(())
}
