//! Shared set-up for the fuzz targets: a root, a licence, a user, and an
//! honest in-memory handshake, built once per process where possible.

use std::sync::OnceLock;

use ssh_key::PrivateKey;
use ztssh_proto::cert::{LicenceBody, LicenceVerified, Serial};
use ztssh_proto::conn::{Now, ServerConn};
use ztssh_proto::frame::FrameSize;
use ztssh_proto::handshake::{
    self, ClientAuth, ClientAuthenticated, ClientConfig, ClientSession, ServerVerified,
};
use ztssh_proto::identity::{Authority, Authorized, Checkpoint, Ended, Subject, Timing};
use ztssh_proto::keys::{NoiseKeypair, SeededRng, SigningKey};
use ztssh_proto::labels::SSHSIG_NAMESPACE_HANDSHAKE;
use ztssh_proto::rootkey::{HybridSigner, MlDsaKey, RootKey, RootSigner};

/// Virtual now.
pub const NOW: u64 = 1_800_000_000;

/// The random source of one step: a fixed seed per `stream`, the same for
/// every input, so an input runs the same way every time it runs (a
/// finding reproduces exactly). Different steps use different streams:
/// 0 the world, 1 the server's start, 2 the client, 3 the server's answer
/// to message 1, 4 the proxy's connection (certificates, rekeys), 5 the
/// client's connection (rekeys, renewal keys).
pub fn rng(stream: u64) -> SeededRng {
    SeededRng::new(stream)
}

/// Long-lived keys and the licence.
pub struct World {
    /// The root.
    pub root: SigningKey,
    /// The ML-DSA-65 half of a hybrid root whose Ed25519 half is `root`
    /// (a stand-in in fuzzing builds, as cheap as the Ed25519 one).
    pub mldsa: MlDsaKey,
    /// The proxy's Noise key.
    pub noise: NoiseKeypair,
    /// The proxy's Sub-CA.
    pub subca: SigningKey,
    /// Its licence, verified under the root.
    pub licence: LicenceVerified,
    /// The user.
    pub user: PrivateKey,
}

/// The process-wide world.
pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rng = &mut rng(0);
        let root = SigningKey::generate(rng);
        let noise = NoiseKeypair::generate(rng);
        let subca = SigningKey::generate(rng);
        let licence = LicenceBody {
            serial: Serial::random(rng),
            server_id: "web1".into(),
            hostnames: vec!["web1".into()],
            subca_key: subca.public(),
            noise_key: noise.public(),
            not_before: NOW - 10,
            not_after: NOW + 86_400,
            issuer: root.public(),
        }
        .sign(&root)
        .expect("sign licence")
        .verify(&root.public().into(), NOW)
        .expect("verify licence");
        let mldsa = MlDsaKey::generate(rng);
        let user = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]));
        World {
            root,
            mldsa,
            noise,
            subca,
            licence,
            user,
        }
    })
}

impl World {
    /// The Ed25519 root, pinned.
    pub fn root_key(&self) -> RootKey {
        self.root.public().into()
    }

    /// The hybrid root (`root` and `mldsa`), as a signer.
    pub fn hybrid(&self) -> HybridSigner<'_> {
        HybridSigner::new(&self.root, &self.mldsa)
    }

    /// The hybrid root, pinned.
    pub fn hybrid_key(&self) -> RootKey {
        self.hybrid().root_key()
    }

    /// A FIDO security key root with `root`'s key, pinned.
    pub fn sk_key(&self) -> RootKey {
        RootKey::SkEd25519 {
            key: self.root.public(),
            application: "ssh:".into(),
        }
    }

    /// Every kind of pinned root (each refuses what is not its own).
    pub fn roots(&self) -> [RootKey; 3] {
        [self.root_key(), self.hybrid_key(), self.sk_key()]
    }
}

/// The client's configuration.
pub fn client_cfg() -> ClientConfig {
    ClientConfig {
        root: world().root.public().into(),
        host: "web1".into(),
        frame_size: FrameSize::default(),
    }
}

/// A fresh server state.
pub fn server() -> handshake::AwaitingClientHello {
    let w = world();
    handshake::server_start(&w.noise, &w.licence, FrameSize::default(), &mut rng(1))
        .expect("server")
}

/// Runs messages 1 and 2 honestly; returns the server waiting for message 3
/// and the client that verified the server.
pub fn up_to_msg3() -> (handshake::AwaitingClientAuth, ServerVerified) {
    let client_rng = &mut rng(2);
    let (client, msg1) = handshake::client_start(client_cfg(), client_rng).expect("client");
    let (server, msg2) = server()
        .handle_client_hello(&msg1, &mut rng(3))
        .expect("msg2");
    let verified = client
        .handle_server_hello(&msg2, NOW, client_rng)
        .expect("verified");
    (server, verified)
}

/// A whole honest handshake.
pub fn pair() -> (ClientSession, ClientAuthenticated) {
    let (server, verified) = up_to_msg3();
    let sig = ztssh_proto::userkey::sign(
        &world().user,
        SSHSIG_NAMESPACE_HANDSHAKE,
        &verified.user_signed_data(),
    )
    .expect("sign");
    let (session, msg3) = verified
        .into_client_auth("alice", world().user.public_key(), &sig)
        .expect("msg3");
    let authed = server
        .handle_client_auth(&msg3)
        .ok()
        .and_then(ClientAuth::authenticated)
        .expect("authed");
    (session, authed)
}

/// A whole honest handshake whose client the proxy authorized.
pub fn authorized() -> (ClientSession, Authorized) {
    let (session, authed) = pair();
    let authorized = authed.authorize(&Allow, NOW).expect("authorized");
    (session, authorized)
}

/// The proxy's virtual time at `mono_ms` after the session started.
pub fn now(mono_ms: u64) -> Now {
    Now {
        unix: NOW + mono_ms / 1000,
        mono_ms,
    }
}

/// The proxy's side of an accepted tunnel at time 0, with ACCEPT and the
/// first CERT queued, as the proxy starts every session; and the client's
/// side of the handshake.
pub fn accepted(timing: Timing) -> (ClientSession, ServerConn) {
    let (session, authorized) = authorized();
    let conn = ServerConn::accept(
        authorized,
        "web1",
        &world().subca,
        &Allow,
        timing,
        now(0),
        rng(4),
    )
    .expect("accept");
    (session, conn)
}

/// An authority that allows everything, so only the state machine decides.
pub struct Allow;

impl Authority for Allow {
    fn check(&self, _: &Subject<'_>, _: Checkpoint<'_>, _: u64) -> Result<(), Ended> {
        Ok(())
    }

    fn may_issue(&self, _: u64) -> Result<(), Ended> {
        Ok(())
    }
}

/// Text for the parsers of operator files, built from fuzz input: each byte
/// picks one of `tokens`, except that a byte of 255 copies the next byte as
/// a raw character (so any text can still be reached) and a byte `extra`
/// accepts is replaced by what it makes of the bytes that follow.
pub fn assemble(
    data: &[u8],
    tokens: &[&str],
    mut extra: impl FnMut(u8, &mut std::slice::Iter<'_, u8>) -> Option<String>,
) -> String {
    let mut out = String::new();
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        if b == 255 {
            if let Some(&raw) = bytes.next() {
                out.push(char::from(raw));
            }
        } else if let Some(made) = extra(b, &mut bytes) {
            out.push_str(&made);
        } else if let Some(t) = tokens.get(usize::from(b) % tokens.len().max(1)) {
            out.push_str(t);
        }
    }
    out
}
