//! CA keys that never sit on disk (issue 25 items 1, 4, 5), against the
//! real `ztssh-ca`: a root in a SoftHSM2 token (a real PKCS#11 module), a
//! root in a real ssh-agent, and the project's software security key
//! behind the agent protocol; the host CA of its own, the issuance caps and
//! the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ztssh_tests::agent::RealAgent;
use ztssh_tests::skagent::{SkAgent, UP, UV};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "ztssh-root";

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A SoftHSM2 token of this test's own (its own config and token
/// directory), PIN 1234, and the PIN files.
struct Token {
    conf: PathBuf,
    pin: PathBuf,
    bad_pin: PathBuf,
}

impl Token {
    fn new(dir: &Path) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: run tests/setup-deps.sh (softhsm2)"
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let o = run_bounded(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", TOKEN])
                .args(["--pin", "1234", "--so-pin", "5678"]),
            T,
        );
        assert_ok(&o, "softhsm2-util --init-token");
        let write_pin = |name: &str, pin: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("{pin}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        Self {
            conf,
            pin: write_pin("pin", "1234"),
            bad_pin: write_pin("bad-pin", "4321"),
        }
    }

    /// `ztssh-ca ARGS` with this token and its PIN file (by the environment).
    fn ca(&self, dir: &Path, args: &[&str]) -> Output {
        run_bounded(
            Command::new(bin("ztssh-ca"))
                .env("SOFTHSM2_CONF", &self.conf)
                .env("ZTSSH_CA_PIN_FILE", &self.pin)
                .args(args)
                .current_dir(dir),
            T,
        )
    }

    /// The token's objects as pkcs11-tool lists them (logged in).
    fn objects(&self) -> String {
        let o = run_bounded(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &self.conf)
                .args(["--module", MODULE, "--token-label", TOKEN])
                .args(["--login", "--pin", "1234", "--list-objects"]),
            T,
        );
        assert_ok(&o, "pkcs11-tool --list-objects");
        out(&o)
    }
}

/// A proxy's licence request, made by the real `ztssh-proxy keygen`.
fn proxy_request(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let o = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .args(["keygen", "--dir"])
            .arg(&state),
        T,
    );
    assert_ok(&o, "proxy keygen");
    state.join("licence-request.pem")
}

fn host_key(dir: &Path) -> PathBuf {
    let key = dir.join("ssh_host_ed25519_key");
    let o = run_bounded(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
        T,
    );
    assert_ok(&o, "ssh-keygen host key");
    key.with_extension("pub")
}

/// No file in the CA directory holds a private key.
fn assert_no_private_key(ca: &Path) {
    assert!(!ca.join("root.key").exists(), "root.key exists");
    for entry in std::fs::read_dir(ca).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains("KEY-----") || text.contains("PUBLIC KEY-----"),
            "{} holds a private key",
            path.display()
        );
    }
}

