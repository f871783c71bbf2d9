//! A whole private world (a CA, a real sshd, the real proxy in front of
//! it, and user alice), made by [`World::builder`], and the client
//! commands that go through it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::zsk::{ACCOUNT, Installed, ensure_account};
use crate::{
    Pki, Proxy, Sshd, TempDir, assert_ok, bin, count, free_port, read_text, run_bounded, user_key,
    wait_until,
};

/// A whole private world: CA, sshd, proxy, and user alice (plus any other
/// users the builder named). Dropping it stops sshd and the proxy by PID,
/// then removes what zero standing keys installed.
pub struct World {
    pub dir: TempDir,
    pub pki: Pki,
    pub sshd: Sshd,
    pub proxy: Proxy,
    pub alice: PathBuf,
    /// The other users ([`WorldBuilder::user`]): name and key, in order.
    pub users: Vec<(String, PathBuf)>,
    /// The lines at the top of sshd's config, before the harness's own
    /// (in zero-standing-keys mode, what `ztssh-proxy sshd-config` printed).
    pub sshd_head: String,
    /// Zero standing keys' installed command and socket directory; last,
    /// so they are removed after sshd and the proxy stop.
    installed: Option<Installed>,
}

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
}

type SshdHead<'a> = Box<dyn FnOnce(&Path, u16) -> String + 'a>;
type BeforeStart<'a> = Box<dyn FnOnce(&Pki, &Path) + 'a>;

impl World {
    /// A builder for a world; see [`WorldBuilder`].
    pub fn builder<'a>() -> WorldBuilder<'a> {
        WorldBuilder {
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
        }
    }

    /// The default world: `World::builder().start()`.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// The key of `name`, a user the builder named.
    pub fn key(&self, name: &str) -> &Path {
        self.users
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_path())
            .unwrap_or_else(|| panic!("no user {name} in this world"))
    }

    /// What zero standing keys installed (the command sshd runs, the
    /// socket's directory).
    pub fn installed(&self) -> &Installed {
        self.installed
            .as_ref()
            .expect("a world without zero standing keys (WorldBuilder::zero_standing_keys)")
    }

    /// Starts `ssh host 'echo started; sleep 60'` through ztssh and waits
    /// until the proxy has connected it to sshd and sshd accepted it.
    pub fn live_session(&self) -> Child {
        let before = count(&self.proxy.log_text(), "event=\"upstream_connected\"");
        let mut cmd = self.ssh();
        cmd.arg("echo started; sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn ssh");
        wait_until(Duration::from_secs(20), "session to connect", || {
            count(&self.proxy.log_text(), "event=\"upstream_connected\"") > before
                && count(&self.sshd.log_text(), "Accepted publickey") > before
        });
        child
    }

    /// `ztssh-sidecar` as alice for host web1, connecting to `port` on
    /// loopback (a stand-in server, say) instead of the proxy.
    pub fn sidecar_to(&self, port: u16) -> Command {
        let mut c = Command::new(bin("ztssh-sidecar"));
        c.arg("--root")
            .arg(self.pki.root_pub())
            .arg("--identity")
            .arg(&self.alice)
            .arg("--principal")
            .arg("alice")
            .arg("--connect")
            .arg(format!("127.0.0.1:{port}"))
            .arg("web1")
            .arg("22");
        c
    }

    /// The ProxyCommand for ssh, with extra sidecar flags.
    pub fn proxy_command(&self, extra: &str) -> String {
        self.proxy_command_for(&self.alice, extra)
    }

    /// The ProxyCommand with `identity` signing for the sidecar as alice.
    pub fn proxy_command_for(&self, identity: &Path, extra: &str) -> String {
        self.proxy_command_as(identity, "alice", extra)
    }

    /// The ProxyCommand with `identity` signing as `principal`.
    pub fn proxy_command_as(&self, identity: &Path, principal: &str, extra: &str) -> String {
        format!(
            "{} --root {} --identity {} --principal {principal} {extra} %h %p",
            bin("ztssh-sidecar").display(),
            self.pki.root_pub().display(),
            identity.display()
        )
    }

    /// `ssh root@localhost` where `key` logs in to sshd and also signs for
    /// the sidecar, claiming to be alice.
    pub fn ssh_with_key(&self, key: &Path) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.direct_opts(key));
        c.arg("-o")
            .arg(format!("ProxyCommand={}", self.proxy_command_for(key, "")));
        c.arg("-p")
            .arg(self.proxy.port.to_string())
            .arg("root@localhost");
        c
    }

    /// Common client options (`-F /dev/null`, the ProxyCommand, no prompts).
    pub fn client_opts(&self, identity: &Path, sidecar_extra: &str) -> Vec<String> {
        let mut opts = self.direct_opts(identity);
        opts.push("-o".into());
        opts.push(format!(
            "ProxyCommand={}",
            self.proxy_command(sidecar_extra)
        ));
        opts
    }

    /// The same options without a ProxyCommand (straight to sshd).
    pub fn direct_opts(&self, identity: &Path) -> Vec<String> {
        let kh = self.dir.path().join("known_hosts");
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            identity.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", kh.display()),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// `ssh -p PORT root@localhost` through the sidecar.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-p")
            .arg(self.proxy.port.to_string());
        c.arg("root@localhost");
        c
    }

    /// `scp -P PORT` through the sidecar (add the paths).
    pub fn scp(&self) -> Command {
        let mut c = Command::new("scp");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-P")
            .arg(self.proxy.port.to_string());
        c
    }

    /// `sftp -P PORT` through the sidecar (add `-b` and the host).
    pub fn sftp(&self) -> Command {
        let mut c = Command::new("sftp");
        c.args(self.client_opts(&self.alice, ""))
            .arg("-P")
            .arg(self.proxy.port.to_string());
        c
    }

    /// The `-e` argument for rsync.
    pub fn rsync_rsh(&self) -> String {
        let opts = self.client_opts(&self.alice, "");
        let quoted: Vec<String> = opts.iter().map(|o| format!("'{o}'")).collect();
        format!("ssh {} -p {}", quoted.join(" "), self.proxy.port)
    }
}

impl<'a> WorldBuilder<'a> {
    /// The principals the proxy authorizes with alice's key (default:
    /// alice alone). sshd trusts alice's key for root either way.
    pub fn principals(mut self, names: &[&str]) -> Self {
        self.principals = names.iter().map(|n| (*n).to_owned()).collect();
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
        let pki = Pki::create(d, &["localhost", "web1"]);
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
            .arg("--config")
            .arg(config)
            .arg("--command")
            .arg(&installed.command),
        Duration::from_secs(60),
    );
    assert_ok(&out, "ztssh-proxy sshd-config");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
