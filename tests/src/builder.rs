//! [`WorldBuilder`]: how a [`World`] (or a [`Front`], the same without
//! sshd) is set up and started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The proxy line that allows certificates shorter than the 60 s floor
/// (tests that must see renewals within seconds). A world whose proxy
/// config has it gives its sidecars `--insecure-short-certs` too.
pub const SHORT_CERTS: &str = "insecure_short_certs = true\n";

use crate::zsk::{ACCOUNT, Installed, ensure_account};
use crate::{
    CaSigner, Pki, Proxy, Sshd, TempDir, World, assert_ok, bin, free_port, read_text, run_bounded,
    sshd_bin, user_key,
};

/// A world without sshd: the CA, alice (and any other users) and the
/// proxy in front of a stand-in for sshd, made by
/// [`WorldBuilder::start_in_front_of`]. Dropping it stops the proxy by PID.
pub struct Front {
    pub dir: TempDir,
    pub pki: Pki,
    pub proxy: Proxy,
    pub alice: PathBuf,
    /// The other users ([`WorldBuilder::user`]): name and key, in order.
    pub users: Vec<(String, PathBuf)>,
}

/// How a [`World`] is set up; [`WorldBuilder::start`] starts it. With no
/// settings: alice authorized on the proxy and (standing key, as root) on
/// sshd, the CA's first revocation list in force, a licence for localhost
/// and web1.
///
/// `start` makes, in this order: alice's and the other users' keys, the
/// [`file`](Self::file)s, the CA, proxy state and licence, the first
/// revocation list, the [`before_start`](Self::before_start) hook, the
/// zero-standing-keys account, install and policy, the proxy's config,
/// sshd (listening before it returns), then the proxy (listening before it
/// returns; started again on another port if its port was taken).
/// [`start_in_front_of`](Self::start_in_front_of) makes the same without
/// sshd, for a proxy in front of a stand-in.
#[must_use = "a builder does nothing until start()"]
pub struct WorldBuilder<'a> {
    principals: Vec<String>,
    users: Vec<String>,
    proxy_toml: String,
    run_args: Vec<String>,
    files: Vec<(String, String)>,
    sshd_config: String,
    sshd_head: Option<SshdHead<'a>>,
    upstream_port: Option<u16>,
    before_start: Option<BeforeStart<'a>>,
    zero_standing_keys: Option<String>,
    loopback: bool,
    licence_hosts: Vec<String>,
    ca_signer: CaSigner,
}

type SshdHead<'a> = Box<dyn FnOnce(&Path, u16) -> String + 'a>;
type BeforeStart<'a> = Box<dyn FnOnce(&Pki, &Path) + 'a>;

impl<'a> WorldBuilder<'a> {
    pub(crate) fn new() -> Self {
        Self {
            principals: vec!["alice".into()],
            users: Vec::new(),
            proxy_toml: String::new(),
            run_args: Vec::new(),
            files: Vec::new(),
            sshd_config: String::new(),
            sshd_head: None,
            upstream_port: None,
            before_start: None,
            zero_standing_keys: None,
            loopback: false,
            licence_hosts: vec!["localhost".into(), "web1".into()],
            ca_signer: CaSigner::default(),
        }
    }