#[test]
fn a_root_in_softhsm2_signs_everything_and_never_leaves_the_token() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let token = Token::new(dir);
    let pin_flag = ["--pin-file", token.pin.to_str().unwrap()];

    let o = token.ca(
        dir,
        &[
            "init", "--dir", "ca", "--pkcs11", MODULE, "--token", TOKEN, "--key", "root",
        ],
    );
    assert_ok(&o, "init --pkcs11");
    assert_no_private_key(&dir.join("ca"));
    let config = std::fs::read_to_string(dir.join("ca/ca.toml")).unwrap();
    assert!(config.contains("signer = \"pkcs11\""), "{config}");
    assert!(
        !config.contains("1234"),
        "the PIN is never recorded: {config}"
    );

    // The key was made in the token, sensitive and never extractable.
    let objects = token.objects();
    let private = objects
        .split("Private Key Object")
        .nth(1)
        .expect("a private key object");
    assert!(private.contains("label:      root"), "{objects}");
    assert!(private.contains("never extractable"), "{objects}");
    assert!(private.contains("sensitive"), "{objects}");

    // Every signing command works with only --dir and the PIN.
    let request = proxy_request(dir);
    let o = token.ca(
        dir,
        &[
            "authorize-server",
            "--dir",
            "ca",
            "--request",
            request.to_str().unwrap(),
            "--server-id",
            "web1",
            "--hostname",
            "web1",
            "--out",
            "licence.pem",
        ],
    );
    assert_ok(&o, "authorize-server");
    let o = token.ca(dir, &["show", "licence.pem", "--dir", "ca"]);
    assert_ok(&o, "show licence");
    assert!(out(&o).contains("valid (signature checked"), "{}", out(&o));
    let o = token.ca(dir, &["crl", "--dir", "ca", "--out", "crl.pem"]);
    assert_ok(&o, "crl");
    let o = token.ca(dir, &["show", "crl.pem", "--dir", "ca"]);
    assert!(out(&o).contains("signature: valid"), "{}", out(&o));

    // No seed to derive a host CA from: a clear way forward.
    let host_pub = host_key(dir);
    let sign_host = [
        "sign-host",
        "--dir",
        "ca",
        "--host-key",
        host_pub.to_str().unwrap(),
        "--hostname",
        "web1",
        "--out",
        "web1-cert.pub",
    ];
    let o = token.ca(dir, &sign_host);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ztssh-ca host-ca --dir"),
        "{}",
        stderr(&o)
    );
    let o = token.ca(
        dir,
        &[
            "host-ca", "--dir", "ca", "--pkcs11", MODULE, "--token", TOKEN, "--key", "hostca",
        ],
    );
    assert_ok(&o, "host-ca --pkcs11");
    let o = token.ca(dir, &sign_host);
    assert_ok(&o, "sign-host");
    assert_no_private_key(&dir.join("ca"));

    // The certificate's CA is the key known-hosts prints.
    let o = token.ca(dir, &["known-hosts", "--dir", "ca"]);
    assert_ok(&o, "known-hosts");
    let line = out(&o);
    let ca_key = line.split_whitespace().nth(3).expect("key");
    let o = run_bounded(
        Command::new("ssh-keygen")
            .args(["-L", "-f"])
            .arg(dir.join("web1-cert.pub")),
        T,
    );
    let fp_of = |k: &str| {
        let f = dir.join("k.pub");
        std::fs::write(&f, format!("ssh-ed25519 {k}\n")).unwrap();
        let o = run_bounded(Command::new("ssh-keygen").arg("-lf").arg(&f), T);
        out(&o).split_whitespace().nth(1).unwrap().to_owned()
    };
    assert!(out(&o).contains(&fp_of(ca_key)), "{}\n{line}", out(&o));

    // Every signature is in the audit log, with its signer.
    let audit = std::fs::read_to_string(dir.join("ca/audit.log")).unwrap();
    for (kind, signer) in [
        ("licence", "signer=pkcs11:ztssh-root/root"),
        ("revocation-list", "signer=pkcs11:ztssh-root/root"),
        ("delegation", "purpose=host-ca"),
        ("host-certificate", "signer=pkcs11:ztssh-root/hostca"),
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&format!(" {kind} ")) && l.contains(signer)),
            "{kind} {signer}: {audit}"
        );
    }

    // A wrong PIN is a clear error, and nothing is signed.
    let o = run_bounded(
        Command::new(bin("ztssh-ca"))
            .env("SOFTHSM2_CONF", &token.conf)
            .args(["crl", "--dir", "ca", "--out", "crl2.pem"])
            .args(["--pin-file", token.bad_pin.to_str().unwrap()])
            .current_dir(dir),
        T,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused the PIN"), "{}", stderr(&o));
    assert!(!dir.join("crl2.pem").exists());
    // --pin-file wins over the environment.
    let o = token.ca(
        dir,
        &[&["check-signer", "--dir", "ca"][..], &pin_flag[..]].concat(),
    );
    assert_ok(&o, "check-signer");
    assert!(out(&o).contains("signed with ssh-ed25519"), "{}", out(&o));
}

