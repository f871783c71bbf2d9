//! A whole private world (a CA, a real sshd, the real proxy in front of
//! it, and user alice), made by [`World::builder`], and the client
//! commands that go through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::zsk::Installed;
use crate::{Pki, Proxy, Sshd, TempDir, WorldBuilder, bin, count, wait_until};

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
    /// The proxy was told `insecure_short_certs = true`: the sidecars the
    /// world starts get `--insecure-short-certs` too.
    pub short_certs: bool,
    /// Zero standing keys' installed command and socket directory; last,
    /// so they are removed after sshd and the proxy stop.
    pub(crate) installed: Option<Installed>,
}

impl World {
    /// A builder for a world; see [`WorldBuilder`].
    pub fn builder<'a>() -> WorldBuilder<'a> {
        WorldBuilder::new()
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
        if self.short_certs {
            c.arg("--insecure-short-certs");
        }
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
        let short = if self.short_certs {
            "--insecure-short-certs "
        } else {
            ""
        };
        format!(
            "{} {short}--root {} --identity {} --principal {principal} {extra} %h %p",
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