    /// The principals the proxy authorizes with alice's key (default:
    /// alice alone). sshd trusts alice's key for root either way.
    pub fn principals(mut self, names: &[&str]) -> Self {
        self.principals = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// The host names the proxy's licence covers (default: localhost and
    /// web1), which a sidecar checks the host ssh gave it (`%h`) against.
    pub fn licence_hosts(mut self, hosts: &[&str]) -> Self {
        self.licence_hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    /// Another user, `name`, with a key of their own (the file `name` in
    /// the world's directory) authorized on the proxy as principal `name`,
    /// after the [`principals`](Self::principals). sshd's authorized_keys
    /// holds alice's key alone.
    pub fn user(mut self, name: &str) -> Self {
        self.users.push(name.to_owned());
        self
    }

    /// Proxy config lines, after the harness's own (`{dir}` is the world's
    /// directory). Called again, the lines add up.
    pub fn proxy_toml(mut self, lines: &str) -> Self {
        self.proxy_toml.push_str(lines);
        self
    }

    /// Extra `ztssh-proxy run` flags (`--listen [::]:{port}`, say); `{port}`
    /// is the proxy's port.
    pub fn run_args(mut self, args: &[&str]) -> Self {
        self.run_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// The CA's root held elsewhere than `root.key`: `init`'s flags
    /// (`--pkcs11 MODULE --token T --key K`, `--agent FP`) and the
    /// environment of every `ztssh-ca` command (the token's config, the
    /// PIN file, the agent's socket).
    pub fn ca_signer(mut self, init_args: &[&str], env: &[(&str, &Path)]) -> Self {
        self.ca_signer = CaSigner {
            init_args: init_args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.display().to_string()))
                .collect(),
        };
        self
    }

    /// A file written into the world's directory before anything starts
    /// (a policy the proxy config names as `{dir}/policy.toml`, say).
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_owned(), text.to_owned()));
        self
    }

    /// sshd config lines after the ones that say where it listens and how
    /// it finds keys (`{dir}` is the world's directory): `HostCertificate`,
    /// say. Called again, the lines add up.
    pub fn sshd_config(mut self, lines: &str) -> Self {
        self.sshd_config.push_str(lines);
        self
    }

    /// sshd's own head lines instead of the harness's (where it listens,
    /// how it finds keys): `head(dir, port)` returns them for the world's
    /// directory and sshd's port, and may write files there first. The
    /// harness still writes alice's key to `dir/authorized_keys`.
    pub fn sshd_head(mut self, head: impl FnOnce(&Path, u16) -> String + 'a) -> Self {
        self.sshd_head = Some(Box::new(head));
        self
    }

    /// The proxy's upstream is `port` instead of sshd's port (sshd is about
    /// to be moved there, say).
    pub fn upstream_port(mut self, port: u16) -> Self {
        self.upstream_port = Some(port);
        self
    }

    /// `hook(pki, dir)` runs once the CA has published its first list and
    /// before sshd and the proxy start: to put that list on a web server,
    /// or to make and certify sshd's host key with [`crate::sshd_host_key`].
    pub fn before_start(mut self, hook: impl FnOnce(&Pki, &Path) + 'a) -> Self {
        self.before_start = Some(Box::new(hook));
        self
    }

    /// Zero standing keys: every principal may log in as the local account
    /// [`ACCOUNT`] (created if missing) by policy; the proxy's
    /// `upstream_source_range` is `range` (one per test, so tests running
    /// at once do not share addresses) and it serves sshd's
    /// `AuthorizedKeysCommand` on a socket beside a root-owned copy of
    /// itself ([`World::installed`]). sshd starts with the lines
    /// `ztssh-proxy sshd-config` prints, unless [`sshd_head`](Self::sshd_head)
    /// says otherwise.
    pub fn zero_standing_keys(mut self, range: &str) -> Self {
        self.zero_standing_keys = Some(range.to_owned());
        self
    }

    /// sshd (with standing keys, alice's in an authorized_keys file) starts
    /// with the lines `ztssh-proxy sshd-config --loopback` prints for it
    /// (docs/OPERATOR.md section 3): where it listens, and, for sshd 9.8+,
    /// the proxy's source exempt from its penalties.
    pub fn loopback_lines(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// Starts the world; returns once sshd and the proxy listen.
    pub fn start(mut self) -> World {
        let r = self.prepare();
        let d = r.dir.path();
        let ak = d.join("authorized_keys");
        fs::write(&ak, &r.alice_pub).expect("write authorized_keys");
        let sshd_port = free_port();
        let upstream = self.upstream_port.unwrap_or(sshd_port);
        let mut head = match (self.sshd_head, &r.installed) {
            (Some(head), _) => head(d, sshd_port),
            (None, Some(installed)) => {
                let (_, config) = Proxy::configure(d, &r.pki, upstream, &r.principals, &r.toml);
                sshd_config_lines(&config, installed)
            }
            (None, None) if self.loopback => {
                let (_, config) = Proxy::configure(d, &r.pki, upstream, &r.principals, &r.toml);
                let out = run_bounded(
                    Command::new(bin("ztssh-proxy"))
                        .args(["sshd-config", "--loopback", "--sshd"])
                        .arg(sshd_bin())
                        .arg("--config")
                        .arg(&config),
                    Duration::from_secs(60),
                );
                assert_ok(&out, "ztssh-proxy sshd-config --loopback");
                format!(
                    "{}AuthorizedKeysFile {}\n",
                    String::from_utf8_lossy(&out.stdout),
                    ak.display()
                )
            }
            (None, None) => format!(
                "Port {sshd_port}\nListenAddress 127.0.0.1\nAuthorizedKeysFile {}\n",
                ak.display()
            ),
        };
        head.push_str(&in_dir(d, &self.sshd_config));
        let sshd = Sshd::start(d, sshd_port, &head);
        let run_args: Vec<&str> = self.run_args.iter().map(String::as_str).collect();
        let proxy = Proxy::start_with(d, &r.pki, upstream, &r.principals, &r.toml, &run_args);
        World {
            dir: r.dir,
            pki: r.pki,
            sshd,
            proxy,
            alice: r.alice,
            users: r.users,
            sshd_head: head,
            short_certs: r.toml.contains(SHORT_CERTS),
            installed: r.installed,
        }
    }

    /// Starts the proxy alone, in front of `upstream` (a stand-in for sshd
    /// that counts or withholds what it is sent); returns once it listens.
    /// The sshd settings do not apply.
    pub fn start_in_front_of(mut self, upstream: u16) -> Front {
        let r = self.prepare();
        let run_args: Vec<&str> = self.run_args.iter().map(String::as_str).collect();
        let d = r.dir.path();
        let proxy = Proxy::start_with(d, &r.pki, upstream, &r.principals, &r.toml, &run_args);
        r.into_front(proxy)
    }

    /// Same, with the proxy's stderr on a pipe: the caller reads (or, on
    /// purpose, stops reading) the log from the returned end.
    pub fn start_in_front_of_piped(mut self, upstream: u16) -> (Front, std::io::PipeReader) {
        assert!(self.run_args.is_empty(), "no run flags with a piped log");
        let r = self.prepare();
        let d = r.dir.path();
        let (proxy, log) = Proxy::start_piped(d, &r.pki, upstream, &r.principals, &r.toml);
        (r.into_front(proxy), log)
    }

    /// Everything before sshd and the proxy: keys, files, the CA and its
    /// first list, the hook, zero standing keys, the proxy's config text.
    fn prepare(&mut self) -> Ready {
        let dir = tempfile::Builder::new()
            .prefix("ztssh-e2e-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let alice = user_key(d, "alice");
        let alice_pub = read_text(&alice.with_extension("pub"));
        let users: Vec<(String, PathBuf)> = self
            .users
            .iter()
            .map(|n| (n.clone(), user_key(d, n)))
            .collect();
        for (name, text) in &self.files {
            fs::write(d.join(name), text).expect("world file");
        }
        let hosts: Vec<&str> = self.licence_hosts.iter().map(String::as_str).collect();
        let pki = Pki::create_held(d, &hosts, self.ca_signer.clone());
        pki.publish_crl();
        if let Some(hook) = self.before_start.take() {
            hook(&pki, d);
        }

        let mut principals: String = self
            .principals
            .iter()
            .map(|n| format!("{n} {}\n", alice_pub.trim()))
            .collect();
        for (name, key) in &users {
            let key = read_text(&key.with_extension("pub"));
            principals.push_str(&format!("{name} {}\n", key.trim()));
        }
        let mut toml = format!("revocation_list = \"{}\"\n", pki.crl().display());
        let installed = self.zero_standing_keys.as_ref().map(|range| {
            let names = self.principals.iter().chain(&self.users);
            zero_standing_keys(d, range, names, &mut toml)
        });
        toml.push_str(&in_dir(d, &self.proxy_toml));
        Ready {
            dir,
            pki,
            alice,
            alice_pub,
            users,
            principals,
            toml,
            installed,
        }
    }
}

/// A world prepared up to starting sshd and the proxy.
struct Ready {
    dir: TempDir,
    pki: Pki,
    alice: PathBuf,
    alice_pub: String,
    users: Vec<(String, PathBuf)>,
    principals: String,
    toml: String,
    installed: Option<Installed>,
}

impl Ready {
    fn into_front(self, proxy: Proxy) -> Front {
        assert!(
            self.installed.is_none(),
            "zero standing keys need sshd: use start()"
        );
        Front {
            dir: self.dir,
            pki: self.pki,
            proxy,
            alice: self.alice,
            users: self.users,
        }
    }
}

/// `text` with `{dir}` replaced by `dir`.
fn in_dir(dir: &Path, text: &str) -> String {
    text.replace("{dir}", &dir.display().to_string())
}

/// The zero-standing-keys set-up: the account, the install, a policy
/// mapping each of `names` to [`ACCOUNT`], and the proxy lines (added to
/// `toml`) that turn the mode on.
fn zero_standing_keys<'n>(
    dir: &Path,
    range: &str,
    names: impl Iterator<Item = &'n String>,
    toml: &mut String,
) -> Installed {
    ensure_account(ACCOUNT);
    let installed = Installed::new();
    let policy = dir.join("policy.toml");
    let text: String = names
        .map(|n| format!("[principal.{n}]\naccounts = [\"{ACCOUNT}\"]\n"))
        .collect();
    fs::write(&policy, text).expect("policy");
    toml.push_str(&format!(
        "policy = \"{}\"\nupstream_source_range = \"{range}\"\n\
         authorized_keys_socket = \"{}\"\nauthorized_keys_command_user = \"nobody\"\n",
        policy.display(),
        installed.socket().display()
    ));
    installed
}

/// What `ztssh-proxy sshd-config` prints for `config`, with the installed
/// command.
fn sshd_config_lines(config: &Path, installed: &Installed) -> String {
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("sshd-config")
            .arg("--sshd")
            .arg(sshd_bin())
            .arg("--config")
            .arg(config)
            .arg("--command")
            .arg(&installed.command),
        Duration::from_secs(60),
    );
    assert_ok(&out, "ztssh-proxy sshd-config");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