#[test]
fn the_caps_refuse_beyond_them_and_say_where_to_change_them() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let o = run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(["init", "--dir"])
            .arg(dir.join("ca")),
        T,
    );
    assert_ok(&o, "init");
    let cfg = dir.join("ca/ca.toml");
    std::fs::write(
        &cfg,
        "[caps]\nlicence = \"1h\"\nhost_certificate = \"7d\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let request = proxy_request(dir);
    let ca =
        |args: &[&str]| run_bounded(Command::new(bin("ztssh-ca")).args(args).current_dir(dir), T);
    let licence = |ttl: &str| {
        ca(&[
            "authorize-server",
            "--dir",
            "ca",
            "--request",
            request.to_str().unwrap(),
            "--server-id",
            "web1",
            "--hostname",
            "web1",
            "--ttl",
            ttl,
            "--out",
            "licence.pem",
        ])
    };
    let o = licence("2h");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("cap for a licence, 1h"), "{e}");
    assert!(e.contains("caps.licence") && e.contains("ca.toml"), "{e}");
    assert!(!dir.join("licence.pem").exists());
    assert_ok(&licence("1h"), "a licence within the cap");
    let host_pub = host_key(dir);
    let o = ca(&[
        "sign-host",
        "--dir",
        "ca",
        "--host-key",
        host_pub.to_str().unwrap(),
        "--hostname",
        "web1",
        "--ttl",
        "30d",
        "--out",
        "cert.pub",
    ]);
    assert!(
        stderr(&o).contains("caps.host_certificate"),
        "{}",
        stderr(&o)
    );
    // The default delegation cap is 90 days.
    let o = ca(&["keygen", "--out", "deleg.key"]);
    assert_ok(&o, "keygen");
    let o = ca(&[
        "delegate",
        "--dir",
        "ca",
        "--purpose",
        "access",
        "--key",
        "deleg.pub",
        "--ttl",
        "91d",
        "--out",
        "d.pem",
    ]);
    assert!(stderr(&o).contains("caps.delegation"), "{}", stderr(&o));
    // A cap above what ztssh-ca ever signs is refused at its line.
    std::fs::write(&cfg, "[caps]\nlicence = \"48h\"\n").unwrap();
    let o = licence("1h");
    assert!(
        stderr(&o).contains("ca.toml:2: caps.licence"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_root_in_ssh_agent_signs_and_a_vanished_agent_fails_clearly() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let key = dir.join("ca_ed25519");
    let o = run_bounded(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
        T,
    );
    assert_ok(&o, "ssh-keygen");
    let fp = {
        let o = run_bounded(Command::new("ssh-keygen").arg("-lf").arg(&key), T);
        out(&o).split_whitespace().nth(1).unwrap().to_owned()
    };
    let sock = dir.join("agent.sock");
    let agent = RealAgent::start(&sock, &[&key]);
    std::fs::remove_file(&key).unwrap();
    let ca = |args: &[&str]| {
        run_bounded(
            Command::new(bin("ztssh-ca"))
                .env("SSH_AUTH_SOCK", &sock)
                .args(args)
                .current_dir(dir),
            T,
        )
    };
    assert_ok(
        &ca(&["init", "--dir", "ca", "--agent", &fp]),
        "init --agent",
    );
    assert_no_private_key(&dir.join("ca"));
    let request = proxy_request(dir);
    let o = ca(&[
        "authorize-server",
        "--dir",
        "ca",
        "--request",
        request.to_str().unwrap(),
        "--server-id",
        "web1",
        "--hostname",
        "web1",
        "--out",
        "licence.pem",
    ]);
    assert_ok(&o, "authorize-server through the agent");
    assert!(out(&ca(&["show", "licence.pem", "--dir", "ca"])).contains("valid (signature checked"));
    assert_ok(&ca(&["crl", "--dir", "ca", "--out", "crl.pem"]), "crl");
    // A file host CA of its own, certified by the agent's root.
    assert_ok(&ca(&["host-ca", "--dir", "ca"]), "host-ca (file)");
    let host_pub = host_key(dir);
    let o = ca(&[
        "sign-host",
        "--dir",
        "ca",
        "--host-key",
        host_pub.to_str().unwrap(),
        "--hostname",
        "web1",
        "--out",
        "cert.pub",
    ]);
    assert_ok(&o, "sign-host");
    drop(agent);
    let o = ca(&["crl", "--dir", "ca", "--out", "crl2.pem"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot reach ssh-agent"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_security_key_root_needs_a_touch_for_each_signature() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let sock = dir.join("sk.sock");
    let agent = SkAgent::start(&sock, [5; 32], UP);
    let fp = agent
        .public
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let ca = |args: &[&str]| {
        run_bounded(
            Command::new(bin("ztssh-ca"))
                .env("SSH_AUTH_SOCK", &sock)
                .args(args)
                .current_dir(dir),
            T,
        )
    };
    let check = ["check-signer", "--agent", fp.as_str()];
    let o = ca(&check);
    assert_ok(&o, "check-signer, touched");
    let first = out(&o);
    assert!(first.contains("sk-ssh-ed25519@openssh.com"), "{first}");
    assert!(first.contains("user presence yes"), "{first}");
    assert!(first.contains("counter 1"), "{first}");
    let o = ca(&check);
    assert_ok(&o, "check-signer, touched again");
    assert!(out(&o).contains("counter 2"), "{}", out(&o));
    assert_eq!(agent.signs(), 2, "one touch per signature");

    // Verified but not touched: refused, clearly.
    agent.set_flags(UV);
    let o = ca(&check);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("without user presence"), "{e}");
    assert!(e.contains("nobody touched it"), "{e}");

    // Not a hybrid root's Ed25519 half: said plainly, nothing written.
    agent.set_flags(UP);
    let o = ca(&["init", "--dir", "ca", "--agent", &fp, "--pq"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must be a plain Ed25519 key"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("ca/root.pub").exists());
}

/// Issue 25 item 2: a FIDO security key is a root of its own; every
/// signature carries its flags and counter, and a touch.
#[test]
fn a_session_works_through_a_proxy_licensed_by_a_security_key_root() {
    let agent_dir = TempDir::new().unwrap();
    let sock = agent_dir.path().join("sk.sock");
    let agent = SkAgent::start(&sock, [6; 32], UP);
    let fp = agent
        .public
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let w = World::builder()
        .ca_signer(&["--agent", &fp], &[("SSH_AUTH_SOCK", &sock)])
        .start();
    let root = w.pki.root_key();
    assert_eq!(root.algorithm(), ztssh_proto::rootkey::Algorithm::SkEd25519);
    // init's probe, the licence and the first list: one touch each.
    assert!(agent.signs() >= 3, "{}", agent.signs());
    let o = run_bounded(w.ssh().arg("echo ok"), T);
    assert_ok(&o, "ssh through a proxy licensed by a security key root");
    assert_eq!(out(&o), "ok\n");
    // An untouched signature is refused by the CA before it is used.
    agent.set_flags(UV);
    let mut crl = w.pki.signer.command();
    crl.args(["crl", "--dir"])
        .arg(&w.pki.ca)
        .arg("--out")
        .arg(w.pki.crl());
    let o = run_bounded(&mut crl, T);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("without user presence"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_session_works_through_a_proxy_licensed_by_a_softhsm2_root() {
    let token_dir = TempDir::new().unwrap();
    let token = Token::new(token_dir.path());
    let w = World::builder()
        .ca_signer(
            &["--pkcs11", MODULE, "--token", TOKEN, "--key", "root"],
            &[
                ("SOFTHSM2_CONF", &token.conf),
                ("ZTSSH_CA_PIN_FILE", &token.pin),
            ],
        )
        .start();
    assert!(!w.pki.ca.join("root.key").exists());
    let config = std::fs::read_to_string(w.pki.ca.join("ca.toml")).unwrap();
    assert!(config.contains("signer = \"pkcs11\""), "{config}");
    // The licence and the list in force were signed in the token.
    let audit = std::fs::read_to_string(w.pki.ca.join("audit.log")).unwrap();
    assert!(
        audit.contains(" licence ") && audit.contains(" revocation-list "),
        "{audit}"
    );
    let o = run_bounded(w.ssh().arg("echo ok"), T);
    assert_ok(&o, "ssh through a proxy licensed by a SoftHSM2 root");
    assert_eq!(out(&o), "ok\n");
}

/// `ztssh-ca ARGS`, bounded.
fn ztssh_ca(dir: &Path, args: &[&str]) -> Output {
    run_bounded(Command::new(bin("ztssh-ca")).args(args).current_dir(dir), T)
}

#[test]
fn the_audit_log_names_a_key_file_by_the_path_given_not_the_locked_descriptor() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    assert_ok(&ztssh_ca(dir, &["init", "--dir", "ca"]), "init");
    assert_ok(
        &ztssh_ca(dir, &["crl", "--dir", "ca", "--out", "crl.pem"]),
        "crl",
    );
    let audit = std::fs::read_to_string(dir.join("ca/audit.log")).unwrap();
    // `/proc/self/fd/N` names nothing once the command has ended.
    assert!(!audit.contains("/proc/self/fd"), "{audit}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains(" revocation-list ") && l.ends_with(" signer=file:ca/root.key")),
        "{audit}"
    );
}

/// A host CA whose certification the root's records revoke used to sign
/// hosts on as before: `revoke --delegation host-ca.delegation` changed
/// nothing. It now signs no more, and says how to make a new one.
#[test]
fn a_revoked_host_ca_signs_no_more_hosts() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    assert_ok(&ztssh_ca(dir, &["init", "--dir", "ca"]), "init");
    let o = ztssh_ca(dir, &["host-ca", "--dir", "ca"]);
    assert_ok(&o, "host-ca");
    // Printed by the path given, not the locked descriptor.
    assert!(
        out(&o).contains("held by file:ca/host-ca.key"),
        "{}",
        out(&o)
    );
    assert!(!out(&o).contains("/proc/self/fd"), "{}", out(&o));
    let host_pub = host_key(dir);
    let sign = |name: &str| {
        ztssh_ca(
            dir,
            &[
                "sign-host",
                "--dir",
                "ca",
                "--host-key",
                host_pub.to_str().unwrap(),
                "--hostname",
                "web1",
                "--out",
                name,
            ],
        )
    };
    assert_ok(&sign("before.pub"), "sign-host before the revocation");
    let trusted = ztssh_ca(dir, &["known-hosts", "--dir", "ca"]);
    assert_ok(&trusted, "known-hosts before the revocation");
    let key = out(&trusted)
        .trim()
        .strip_prefix("@cert-authority * ")
        .unwrap_or_else(|| panic!("{}", out(&trusted)))
        .to_owned();
    let o = ztssh_ca(
        dir,
        &[
            "revoke",
            "--dir",
            "ca",
            "--delegation",
            "ca/host-ca.delegation",
        ],
    );
    assert_ok(&o, "revoke --delegation host-ca.delegation");
    let o = sign("after.pub");
    assert!(!o.status.success(), "a revoked host CA signed: {}", out(&o));
    assert!(
        stderr(&o).contains("this host CA is revoked")
            && stderr(&o).contains("ztssh-ca host-ca --dir ca"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("after.pub").exists());
    let audit = std::fs::read_to_string(dir.join("ca/audit.log")).unwrap();
    assert_eq!(audit.matches(" host-certificate ").count(), 1, "{audit}");
    // known-hosts printed the revoked CA's trust line as before, with no
    // word: it now prints none, and gives the line that makes ssh refuse
    // that CA instead.
    let o = ztssh_ca(dir, &["known-hosts", "--dir", "ca"]);
    assert!(!o.status.success(), "a revoked host CA's line: {}", out(&o));
    assert!(!out(&o).contains("@cert-authority"), "{}", out(&o));
    assert!(
        stderr(&o).contains("this host CA is revoked")
            && stderr(&o).contains(&format!("@revoked * {key}")),
        "{}",
        stderr(&o)
    );
}

/// `init --pkcs11` refused a token key that can leave the token, but
/// `host-ca --pkcs11` took one: a host CA whose private key the token
/// hands out. Both refuse it now, and the CA directory is left as it was.
#[test]
fn a_token_key_that_can_leave_the_token_holds_no_ca_key() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let token = Token::new(dir);
    // An extractable, non-sensitive Ed25519 key, made with pkcs11-tool.
    let o = run_bounded(
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &token.conf)
            .args(["--module", MODULE, "--token-label", TOKEN])
            .args(["--login", "--pin", "1234", "--keypairgen"])
            .args([
                "--key-type",
                "EC:edwards25519",
                "--label",
                "leaky",
                "--id",
                "77",
            ])
            .arg("--extractable"),
        T,
    );
    assert_ok(&o, "pkcs11-tool --keypairgen --extractable");
    let leaky = token.objects();
    assert!(!leaky.contains("never extractable"), "{leaky}");
    let refused = |o: &Output, what: &str| {
        assert!(!o.status.success(), "{what} took a leaky key: {}", out(o));
        assert!(
            stderr(o).contains("pkcs11:ztssh-root/leaky can leave its token"),
            "{what}: {}",
            stderr(o)
        );
    };
    let o = token.ca(
        dir,
        &[
            "init", "--dir", "ca", "--pkcs11", MODULE, "--token", TOKEN, "--key", "leaky",
        ],
    );
    refused(&o, "init --pkcs11");
    assert!(!dir.join("ca/root.pub").exists());
    // A root of its own in the token, then the host CA on the leaky key.
    let o = token.ca(
        dir,
        &[
            "init", "--dir", "ca2", "--pkcs11", MODULE, "--token", TOKEN, "--key", "root",
        ],
    );
    assert_ok(&o, "init --pkcs11");
    let o = token.ca(
        dir,
        &[
            "host-ca", "--dir", "ca2", "--pkcs11", MODULE, "--token", TOKEN, "--key", "leaky",
        ],
    );
    refused(&o, "host-ca --pkcs11");
    assert!(!dir.join("ca2/host-ca.delegation").exists());
    assert!(!dir.join("ca2/host-ca.pub").exists());
    let config = std::fs::read_to_string(dir.join("ca2/ca.toml")).unwrap();
    assert!(!config.contains("leaky"), "{config}");
}

/// `host-ca --pkcs11 ... --key root` found the root's own key in the token
/// and had the root certify itself as the host CA, so every `sign-host`
/// used the root. The host CA must be a key of its own.
#[test]
fn the_root_key_cannot_be_its_own_host_ca() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let token = Token::new(dir);
    let o = token.ca(
        dir,
        &[
            "init", "--dir", "ca", "--pkcs11", MODULE, "--token", TOKEN, "--key", "root",
        ],
    );
    assert_ok(&o, "init --pkcs11");
    let o = token.ca(
        dir,
        &[
            "host-ca", "--dir", "ca", "--pkcs11", MODULE, "--token", TOKEN, "--key", "root",
        ],
    );
    assert!(
        !o.status.success(),
        "the root became the host CA: {}",
        out(&o)
    );
    assert!(
        stderr(&o).contains("holds the root key itself"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("ca/host-ca.delegation").exists());
    let audit = std::fs::read_to_string(dir.join("ca/audit.log")).unwrap_or_default();
    assert!(!audit.contains("purpose=host-ca"), "{audit}");
}
