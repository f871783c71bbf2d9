//! A temporary CA, the proxy's state and licence, and user keys, made
//! with the real `ztssh-ca`, `ztssh-proxy keygen` and `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::ok;
use crate::{bin, run_bounded};

/// `ztssh-ca init` in `dir/ca`; returns the CA directory.
pub fn ca_init(dir: &Path) -> PathBuf {
    ca_init_held(dir, &CaSigner::default())
}

/// Where the harness's CA keeps its root: `init`'s extra flags (`--pkcs11
/// ...`, `--agent FP`) and the environment every `ztssh-ca` command of the
/// world runs with (`SOFTHSM2_CONF`, `ZTSSH_CA_PIN_FILE`, `SSH_AUTH_SOCK`).
#[derive(Clone, Debug, Default)]
pub struct CaSigner {
    /// `init`'s flags after `--dir`.
    pub init_args: Vec<String>,
    /// Environment for every `ztssh-ca` command.
    pub env: Vec<(String, String)>,
}

impl CaSigner {
    /// `ztssh-ca` with this environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin("ztssh-ca"));
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

/// `ztssh-ca init ARGS` in `dir/ca`; returns the CA directory.
pub fn ca_init_held(dir: &Path, signer: &CaSigner) -> PathBuf {
    let ca = dir.join("ca");
    ok(
        &run_bounded(
            signer
                .command()
                .arg("init")
                .arg("--dir")
                .arg(&ca)
                .args(&signer.init_args),
            Duration::from_secs(30),
        ),
        "ca init",
    );
    ca
}

/// A temporary CA plus a proxy state directory and licence.
pub struct Pki {
    pub ca: PathBuf,
    pub state: PathBuf,
    pub licence: PathBuf,
    /// Where the CA's root is held.
    pub signer: CaSigner,
}

impl Pki {
    /// `ztssh-ca init`, `ztssh-proxy keygen`, `ztssh-ca authorize-server`.
    pub fn create(dir: &Path, hostnames: &[&str]) -> Self {
        Self::create_held(dir, hostnames, CaSigner::default())
    }

    /// [`Pki::create`] with the root held by `signer`.
    pub fn create_held(dir: &Path, hostnames: &[&str], signer: CaSigner) -> Self {
        let ca = ca_init_held(dir, &signer);
        let state = dir.join("state");
        let licence = dir.join("licence.pem");
        let t = Duration::from_secs(10);
        ok(
            &run_bounded(
                Command::new(bin("ztssh-proxy"))
                    .arg("keygen")
                    .arg("--dir")
                    .arg(&state),
                t,
            ),
            "proxy keygen",
        );
        let mut auth = signer.command();
        auth.arg("authorize-server")
            .arg("--dir")
            .arg(&ca)
            .arg("--request")
            .arg(state.join("licence-request.pem"));
        auth.args(["--server-id", "web1"]);
        for h in hostnames {
            auth.args(["--hostname", h]);
        }
        auth.arg("--out").arg(&licence);
        ok(&run_bounded(&mut auth, t), "authorize-server");
        Self {
            ca,
            state,
            licence,
            signer,
        }
    }

    /// The root public key file.
    pub fn root_pub(&self) -> PathBuf {
        self.ca.join("root.pub")
    }

    /// The root public key.
    pub fn root_key(&self) -> ztssh_proto::rootkey::RootKey {
        ztssh_keyfile::read_root_public(&self.root_pub()).expect("root.pub")
    }

    /// Where the proxy reads its revocation list.
    pub fn crl(&self) -> PathBuf {
        self.ca.parent().expect("dir").join("crl.pem")
    }

    /// `ztssh-ca crl`: signs and atomically replaces the revocation list.
    pub fn publish_crl(&self) {
        let mut c = self.signer.command();
        c.arg("crl")
            .arg("--dir")
            .arg(&self.ca)
            .arg("--out")
            .arg(self.crl());
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca crl",
        );
    }

    /// `ztssh-ca crl --ttl TTL` into `out` (a web server's copy, say):
    /// the next version, signed and atomically replaced.
    pub fn publish_crl_to(&self, out: &Path, ttl: &str) {
        let mut c = self.signer.command();
        c.arg("crl")
            .arg("--dir")
            .arg(&self.ca)
            .arg("--out")
            .arg(out)
            .args(["--ttl", ttl]);
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca crl",
        );
    }

    /// `ztssh-ca revoke --KIND VALUE`.
    pub fn revoke(&self, kind: &str, value: &str) {
        let mut c = self.signer.command();
        c.arg("revoke")
            .arg("--dir")
            .arg(&self.ca)
            .arg(format!("--{kind}"))
            .arg(value);
        ok(
            &run_bounded(&mut c, Duration::from_secs(10)),
            "ztssh-ca revoke",
        );
    }
}

/// A user key pair made with ssh-keygen.
pub fn user_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    ok(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path),
            Duration::from_secs(10),
        ),
        "ssh-keygen user",
    );
    path
}
