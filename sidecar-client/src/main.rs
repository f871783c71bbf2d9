//! ztssh-sidecar: `ProxyCommand ztssh-sidecar %h %p`. It speaks the hybrid
//! tunnel for ssh, verifies the server's licence before revealing the user,
//! and says plainly why a session ended. stdout carries only ssh's bytes.
//! `ztssh-sidecar setup` writes the user's configuration (`setup.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod connect;
mod discover;
mod explain;
mod identity;
mod lastkey;
mod link;
mod pump;
mod revocation;
mod settings;
mod setup;
mod token;
mod usercert;

#[derive(Parser)]
#[command(
    name = "ztssh-sidecar",
    version,
    about = "ssh ProxyCommand for ztssh: ProxyCommand ztssh-sidecar %h %p",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Config file (default ~/.config/ztssh/sidecar.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Pinned root CA public key (root.pub).
    #[arg(long)]
    root: Option<PathBuf>,
    /// OpenSSH private key; without it, the key in ssh-agent (SSH_AUTH_SOCK).
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// ztssh principal (default: local user name).
    #[arg(long, short = 'l')]
    principal: Option<String>,
    /// Connect to this address instead of resolving HOST.
    #[arg(long)]
    connect: Option<String>,
    /// Record size; must match the proxy.
    #[arg(long)]
    frame_size: Option<usize>,
    /// Print each step on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Test rigs only: accept client certificates down to 2 s instead of
    /// 60 s (a proxy could then ask your key to sign every second, up to
    /// 120 times an hour).
    #[arg(long)]
    insecure_short_certs: bool,
    /// Offer this server the agent's other keys too, not only the ones
    /// sidecar.toml's [[hosts]] names for it, the one that last worked
    /// here, or (the first time) the agent's first; at most three keys
    /// (try_agent_keys in sidecar.toml).
    #[arg(long)]
    try_agent_keys: bool,
    /// Root-signed revocation list (crl.pem): refuse servers it revokes.
    #[arg(long)]
    revocation_list: Option<PathBuf>,
    /// Refresh --revocation-list from this URL first (conditional GET).
    #[arg(long)]
    revocation_url: Option<String>,
    /// Reach HOST through this ssh host first (`ssh -W HOST:PORT JUMP`,
    /// as `ssh -J` does), with the ztssh tunnel to HOST inside; JUMP goes
    /// through ztssh too when your ssh_config says so.
    #[arg(long, value_name = "JUMP")]
    jump: Option<String>,
    /// ssh_config file for the jump leg's ssh (`ssh -F FILE`).
    #[arg(long, value_name = "FILE", requires = "jump")]
    jump_config: Option<PathBuf>,
    /// A workload's platform token (an OIDC JWT) from this file, read at
    /// the handshake and before each renewal: a Kubernetes projected
    /// service-account token, for instance. The key (-i) is a throwaway
    /// one the job made; no key is registered anywhere.
    #[arg(long, value_name = "PATH", conflicts_with = "token_command")]
    token_file: Option<PathBuf>,
    /// A workload's platform token from this command's output, run at the
    /// handshake and before each renewal; %a is replaced by the audience
    /// the server asks for (quoted), also in $ZTSSH_TOKEN_AUDIENCE.
    #[arg(long, value_name = "CMD")]
    token_command: Option<String>,
    /// The audience to ask the token for (default: ztssh:SERVER-ID, the
    /// server id from the proxy's licence; set it when the proxy's
    /// workload_issuer names another).
    #[arg(long, value_name = "AUD")]
    token_audience: Option<String>,
    /// Host as typed to ssh (%h); checked against the server licence.
    #[arg(required = true)]
    host: Option<String>,
    /// Port (%p).
    #[arg(required = true)]
    port: Option<u16>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Set up this user: sidecar.toml, a Host block in ~/.ssh/config, and
    /// the host CA line in ~/.ssh/known_hosts. Safe to re-run; --undo
    /// removes what it added.
    Setup(SetupArgs),
    /// The same as `setup --undo`.
    Unsetup,
    /// `completions SHELL` and `man` (ztssh-cli, shared by every binary).
    #[command(flatten)]
    Generate(ztssh_cli::Generate),
}

