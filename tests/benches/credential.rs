//! Handshake and proof CPU with an OpenSSH user certificate, against a
//! plain user key, side by side in one run of one build (issue 21's first
//! figure).
//!
//! Each row is one kind of credential: a plain Ed25519 user key (on a
//! proxy without a user CA or KRL, as before issue 21, and on the proxy
//! below), and the same user key certified by `ssh-keygen -s` under an
//! Ed25519, an ECDSA P-256 and an RSA-3072 user CA. Every row runs through
//! the same in-memory handshakes and challenges against the proxy's own
//! [`Authority`] (`authority.at(peer)`, as `session.rs` and the driver call
//! it), which trusts the three CAs, holds a root-signed revocation list
//! with a few entries and a KRL from `ssh-keygen -k` revoking 100,000
//! serials under each of the three CAs (`ZTSSH_BENCH_KRL_SERIALS`).
//!
//! Timed per side:
//! - the sidecar's handshake: message 1, then message 2 (the licence
//!   checked under the root) and message 3 (the user key's SSHSIG, which
//!   covers the certificate when there is one);
//! - the proxy's handshake: message 1 answered (ML-KEM), message 3 checked
//!   (SSHSIG; the certificate under its CA), the session authorized by the
//!   authority, and its first ztssh certificate issued;
//! - one proof at the proxy (`ServerIdentity::handle`: the authority's
//!   checks of a live session, which for a certificate include its CA,
//!   its validity, its source-address and the KRL).
//!
//! The wall-clock figures are means on a shared machine; the stable ones
//! are instruction counts: each side is a function of its own
//! (`sidecar_hello`, `sidecar_auth`, `proxy_hello`, `proxy_auth`,
//! `proxy_proof`) so that callgrind can count it:
//!
//! ```sh
//! ZTSSH_BENCH_CREDENTIAL=rsa valgrind --tool=callgrind \
//!   --toggle-collect='*credential::proxy_*' --toggle-collect='*credential::sidecar_*' \
//!   target/release/deps/credential-HASH --bench
//! callgrind_annotate --inclusive=yes callgrind.out.PID | grep credential::
//! ```
//!
//! `cargo bench -p ztssh-tests --bench credential` (200 handshakes and
//! 20,000 proofs per row; `ZTSSH_BENCH_HANDSHAKES`, `ZTSSH_BENCH_PROOFS`;
//! `ZTSSH_BENCH_CREDENTIAL=key|ed25519|ecdsa|rsa|plain|hybrid` for one row;
//! `hybrid` is `plain` under a hybrid Ed25519 + ML-DSA-65 root (issue 25
//! item 6: its licence and list carry both signatures);
//! `ZTSSH_BENCH_SHORT=1` for the 10 handshakes and 200 proofs the test
//! suite runs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ssh_key::{HashAlg, PrivateKey};
use ztssh_proto::cert::{LicenceBody, LicenceVerified, Serial};
use ztssh_proto::control::Control;
use ztssh_proto::crl::{Crl, Revocations};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{
    self, AwaitingClientAuth, AwaitingServerHello, ClientConfig, ClientSession,
};
use ztssh_proto::identity::{ClientEvent, ClientIdentity, Handled, ServerIdentity, Timing};
use ztssh_proto::keys::{NoiseKeypair, SigningKey, random_bytes};
use ztssh_proto::krl::Krl;
use ztssh_proto::labels::SSHSIG_NAMESPACE_HANDSHAKE;
use ztssh_proto::rootkey::{HybridSigner, MlDsaKey, RootKey, RootSigner};
use ztssh_proto::time::UnixTime;
use ztssh_proto::trust::Staleness;
use ztssh_proto::trust::usercert::UserCas;
use ztssh_proxy::trust::access::AccessInForce;
use ztssh_proxy::trust::authority::Authority;
use ztssh_proxy::trust::authz::Authorized;
use ztssh_proxy::trust::policy::Policy;
use ztssh_tests::bench::{self, Better};

type Rng = ztssh_proto::keys::SeededRng;

