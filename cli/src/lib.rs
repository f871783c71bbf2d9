//! ztssh-cli: what the command lines of ztssh-proxy, ztssh-sidecar and
//! ztssh-ca share. Today that is the pair of subcommands that print what
//! the Debian packages install beside each binary (packaging/build-debs.sh):
//! `completions SHELL` (bash, zsh, fish, elvish, powershell) and `man` (the
//! roff man page), both generated from the binary's own clap definitions.
//!
//! A binary flattens [`Generate`] into its subcommand enum and hands the
//! parsed value to [`Generate::print`] with its top-level parser type:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Cmd {
//!     #[command(flatten)]
//!     Generate(ztssh_cli::Generate),
//!     // ...
//! }
//! // in main: Cmd::Generate(g) => g.print::<Cli>(),
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Command, CommandFactory};

/// `completions SHELL` and `man`.
#[derive(clap::Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum Generate {
    /// Print shell completions for SHELL (bash, zsh, fish, elvish,
    /// powershell) on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
}

impl Generate {
    /// The subcommands' names, as typed.
    pub const NAMES: [&'static str; 2] = ["completions", "man"];

    /// Writes what was asked for `C`'s command line to stdout. On a write
    /// error (a closed pipe, a full disk) it says so on stderr and returns
    /// failure, never a panic.
    pub fn print<C: CommandFactory>(self) -> ExitCode {
        let cmd = C::command();
        let name = cmd.get_name().to_owned();
        let mut out = std::io::stdout().lock();
        match self.write(cmd, &mut out).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: cannot write to stdout: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Writes what was asked for `cmd` to `out`.
    pub fn write(self, mut cmd: Command, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Self::Completions { shell } => {
                let name = cmd.get_name().to_owned();
                clap_complete::generate(shell, &mut cmd, name, out);
                Ok(())
            }
            Self::Man => clap_mangen::Man::new(cmd).render(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Generate;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Parser)]
    #[command(name = "ztssh-example", about = "an example")]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        #[command(flatten)]
        Generate(Generate),
        /// Does the real work.
        Work {
            /// How hard.
            #[arg(long)]
            effort: u32,
        },
    }

    fn parsed(args: &[&str]) -> Option<Generate> {
        match Cli::try_parse_from(args).ok()?.cmd {
            Cmd::Generate(g) => Some(g),
            Cmd::Work { .. } => None,
        }
    }

    fn written(g: Generate) -> String {
        let mut out = Vec::new();
        g.write(Cli::command(), &mut out).expect("writes to a Vec");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_flattened_subcommands_parse_beside_the_binarys_own() {
        assert_eq!(parsed(&["x", "man"]), Some(Generate::Man));
        assert_eq!(
            parsed(&["x", "completions", "fish"]),
            Some(Generate::Completions {
                shell: clap_complete::Shell::Fish
            })
        );
        assert_eq!(parsed(&["x", "work", "--effort", "3"]), None);
        assert!(Cli::try_parse_from(["x", "completions", "cmd.exe"]).is_err());
        assert!(Cli::try_parse_from(["x", "man", "22"]).is_err());
        let names: Vec<_> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        for n in Generate::NAMES {
            assert!(names.iter().any(|m| m == n), "{n} in {names:?}");
        }
    }

    #[test]
    fn the_man_page_and_completions_name_the_binary_and_its_commands() {
        let man = written(Generate::Man);
        assert!(man.starts_with(".ie"), "{man}");
        assert!(man.contains("ztssh\\-example"), "{man}");
        assert!(man.contains("work"), "{man}");
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = written(Generate::Completions { shell });
            assert!(text.contains("ztssh-example"), "{shell}: {text}");
            assert!(text.contains("effort"), "{shell}: {text}");
        }
    }
}