#[derive(clap::Args)]
struct SetupArgs {
    /// The root CA public key (root.pub) from your administrators.
    #[arg(long, required_unless_present = "undo")]
    root: Option<PathBuf>,
    /// Your ztssh principal (default: your local user name).
    #[arg(long, short = 'l')]
    principal: Option<String>,
    /// Your OpenSSH private key (default: the key in ssh-agent).
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// ssh Host pattern to send through ztssh (repeatable), e.g. 'web1' or '*.corp.example'.
    #[arg(long = "host", num_args = 1.., value_name = "PATTERN")]
    hosts: Vec<String>,
    /// The host CA public key: the line `ztssh-ca known-hosts` prints (or
    /// the bare key), from your administrators.
    #[arg(long)]
    host_ca: Option<PathBuf>,
    /// The port the proxies listen on, written as the block's `Port`
    /// (22 where your organisation publishes SRV records instead).
    #[arg(long, default_value_t = setup::DEFAULT_PORT)]
    port: u16,
    /// Remove what setup added (blocks and its own files; backups stay).
    #[arg(long, conflicts_with_all = ["root", "principal", "identity", "hosts", "host_ca"])]
    undo: bool,
}

fn run_setup(cmd: Cmd) -> Result<(), String> {
    let paths = setup::Paths::from_env()?;
    let report = match cmd {
        Cmd::Unsetup => setup::undo(&paths)?,
        Cmd::Generate(_) => return Err("not a setup command".into()),
        Cmd::Setup(a) if a.undo => setup::undo(&paths)?,
        Cmd::Setup(a) => {
            let sidecar = std::env::current_exe()
                .map_err(|e| format!("cannot tell where this program is: {e}"))?;
            let req = setup::Request {
                root: a.root.ok_or("--root root.pub is required")?,
                principal: a.principal,
                identity: a.identity,
                hosts: a.hosts,
                host_ca: a.host_ca,
                port: a.port,
            };
            setup::setup(&req, &paths, &sidecar)?
        }
    };
    for line in report {
        println!("{line}");
    }
    Ok(())
}

// A fuzzing build's public-key operations are insecure stand-ins
// (ztssh_proto::primitives): no binary may ever be built with them.
const _: () = assert!(
    !ztssh_proto::primitives::CRYPTO_STANDINS,
    "ztssh-sidecar cannot be built with --cfg fuzzing and ztssh-proto's crypto-standins feature: its cryptography would be fuzzing stand-ins"
);

// Nor with proto's test hooks (ztssh_proto::TESTKIT), which only the tests
// crate takes, as a dev-dependency. Not checked in this file's own unit
// tests or under clippy: a workspace-wide test or clippy run unifies the
// tests crate's dev-dependency features into every member, and neither
// produces the binary.
#[cfg(not(any(test, clippy)))]
const _: () = assert!(
    !ztssh_proto::TESTKIT,
    "ztssh-sidecar cannot be built with ztssh-proto's testkit feature: it would link test hooks that play a hostile peer"
);

/// Checks the host ssh gave (`%h`) under the licence host-name rules
/// before anything shows it: a refused one is never echoed, since it could
/// carry control characters or terminal escapes.
fn check_host(host: &str) -> Result<(), String> {
    ztssh_proto::cert::check_host(host).map_err(|e| {
        let why = match e {
            ztssh_proto::error::Malformed::Invalid { why, .. } => why,
            _ => "not a host name",
        };
        format!(
            "the host given to ztssh-sidecar (ssh's %h, {} bytes, not shown) is not a host name a server licence can carry: {why}. \
             Use the server's name as your administrators gave it (ssh HOST), or a Host alias with HostName set to it",
            host.len()
        )
    })
}

/// Parses the command line. clap's own messages quote the argument they
/// refused, and ssh's `%h` is one: a host that starts with `-` (say
/// `--x\x1b]0;title\x07`) is taken for an option and would reach the
/// terminal raw, before [`check_host`] ever sees it. So every refusal is
/// shown with anything but printable ASCII escaped, and exits 64.
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    match Cli::try_parse_from(host_not_subcommand(std::env::args_os().collect())) {
        Ok(cli) => Ok(cli),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprint!("{}", plain(&e.to_string()));
            Err(ExitCode::from(64))
        }
    }
}

