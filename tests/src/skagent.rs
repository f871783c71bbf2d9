//! A software authenticator behind the ssh-agent protocol: a test-only
//! agent holding one FIDO security key (`sk-ssh-ed25519@openssh.com`)
//! that signs the way OpenSSH's PROTOCOL.u2f says, with the flags the
//! test chooses (touch, PIN), so security key logins can be tested end
//! to end without hardware.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::Signer;
use sha2::Digest;
use ssh_key::encoding::{Decode, Encode};

use crate::agent::{read_frame, write_frame};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const FAILURE: u8 = 5;
/// The agent serves at most this long and this many connections.
const LIFETIME: Duration = Duration::from_secs(180);
const MAX_CONNECTIONS: usize = 256;

/// User presence (a touch).
pub const UP: u8 = 0x01;
/// User verified (a PIN).
pub const UV: u8 = 0x04;

/// The agent; it stops when dropped.
pub struct SkAgent {
    /// Its socket, for `SSH_AUTH_SOCK`.
    pub sock: PathBuf,
    /// The security key's public half.
    pub public: ssh_key::PublicKey,
    flags: Arc<AtomicU8>,
    signs: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SkAgent {
    /// Listens at `sock` with a security key made from `seed` under the
    /// application `ssh:`, signing with `flags` until told otherwise.
    pub fn start(sock: &Path, seed: [u8; 32], flags: u8) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pk = ssh_key::public::Ed25519PublicKey(key.verifying_key().to_bytes());
        let sk = ssh_key::public::SkEd25519::new(pk, "ssh:");
        let public = ssh_key::PublicKey::new(ssh_key::public::KeyData::SkEd25519(sk), "soft-sk");
        let listener = UnixListener::bind(sock).expect("bind sk agent");
        listener.set_nonblocking(true).expect("nonblocking");
        let flags = Arc::new(AtomicU8::new(flags));
        let signs = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Authenticator {
            key,
            public: public.clone(),
            flags: Arc::clone(&flags),
            signs: Arc::clone(&signs),
        };
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&listener, &state, &s));
        Self {
            sock: sock.to_owned(),
            public,
            flags,
            signs,
            stop,
            thread: Some(thread),
        }
    }

    /// The flags of every signature from now on.
    pub fn set_flags(&self, flags: u8) {
        self.flags.store(flags, Ordering::SeqCst);
    }

    /// Signatures made so far (each a touch on a real key).
    pub fn signs(&self) -> u32 {
        self.signs.load(Ordering::SeqCst)
    }
}

impl Drop for SkAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Authenticator {
    key: ed25519_dalek::SigningKey,
    public: ssh_key::PublicKey,
    flags: Arc<AtomicU8>,
    signs: Arc<AtomicU32>,
}

impl Authenticator {
    fn answer(&self, request: &[u8]) -> Vec<u8> {
        match request.split_first() {
            Some((&REQUEST_IDENTITIES, _)) => {
                let mut m = vec![IDENTITIES_ANSWER];
                1u32.encode(&mut m).expect("enc");
                self.public
                    .to_bytes()
                    .expect("key")
                    .encode(&mut m)
                    .expect("enc");
                "soft-sk".encode(&mut m).expect("enc");
                m
            }
            Some((&SIGN_REQUEST, mut rest)) => {
                self.sign(&mut rest).unwrap_or_else(|| vec![FAILURE])
            }
            _ => vec![FAILURE],
        }
    }

    /// PROTOCOL.u2f: the authenticator signs `SHA-256(application) ||
    /// flags || counter || SHA-256(message)`; the SSH signature is
    /// `string "sk-ssh-ed25519@openssh.com", string sig, byte flags,
    /// uint32 counter`.
    fn sign(&self, rest: &mut &[u8]) -> Option<Vec<u8>> {
        let blob = Vec::<u8>::decode(rest).ok()?;
        let data = Vec::<u8>::decode(rest).ok()?;
        let _flags = u32::decode(rest).ok()?;
        if blob != self.public.to_bytes().ok()? {
            return None;
        }
        let flags = self.flags.load(Ordering::SeqCst);
        let counter = self.signs.fetch_add(1, Ordering::SeqCst) + 1;
        let mut signed = Vec::new();
        signed.extend_from_slice(&sha2::Sha256::digest(b"ssh:"));
        signed.push(flags);
        signed.extend_from_slice(&counter.to_be_bytes());
        signed.extend_from_slice(&sha2::Sha256::digest(&data));
        let mut raw = self.key.sign(&signed).to_bytes().to_vec();
        raw.push(flags);
        raw.extend_from_slice(&counter.to_be_bytes());
        let sig = ssh_key::Signature::new(ssh_key::Algorithm::SkEd25519, raw).ok()?;
        let mut m = vec![SIGN_RESPONSE];
        sig.encode_vec().ok()?.encode(&mut m).ok()?;
        Some(m)
    }
}

fn serve(listener: &UnixListener, auth: &Authenticator, stop: &AtomicBool) {
    let start = Instant::now();
    let mut served = 0;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME && served < MAX_CONNECTIONS {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        served += 1;
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        // One connection may carry several requests.
        for _ in 0..16 {
            let Some(request) = read_frame(&mut conn) else {
                break;
            };
            if write_frame(&mut conn, &auth.answer(&request)).is_none() {
                break;
            }
        }
    }
}
