//! Hybrid post-quantum roots end to end (issue 25 items 2, 3 and 6), with
//! the real `ztssh-ca init --pq`, proxy, sidecar, sshd and ssh: a session
//! through a hybrid root; a licence without its ML-DSA half, or with it
//! corrupted, refused by the sidecar; such a revocation list refused by the
//! proxy; and the Ed25519 roots of before working as they did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use ztssh_proto::armor;
use ztssh_proto::cert::{Licence, LicenceVerified};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{self, HELLO_LEN};
use ztssh_proto::keys::NoiseKeypair;
use ztssh_proto::labels::pem;
use ztssh_proto::rootkey::{HYBRID_SIG_LEN, MLDSA65_SIG_LEN, RootKey};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// A passphrase file of mode 0600 in `dir`.
fn passphrase_file(dir: &Path) -> PathBuf {
    let p = dir.join("passphrase");
    std::fs::write(&p, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A world whose root is hybrid (`init --pq`).
fn hybrid_world(pass_dir: &Path) -> World {
    let pass = passphrase_file(pass_dir);
    World::builder()
        .ca_signer(&["--pq"], &[("ZTSSH_CA_PASSPHRASE_FILE", &pass)])
        .start()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_session_works_through_a_proxy_licensed_by_a_hybrid_root() {
    let tmp = TempDir::new().unwrap();
    let w = hybrid_world(tmp.path());
    let root = w.pki.root_key();
    assert!(root.is_hybrid(), "{root:?}");
    let key = w.pki.ca.join("root-mldsa.age");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let sealed = std::fs::read(&key).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    // The licence the proxy serves carries both halves.
    let der = armor::decode_expect(pem::LICENCE, &std::fs::read(&w.pki.licence).unwrap()).unwrap();
    Licence::decode_verified(&der, &root, now()).expect("hybrid licence");
    assert!(Licence::decode_verified(&der, &RootKey::Ed25519(root.id()), now()).is_err());
    let o = run_bounded(w.ssh().arg("echo ok"), T);
    assert_ok(&o, "ssh through a proxy licensed by a hybrid root");
    assert_eq!(out(&o), "ok\n");
    // Without root.pub the Ed25519 half alone does not sign (the review's
    // F2): no list every hybrid pin would refuse, no version spent.
    let pinned = w.pki.ca.join("root.pub");
    let aside = tmp.path().join("root.pub");
    std::fs::rename(&pinned, &aside).unwrap();
    let o = run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(["crl", "--dir"])
            .arg(&w.pki.ca)
            .arg("--out")
            .arg(tmp.path().join("crl.pem")),
        T,
    );
    std::fs::rename(&aside, &pinned).unwrap();
    assert!(!o.status.success(), "signed with the Ed25519 half alone");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("root.pub is missing"), "{said}");
    assert!(!tmp.path().join("crl.pem").exists());
    // A licence too long for the handshake is not signed (the review's F4):
    // 32 host names of 240 characters.
    let pass = passphrase_file(tmp.path());
    let mut auth = Command::new(bin("ztssh-ca"));
    auth.env("ZTSSH_CA_PASSPHRASE_FILE", &pass)
        .args(["authorize-server", "--dir"])
        .arg(&w.pki.ca)
        .arg("--request")
        .arg(w.pki.state.join("licence-request.pem"))
        .args(["--server-id", "web1"]);
    for n in 0..32 {
        auth.args([
            "--hostname",
            &format!("h{n:02}{}.example.com", "a".repeat(224)),
        ]);
    }
    let long = tmp.path().join("long.pem");
    let o = run_bounded(auth.arg("--out").arg(&long), T);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a licence too long for message 2 was signed"
    );
    assert!(said.contains("too long for the handshake"), "{said}");
    assert!(!long.exists());
    // No delegation every hybrid pin would refuse is issued (the review's F3).
    let key = tmp.path().join("online.key");
    let ca = |args: &[&std::ffi::OsStr]| {
        run_bounded(
            Command::new(bin("ztssh-ca"))
                .env("ZTSSH_CA_PASSPHRASE_FILE", &pass)
                .args(args),
            T,
        )
    };
    assert_ok(
        &ca(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()]),
        "keygen",
    );
    let dlg = tmp.path().join("online.dlg");
    let o = ca(&[
        "delegate".as_ref(),
        "--dir".as_ref(),
        w.pki.ca.as_os_str(),
        "--purpose".as_ref(),
        "revocations".as_ref(),
        "--key".as_ref(),
        key.with_extension("pub").as_os_str(),
        "--out".as_ref(),
        dlg.as_os_str(),
    ]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a delegation under a hybrid root was issued"
    );
    assert!(said.contains("this root is hybrid"), "{said}");
    assert!(!dlg.exists());
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server that presents `licence` (the real proxy refuses to start with
/// a licence that does not verify, so this one speaks the protocol through
/// the library) for the proxy's own Noise key; returns its port.
fn serve(licence: Licence, state: &Path) -> u16 {
    let noise = ztssh_keyfile::read_secret(&state.join("noise.key"), pem::NOISE_KEY)
        .map(NoiseKeypair::from_private)
        .expect("noise key");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let licence = LicenceVerified::assume(licence);
        // Padded as the hybrid pin expects, whatever the licence: a server
        // that presents a stripped licence controls message 2's length.
        let state = handshake::server_start(
            &noise,
            &licence,
            FrameSize::default(),
            &mut UnwrapErr(SysRng),
        )
        .expect("start")
        .pad_as_hybrid(true);
        let mut msg1 = vec![0u8; HELLO_LEN];
        s.read_exact(&mut msg1).expect("msg1");
        let (_, msg2) = state
            .handle_client_hello(&msg1, &mut UnwrapErr(SysRng))
            .expect("hello");
        s.write_all(&msg2).expect("msg2");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    port
}

/// The sidecar, pinning `root`, against a server on `port`.
fn sidecar(root: &Path, alice: &Path, port: u16) -> Output {
    run_bounded(
        Command::new(bin("ztssh-sidecar"))
            .arg("--root")
            .arg(root)
            .arg("--identity")
            .arg(alice)
            .arg("--principal")
            .arg("alice")
            .arg("--connect")
            .arg(format!("127.0.0.1:{port}"))
            .arg("localhost")
            .arg("22"),
        T,
    )
}

/// A hybrid-signed object `der` with its ML-DSA half removed (the body and
/// the Ed25519 half, in the Ed25519 form), and with the byte `back` from
/// its end flipped by `mask` (inside the ML-DSA half).
fn stripped_and_corrupted(der: &[u8], back: usize, mask: u8) -> (Vec<u8>, Vec<u8>) {
    let n = der.len();
    let stripped = [
        &der[..n - HYBRID_SIG_LEN],
        &der[n - HYBRID_SIG_LEN + 6..n - MLDSA65_SIG_LEN],
    ]
    .concat();
    let mut corrupted = der.to_vec();
    corrupted[n - back] ^= mask;
    (stripped, corrupted)
}

#[test]
fn a_licence_without_or_with_a_corrupted_ml_dsa_half_is_refused_by_the_sidecar() {
    let tmp = TempDir::new().unwrap();
    let w = hybrid_world(tmp.path());
    let der = armor::decode_expect(pem::LICENCE, &std::fs::read(&w.pki.licence).unwrap()).unwrap();
    let (stripped, corrupted) = stripped_and_corrupted(&der, 100, 0x40);
    let cases = [
        (
            stripped,
            "carries no post-quantum (ML-DSA-65) signature, but your root",
        ),
        (
            corrupted,
            "the post-quantum (ML-DSA-65) signature of localhost's licence does not verify",
        ),
    ];
    for (bytes, expected) in cases {
        let licence = Licence::decode(&bytes).expect("parses");
        let port = serve(licence, &w.pki.state);
        let o = sidecar(&w.pki.root_pub(), &w.alice, port);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("refusing to talk to localhost"),
            "{}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty(), "stdout carries only ssh bytes");
    }
}

#[test]
fn a_revocation_list_without_or_with_a_corrupted_ml_dsa_half_is_refused_by_the_proxy() {
    let tmp = TempDir::new().unwrap();
    let w = hybrid_world(tmp.path());
    let check = || {
        run_bounded(
            Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(&w.proxy.config),
            T,
        )
    };
    assert_ok(&check(), "check with the hybrid list");
    let good = std::fs::read(w.pki.crl()).unwrap();
    let der = armor::decode_expect(pem::CRL, &good).unwrap();
    let (stripped, corrupted) = stripped_and_corrupted(&der, 1, 0x01);
    let cases = [
        (
            stripped,
            "carries no hybrid signature, but the pinned root is hybrid",
        ),
        (
            corrupted,
            "its ML-DSA-65 (post-quantum) signature does not verify",
        ),
    ];
    for (bytes, expected) in cases {
        std::fs::write(w.pki.crl(), armor::encode(pem::CRL, &bytes).unwrap()).unwrap();
        let o = check();
        assert!(!o.status.success(), "{}", out(&o));
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
        assert!(stderr(&o).contains("revocation list"), "{}", stderr(&o));
        // The running proxy, which watches the file, refuses it too.
        wait_until(
            Duration::from_secs(15),
            "the running proxy refuses it",
            || w.proxy.log_text().contains(expected),
        );
    }
    // The list in force stays the genuine one: sessions go on.
    let o = run_bounded(w.ssh().arg("echo ok"), T);
    assert_ok(&o, "ssh after the refused lists");
    assert_eq!(out(&o), "ok\n");
}

#[test]
fn ed25519_and_hybrid_pins_refuse_each_others_proxies_and_ed25519_still_works() {
    let tmp = TempDir::new().unwrap();
    let hybrid = hybrid_world(tmp.path());
    let classic = World::start();
    assert!(!classic.pki.root_key().is_hybrid());
    // The Ed25519 world as before.
    let o = run_bounded(classic.ssh().arg("echo ok"), T);
    assert_ok(&o, "ssh through a proxy licensed by an Ed25519 root");
    assert_eq!(out(&o), "ok\n");
    // A sidecar pinning the hybrid root refuses the Ed25519 root's proxy...
    let o = sidecar(&hybrid.pki.root_pub(), &hybrid.alice, classic.proxy.port);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("licensed by an Ed25519 root, but your root")
            && stderr(&o).contains("is hybrid (Ed25519 + ML-DSA-65)"),
        "{}",
        stderr(&o)
    );
    // ...and one pinning the Ed25519 root refuses the hybrid root's.
    let o = sidecar(&classic.pki.root_pub(), &classic.alice, hybrid.proxy.port);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a proxy licensed by a hybrid (post-quantum) root while your root"),
        "{}",
        stderr(&o)
    );
}