/// ssh runs `ztssh-sidecar [OPTIONS] %h %p`, and a host may be named
/// like a subcommand (`ssh man`, `ssh setup`): clap would take it for
/// one. The ProxyCommand form has exactly two positional arguments, the
/// second a port, and no subcommand ever takes a port; so when the first
/// positional argument is a subcommand's name and the only one after it
/// is a port, a `--` goes in before them and both are HOST and PORT.
/// Every other command line is left as it is (`man`, `completions bash`,
/// `setup --port 22 ...`).
fn host_not_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(at) = first_positional(&cmd, &args) else {
        return args;
    };
    let named_like_subcommand = args[at].to_str().is_some_and(|a| {
        a == "help"
            || cmd
                .get_subcommands()
                .any(|s| s.get_name() == a || s.get_all_aliases().any(|n| n == a))
    });
    let port = args.len() == at + 2
        && args[at + 1]
            .to_str()
            .and_then(|p| p.parse::<u16>().ok())
            .is_some();
    if named_like_subcommand && port {
        args.insert(at, "--".into());
    }
    args
}

/// The index of the first argument after the program's name that is
/// neither an option nor an option's value; `None` if there is none, or a
/// `--` comes first (the rest is positional already).
fn first_positional(cmd: &clap::Command, args: &[std::ffi::OsString]) -> Option<usize> {
    let takes_value = |a: Option<&clap::Arg>| a.is_some_and(|a| a.get_action().takes_values());
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        let a = arg.to_str()?;
        if a == "--" {
            return None;
        }
        if let Some(long) = a.strip_prefix("--") {
            let inline = long.contains('=');
            let arg = cmd.get_arguments().find(|x| x.get_long() == Some(long));
            i += if !inline && takes_value(arg) { 2 } else { 1 };
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            // A cluster (`-vi KEY`, `-iKEY`): the first short that takes a
            // value takes the rest of the cluster, or the next argument.
            let mut next = 1;
            for (k, c) in shorts.char_indices() {
                if takes_value(cmd.get_arguments().find(|x| x.get_short() == Some(c))) {
                    next = if k + c.len_utf8() == shorts.len() {
                        2
                    } else {
                        1
                    };
                    break;
                }
            }
            i += next;
        } else {
            return Some(i);
        }
    }
    None
}