/// The client's real address, as the proxy sees it.
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keygen(path: &Path, args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(args)
        .arg("-f")
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user key, and one certificate of it per CA type, from ssh-keygen.
struct Keys {
    user: PrivateKey,
    cas: String,
    /// (row name, certificate's binary form)
    certs: Vec<(&'static str, Vec<u8>)>,
    /// A KRL revoking `serials` serials under each CA (random and odd:
    /// never the certificates' 4242).
    krl: Vec<u8>,
}

fn keys(dir: &Path, serials: u64) -> Keys {
    let krl = dir.join("krl");
    let spec = dir.join("krl-spec");
    let mut text = String::with_capacity(30 * serials as usize);
    // Random 63-bit serials (splitmix64), as CAs that pick random serials
    // write them: ssh-keygen makes a serial list of them. (Serials close
    // together make it write a bitmap, which past 16 KiB its own reader,
    // and so sshd, refuses: "bignum is too large".)
    let mut state = 0x5eed_0021u64;
    for _ in 0..serials {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        text += &format!("serial: {}\n", (z ^ (z >> 31)) >> 1 | 1);
    }
    std::fs::write(&spec, text).expect("KRL spec");
    let user = dir.join("alice");
    keygen(&user, &["-t", "ed25519"]);
    let mut cas = String::new();
    let mut certs = Vec::new();
    for (name, args) in [
        ("ed25519", &["-t", "ed25519"][..]),
        ("ecdsa", &["-t", "ecdsa", "-b", "256"][..]),
        ("rsa", &["-t", "rsa", "-b", "3072"][..]),
    ] {
        let ca = dir.join(format!("ca-{name}"));
        keygen(&ca, args);
        cas += &std::fs::read_to_string(ca.with_extension("pub")).expect("ca pub");
        let cert = dir.join(format!("alice-{name}-cert.pub"));
        std::fs::copy(
            user.with_extension("pub"),
            dir.join(format!("alice-{name}.pub")),
        )
        .expect("copy");
        let out = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(&ca)
            .args(["-I", "alice@bench", "-n", "alice", "-z", "4242"])
            .args(["-V", "-5m:+2h"])
            .arg(dir.join(format!("alice-{name}.pub")))
            .output()
            .expect("ssh-keygen -s");
        assert!(
            out.status.success(),
            "ssh-keygen -s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&cert).expect("certificate");
        let c = ssh_key::Certificate::from_openssh(&text).expect("parse certificate");
        certs.push((name, c.to_bytes().expect("encode")));
        // The same serials under this CA, added to the KRL (-u).
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-k");
        if krl.exists() {
            cmd.arg("-u");
        }
        let out = cmd
            .args(["-z", "1", "-f"])
            .arg(&krl)
            .arg("-s")
            .arg(ca.with_extension("pub"))
            .arg(&spec)
            .output()
            .expect("ssh-keygen -k");
        assert!(
            out.status.success(),
            "ssh-keygen -k: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Keys {
        user: PrivateKey::read_openssh_file(&user).expect("user key"),
        cas,
        certs,
        krl: std::fs::read(&krl).expect("KRL"),
    }
}

/// The proxy's side: its keys, its licence and the authority in force.
struct Proxy {
    /// The root the sidecar pins.
    pinned: RootKey,
    noise: NoiseKeypair,
    subca: SigningKey,
    licence: LicenceVerified,
    authority: Authority,
    /// The Unix time every step is given.
    now: UnixTime,
}

fn proxy(
    keys: &Keys,
    with_user_ca: bool,
    mldsa: Option<&MlDsaKey>,
    now: UnixTime,
    rng: &mut Rng,
) -> Proxy {
    let root = SigningKey::generate(rng);
    let hybrid;
    let signer: &dyn RootSigner = match mldsa {
        Some(k) => {
            hybrid = HybridSigner::new(&root, k);
            &hybrid
        }
        None => &root,
    };
    let pinned = signer.root_key();
    let noise = NoiseKeypair::generate(rng);
    let subca = SigningKey::generate(rng);
    let licence = LicenceBody {
        serial: Serial::random(rng),
        server_id: "web1".into(),
        hostnames: vec!["web1".into()],
        subca_key: subca.public(),
        noise_key: noise.public(),
        not_before: now - 10,
        not_after: now + 86_400,
        issuer: root.public(),
    }
    .sign_with(signer)
    .expect("licence")
    .verify(&pinned, now)
    .expect("verified");
    // A list as a fleet has one: a banned principal, a few revoked serials
    // and a revoked user key (so that every check does its hashing).
    let mut revoked = Revocations::default();
    revoked.principals.insert("mallory".into());
    for _ in 0..10 {
        revoked.serials.insert(Serial::random(rng));
    }
    revoked.user_keys.insert(random_bytes(rng));
    let crl = Crl {
        list_version: 7,
        issued: now - 60,
        next_update: now + 3600,
        issuer: root.public(),
        revoked,
        delegation: None,
    };
    // Loaded as the proxy loads it: verified under the pinned root.
    let signed = crl.sign_with(signer).expect("list");
    let crl = Crl::decode_verified(&signed, &pinned).expect("list verifies");
    let user_line = keys.user.public_key().to_openssh().expect("openssh");
    let authorized = Authorized::parse(&format!("alice {user_line}\n")).expect("principals");
    let (user_cas, krl) = if with_user_ca {
        let cas = UserCas::parse(&keys.cas).expect("user CAs");
        let krl = Krl::decode(&keys.krl).expect("KRL");
        (Some(Arc::new(cas)), Some(Arc::new(krl)))
    } else {
        (None, None)
    };
    let authority = Authority {
        licence: licence.clone(),
        crl: Some(crl),
        authorized,
        policy: Arc::new(Policy::default()),
        staleness: Staleness::default(),
        user_cas,
        access: AccessInForce::default(),
        krl,
        workload: None,
    };
    Proxy {
        pinned,
        noise,
        subca,
        licence,
        authority,
        now,
    }
}

#[inline(never)]
fn sidecar_hello(p: &Proxy, cert: Option<&[u8]>, rng: &mut Rng) -> (AwaitingServerHello, Vec<u8>) {
    let cfg = ClientConfig {
        root: p.pinned.clone(),
        host: "web1".into(),
        frame_size: FrameSize::default(),
    };
    handshake::client_start_with_cert(cfg, cert.map(<[u8]>::to_vec), rng).expect("msg1")
}

#[inline(never)]
fn proxy_hello(p: &Proxy, msg1: &[u8], rng: &mut Rng) -> (AwaitingClientAuth, Vec<u8>) {
    handshake::server_start(&p.noise, &p.licence, FrameSize::default(), rng)
        .expect("server")
        .handle_client_hello(msg1, rng)
        .expect("msg2")
}

#[inline(never)]
fn sidecar_auth(
    state: AwaitingServerHello,
    msg2: &[u8],
    user: &PrivateKey,
    now: UnixTime,
    rng: &mut Rng,
) -> (ClientSession, Vec<u8>) {
    let verified = state.handle_server_hello(msg2, now, rng).expect("verified");
    let sig = user
        .sign(
            SSHSIG_NAMESPACE_HANDSHAKE,
            HashAlg::Sha512,
            &verified.user_signed_data(),
        )
        .expect("sign");
    verified
        .into_client_auth("alice", user.public_key(), &sig)
        .expect("msg3")
}

const TIMING: Timing = Timing {
    // Challenges back to back: the virtual clock stands still.
    interval_secs: 0,
    deadline_secs: 10,
    cert_ttl_secs: 3600,
};

#[inline(never)]
fn proxy_auth(
    p: &Proxy,
    state: AwaitingClientAuth,
    msg3: &[u8],
    now: UnixTime,
    rng: &mut Rng,
) -> ztssh_proto::identity::Started {
    let at = p.authority.at(PEER);
    let authorized = state
        .handle_client_auth(msg3)
        .expect("msg3")
        .authenticated()
        .expect("authenticated")
        .authorize(&at, now)
        .expect("authorized");
    ServerIdentity::start(authorized, &p.subca, &at, TIMING, now, 0, rng).expect("start")
}

#[inline(never)]
fn proxy_proof(
    p: &Proxy,
    server: &mut ServerIdentity,
    proof: Control,
    now: UnixTime,
    mono: u64,
    rng: &mut Rng,
) -> Handled {
    server
        .handle(proof, &p.subca, &p.authority.at(PEER), now, mono, rng)
        .expect("proof")
}

/// Mean time per call of each step, in µs.
struct Row {
    name: &'static str,
    cert_bytes: usize,
    /// Messages 1, 2 and 3, as sent.
    wire: [usize; 3],
    licence_bytes: usize,
    sidecar: f64,
    proxy: f64,
    proof: f64,
}

fn run(
    name: &'static str,
    p: &Proxy,
    keys: &Keys,
    cert: Option<&[u8]>,
    handshakes: u32,
    proofs: u32,
    rng: &mut Rng,
) -> Row {
    let now = p.now;
    let (mut side, mut prox) = (Duration::ZERO, Duration::ZERO);
    let mut last = None;
    let mut wire = [0; 3];
    for _ in 0..handshakes {
        let t = Instant::now();
        let (client, msg1) = sidecar_hello(p, cert, rng);
        side += t.elapsed();
        let t = Instant::now();
        let (server, msg2) = proxy_hello(p, &msg1, rng);
        prox += t.elapsed();
        let t = Instant::now();
        let (session, msg3) = sidecar_auth(client, &msg2, &keys.user, now, rng);
        side += t.elapsed();
        let t = Instant::now();
        let started = proxy_auth(p, server, &msg3, now, rng);
        prox += t.elapsed();
        wire = [msg1.len(), msg2.len(), msg3.len()];
        assert_eq!(
            started.identity.user_cert().is_some(),
            cert.is_some(),
            "the certificate vouched for the session"
        );
        last = Some((session, started));
    }
    let (session, started) = last.expect("at least one handshake");
    let mut server = started.identity;
    let mut client = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        p.subca.public(),
    );
    client.handle(&started.cert, 0).expect("cert");
    let mut spent = Duration::ZERO;
    for _ in 0..proofs {
        let mono = server.next_wakeup();
        let ch = server
            .poll(now, mono, random_bytes(rng))
            .expect("poll")
            .expect("challenge");
        let ClientEvent::Reply(proof) = client.handle(&ch, mono).expect("answer") else {
            panic!("no proof")
        };
        let t = Instant::now();
        let ack = proxy_proof(p, &mut server, proof, now, mono, rng);
        spent += t.elapsed();
        assert!(matches!(
            black_box(ack),
            Handled::Proved(Control::Ack { .. })
        ));
    }
    let us = |d: Duration, n: u32| d.as_secs_f64() * 1e6 / f64::from(n.max(1));
    Row {
        name,
        cert_bytes: cert.map_or(0, <[u8]>::len),
        wire,
        licence_bytes: p.licence.encoded().len(),
        sidecar: us(side, handshakes),
        proxy: us(prox, handshakes),
        proof: us(spent, proofs),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let short = std::env::var_os("ZTSSH_BENCH_SHORT").is_some();
    let handshakes = env_u32("ZTSSH_BENCH_HANDSHAKES", if short { 10 } else { 200 });
    let proofs = env_u32("ZTSSH_BENCH_PROOFS", if short { 200 } else { 20_000 });
    let only = std::env::var("ZTSSH_BENCH_CREDENTIAL").ok();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let serials = env_u32(
        "ZTSSH_BENCH_KRL_SERIALS",
        if short { 1_000 } else { 100_000 },
    );
    let dir = tempfile::tempdir().expect("tmp");
    let keys = keys(dir.path(), u64::from(serials));
    // A seeded random source: the run repeats exactly but for the times.
    let mut rng = Rng::new(21);
    let plain = proxy(&keys, false, None, now, &mut rng);
    let with_ca = proxy(&keys, true, None, now, &mut rng);
    let mldsa = MlDsaKey::generate(&mut rng);
    let hybrid = proxy(&keys, false, Some(&mldsa), now, &mut rng);

    let mut rows = Vec::new();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("plain") {
        rows.push(run(
            "plain", &plain, &keys, None, handshakes, proofs, &mut rng,
        ));
    }
    if wanted("hybrid") {
        rows.push(run(
            "hybrid", &hybrid, &keys, None, handshakes, proofs, &mut rng,
        ));
    }
    if wanted("key") {
        rows.push(run(
            "key", &with_ca, &keys, None, handshakes, proofs, &mut rng,
        ));
    }
    for (name, cert) in &keys.certs {
        if wanted(name) {
            rows.push(run(
                name,
                &with_ca,
                &keys,
                Some(cert),
                handshakes,
                proofs,
                &mut rng,
            ));
        }
    }
    assert!(!rows.is_empty(), "no row named {only:?}");
    println!(
        "credentials: {handshakes} handshakes and {proofs} proofs per row, one core, µs per call (mean); \
         KRL of {serials} serials under each CA, {} bytes",
        keys.krl.len()
    );
    println!(
        "| credential | certificate bytes | licence bytes | messages 1/2/3 bytes | sidecar handshake | proxy handshake | proof at the proxy |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let what = match r.name {
            "plain" => "Ed25519 key, proxy without user CA or KRL".to_owned(),
            "key" => "Ed25519 key".to_owned(),
            "hybrid" => "Ed25519 key, proxy without user CA or KRL, hybrid root".to_owned(),
            ca => format!("certificate from an {ca} CA"),
        };
        let [m1, m2, m3] = r.wire;
        println!(
            "| {what} | {} | {} | {m1}/{m2}/{m3} | {:.1} | {:.1} | {:.2} |",
            r.cert_bytes, r.licence_bytes, r.sidecar, r.proxy, r.proof
        );
    }
    for r in &rows {
        for (fig, v) in [
            ("sidecar_handshake", r.sidecar),
            ("proxy_handshake", r.proxy),
            ("proof", r.proof),
        ] {
            let key = format!(
                "credential/handshakes={handshakes}/proofs={proofs}/{}/{fig}",
                r.name
            );
            bench::figure(&key, v, "us", Better::Lower);
        }
    }
}