/// `text` with everything but printable ASCII, spaces and newlines escaped.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' || c == ' ' || c.is_ascii_graphic() {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(cmd) = cli.cmd {
        return match cmd {
            Cmd::Generate(g) => g.print::<Cli>(),
            cmd => match run_setup(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("ztssh-sidecar: {msg}");
                    ExitCode::FAILURE
                }
            },
        };
    }
    let (Some(host), Some(port)) = (cli.host, cli.port) else {
        eprintln!(
            "ztssh: usage: ztssh-sidecar [OPTIONS] HOST PORT (as ProxyCommand ztssh-sidecar %h %p)"
        );
        return ExitCode::from(64);
    };
    if let Err(e) = check_host(&host) {
        eprintln!("ztssh: {e}");
        return ExitCode::from(64);
    }
    let flags = settings::Flags {
        root: cli.root,
        identity: cli.identity,
        principal: cli.principal,
        connect: cli.connect,
        frame_size: cli.frame_size,
        verbose: cli.verbose,
        insecure_short_certs: cli.insecure_short_certs,
        try_agent_keys: cli.try_agent_keys,
        revocation_list: cli.revocation_list,
        revocation_url: cli.revocation_url,
    };
    // Per connection, never from sidecar.toml: a jump there would send the
    // jump host's own connection through itself.
    let jump = cli.jump.map(|via| connect::JumpVia {
        via,
        config: cli.jump_config.map(|p| settings::expand_tilde(&p)),
    });
    // Per connection too: a job's token source is the job's.
    let workload = token::TokenSource::from_args(cli.token_file, cli.token_command).map(|source| {
        connect::Workload {
            source,
            audience: cli.token_audience,
        }
    });
    let result = settings::load(cli.config.as_deref(), &flags).and_then(|s| {
        // One session per process: a single-threaded runtime avoids
        // cross-thread wake-ups on the data path.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start runtime: {e}"))?;
        let result = rt.block_on(connect::run(s, host, port, jump, workload));
        // A renewal signature may still be waiting on ssh-agent (a
        // confirmation, a touch) in the blocking pool: exit without
        // waiting for it; the process's end closes the agent socket.
        rt.shutdown_background();
        result.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ztssh: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_host;

    #[test]
    fn a_hostile_host_is_refused_without_being_echoed() {
        let long = "a".repeat(300);
        let hostile = [
            "web1\x1b]0;pwned\x07",
            "\x1b[2J\x1b[31mroot@prod",
            "web1\nztssh: all good",
            "web1\r",
            "we b1",
            "-oProxyCommand=x",
            ".hidden",
            "",
            "web1\u{202e}",
            long.as_str(),
        ];
        for host in hostile {
            let e = check_host(host).expect_err(host);
            assert!(e.chars().all(|c| c == ' ' || c.is_ascii_graphic()), "{e:?}");
            assert!(
                !e.contains(host.trim_matches('.')) || host.is_empty(),
                "{e}"
            );
            assert!(e.contains(&format!("{} bytes", host.len())), "{e}");
        }
        for host in [
            "web1",
            "web1.corp.example",
            "localhost",
            "127.0.0.1",
            "db_2",
        ] {
            assert_eq!(check_host(host), Ok(()), "{host}");
        }
    }

    fn parsed(args: &[&str]) -> (Option<String>, Option<u16>, Option<&'static str>) {
        use clap::Parser;
        let args = super::host_not_subcommand(args.iter().map(Into::into).collect());
        let cli = super::Cli::try_parse_from(args).expect("parses");
        let cmd = cli.cmd.map(|c| match c {
            super::Cmd::Setup(_) => "setup",
            super::Cmd::Unsetup => "unsetup",
            super::Cmd::Generate(ztssh_cli::Generate::Man) => "man",
            super::Cmd::Generate(ztssh_cli::Generate::Completions { .. }) => "completions",
        });
        (cli.host, cli.port, cmd)
    }

    #[test]
    fn a_host_named_like_a_subcommand_is_a_host_when_a_port_follows() {
        for host in ["man", "completions", "setup", "unsetup", "help"] {
            let want = (Some(host.to_owned()), Some(22), None);
            assert_eq!(parsed(&["s", host, "22"]), want, "{host}");
            assert_eq!(parsed(&["s", "-v", host, "22"]), want, "{host}");
            assert_eq!(parsed(&["s", "--root", "man", host, "22"]), want);
            assert_eq!(parsed(&["s", "-i", "setup", "-l", "man", host, "22"]), want);
            assert_eq!(parsed(&["s", "-vi", "k", host, "22"]), want);
            assert_eq!(parsed(&["s", "-vik", "--connect=x:1", host, "22"]), want);
            assert_eq!(parsed(&["s", "--", host, "22"]), want, "{host}");
        }
        assert_eq!(parsed(&["s", "web1", "22"]).0.as_deref(), Some("web1"));
        // The documented subcommands stay what they were.
        assert_eq!(parsed(&["s", "man"]).2, Some("man"));
        assert_eq!(parsed(&["s", "completions", "bash"]).2, Some("completions"));
        assert_eq!(parsed(&["s", "unsetup"]).2, Some("unsetup"));
        assert_eq!(parsed(&["s", "setup", "--undo"]).2, Some("setup"));
        assert_eq!(
            parsed(&["s", "setup", "--root", "r", "--host", "man", "--port", "22"]).2,
            Some("setup")
        );
        assert_eq!(
            parsed(&["s", "setup", "--root", "r", "--host", "man", "22"]).2,
            Some("setup")
        );
    }

    #[test]
    fn a_refused_command_line_is_shown_as_plain_text() {
        assert_eq!(
            super::plain("unexpected argument '--x\x1b]0;t\x07\u{202e}' found\n"),
            "unexpected argument '--x\\u{1b}]0;t\\u{7}\\u{202e}' found\n"
        );
    }
}
