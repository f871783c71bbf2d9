//! A CA key in a PKCS#11 token or HSM, through `cryptoki`: found by the
//! token's label and the key's `CKA_LABEL`, or (at `init`) generated in
//! the token as a non-extractable, sensitive key, so it never exists
//! outside it. Ed25519 (`CKM_EDDSA`) is what today's formats verify;
//! ECDSA P-256 keys sign too.
//!
//! The PIN comes from `--pin-file FILE`, else the file `ZTSSH_CA_PIN_FILE`
//! names, else the terminal (not echoed); never from a flag's value, which
//! every user's `ps` shows. It is held zeroizing and dropped after login.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::Signer;

/// The environment variable naming a PIN file.
pub const PIN_FILE_ENV: &str = "ZTSSH_CA_PIN_FILE";
/// The largest PIN file read.
const MAX_PIN_FILE: u64 = 4096;
/// DER of the Ed25519 curve's OID (1.3.101.112), `CKA_EC_PARAMS`.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of P-256's OID (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

static PIN_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The modules loaded and initialized in this process: a module may be
/// initialized once (the root and the host CA may share a token).
static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

fn context(module: &Path) -> Result<Pkcs11> {
    let mut loaded = CONTEXTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, ctx)) = loaded.iter().find(|(m, _)| m == module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module)
        .with_context(|| format!("cannot load the PKCS#11 module {}", module.display()))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .with_context(|| format!("cannot initialize {}", module.display()))?;
    loaded.push((module.to_owned(), ctx.clone()));
    Ok(ctx)
}

/// Records `--pin-file` (once, from main).
pub fn set_pin_file(path: Option<PathBuf>) {
    let _ = PIN_FILE.set(path);
}

/// A key in a token, with a logged-in session.
pub struct Pkcs11Signer {
    session: Session,
    key: ObjectHandle,
    public: ssh_key::PublicKey,
    holder: String,
    // Last, so the session closes before the module is finalized.
    _ctx: Pkcs11,
}

/// The PIN: `--pin-file`, `ZTSSH_CA_PIN_FILE`, or the terminal.
fn read_pin(token: &str) -> Result<AuthPin> {
    let file = PIN_FILE
        .get()
        .cloned()
        .flatten()
        .or_else(|| std::env::var_os(PIN_FILE_ENV).map(PathBuf::from));
    let text = match file {
        Some(path) => {
            let raw = Zeroizing::new(
                ztssh_keyfile::read_private(&path, MAX_PIN_FILE).map_err(anyhow::Error::msg)?,
            );
            Zeroizing::new(
                std::str::from_utf8(&raw)
                    .map_err(|_| anyhow!("PIN file {} is not text", path.display()))?
                    .to_owned(),
            )
        }
        None => read_from_terminal(
            &format!("PIN for token {token}: "),
            &format!(
                "token {token:?} needs its PIN and there is no terminal to ask: give --pin-file \
                 FILE or set {PIN_FILE_ENV} (a file of mode 0600 holding the PIN)"
            ),
            &format!("the PIN typed for token {token:?}"),
        )?,
    };
    let pin = text.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        bail!("the PIN for token {token:?} is empty");
    }
    Ok(AuthPin::from(pin))
}

/// The longest PIN or passphrase read from the terminal; a longer line is
/// refused.
const MAX_TERMINAL_LINE: usize = 256;

/// Reads one line from the terminal with its echo off, after `prompt`;
/// `no_tty` is the error when there is no terminal, `what` names the line
/// in other errors. The line goes byte by byte into one buffer allocated
/// once at its full size and zeroized on drop: no buffered reader and no
/// growing string leaves copies of it in freed memory.
pub(crate) fn read_from_terminal(
    prompt: &str,
    no_tty: &str,
    what: &str,
) -> Result<Zeroizing<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::Read;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| anyhow!("{no_tty}"))?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("cannot turn the terminal's echo off")?;
    let _ = write!(&tty, "{prompt}");
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_TERMINAL_LINE));
    let mut byte = Zeroizing::new([0u8; 1]);
    let read = loop {
        match (&tty).read(&mut byte[..]) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if line.len() == MAX_TERMINAL_LINE => {
                break Err(anyhow!("{what} is longer than {MAX_TERMINAL_LINE} bytes"));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(anyhow!(e).context(format!("cannot read {what}"))),
        }
    };
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writeln!(&tty);
    read?;
    // The buffer moves into the String whole (no copy); a line that is not
    // UTF-8 is zeroized in the error before it is dropped.
    match String::from_utf8(std::mem::take(&mut *line)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            bail!("{what} is not text")
        }
    }
}

/// What a token's error means for the operator.
fn explain(e: CkError, what: &str, token: &str) -> anyhow::Error {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => anyhow!(
            "token {token:?} refused the PIN (wrong PIN; the token locks after a few wrong \
             tries): check --pin-file / {PIN_FILE_ENV}"
        ),
        CkError::Pkcs11(RvError::PinLocked, _) => anyhow!(
            "token {token:?} is locked after too many wrong PINs: its security officer must \
             unlock it"
        ),
        other => anyhow!("{what} on token {token:?}: {other}"),
    }
}

/// The public point of a key: a DER OCTET STRING, or (some tokens) bare.
fn ec_point(raw: &[u8]) -> &[u8] {
    match raw {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => raw,
    }
}

fn public_of(session: &Session, key: ObjectHandle, label: &str) -> Result<ssh_key::PublicKey> {
    use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData};
    let attrs = session
        .get_attributes(key, &[AttributeType::EcParams, AttributeType::EcPoint])
        .context("cannot read the key's public half")?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        bail!("key {label:?} has no EC public point: use an Ed25519 or P-256 key");
    };
    let point = ec_point(&point);
    let data = if params == ED25519_OID || params.ends_with(b"edwards25519") {
        let k: [u8; 32] = point
            .try_into()
            .map_err(|_| anyhow!("key {label:?}: an Ed25519 point of {} bytes", point.len()))?;
        KeyData::Ed25519(Ed25519PublicKey(k))
    } else if params == P256_OID {
        KeyData::Ecdsa(
            EcdsaPublicKey::from_sec1_bytes(point)
                .map_err(|e| anyhow!("key {label:?}: not a P-256 point: {e}"))?,
        )
    } else {
        bail!("key {label:?} is on a curve ztssh-ca does not use: use Ed25519 or P-256");
    };
    Ok(ssh_key::PublicKey::new(data, label))
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
        .context("cannot search the token")
}

impl Pkcs11Signer {
    /// Opens `module`, finds the token labelled `token`, logs in with the
    /// PIN and finds the key labelled `key`; with `create`, generates an
    /// Ed25519 key there when none has the label.
    pub fn open(module: &Path, token: &str, key: &str, create: bool) -> Result<Self> {
        let ctx = context(module)?;
        let mut found = None;
        for slot in ctx
            .get_slots_with_token()
            .context("cannot list the tokens")?
        {
            let info = ctx.get_token_info(slot).context("cannot read a token")?;
            if info.label().trim_end() == token {
                found = Some(slot);
                break;
            }
        }
        let Some(slot) = found else {
            bail!(
                "no token labelled {token:?} in {}: list them with `pkcs11-tool --module {} -L` \
                 (or softhsm2-util --show-slots)",
                module.display(),
                module.display()
            );
        };
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| explain(e, "cannot open a session", token))?;
        let pin = read_pin(token)?;
        match session.login(UserType::User, Some(&pin)) {
            // Another key of this token, opened before in this process.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(explain(e, "login failed", token)),
        }
        drop(pin);
        let private = find(&session, ObjectClass::PRIVATE_KEY, key)?;
        let (private, public) = match (private.as_slice(), create) {
            ([one], _) => {
                let public = find(&session, ObjectClass::PUBLIC_KEY, key)?;
                let Some(&public) = public.first() else {
                    bail!("key {key:?} on token {token:?} has no public key object beside it");
                };
                (*one, public)
            }
            ([], true) => {
                generate(&session, key).map_err(|e| explain(e, "key generation", token))?
            }
            ([], false) => bail!(
                "token {token:?} holds no private key labelled {key:?} (ztssh-ca init --pkcs11 \
                 creates one)"
            ),
            (_, _) => bail!(
                "token {token:?} holds {} private keys labelled {key:?}: give the key a label of \
                 its own",
                private.len()
            ),
        };
        let public_key = public_of(&session, public, key)?;
        super::Algorithm::of(public_key.key_data())?;
        Ok(Self {
            session,
            key: private,
            public: public_key,
            holder: format!("pkcs11:{token}/{key}"),
            _ctx: ctx,
        })
    }

    /// Opens (or, when none has the label, creates) the key a CA key is to
    /// live in (`init --pkcs11`, `host-ca --pkcs11`), and refuses a key
    /// that can leave its token: an existing key made extractable, or not
    /// sensitive, would let the token hand out the CA's private key.
    pub fn open_for_ca(module: &Path, token: &str, key: &str) -> Result<Self> {
        let s = Self::open(module, token, key, true)?;
        if !s.never_leaves()? {
            bail!(
                "{} can leave its token (CKA_SENSITIVE false, CKA_EXTRACTABLE true or \
                 CKA_NEVER_EXTRACTABLE false): make a key that cannot, or let ztssh-ca create \
                 one under a new --key label",
                s.holder
            );
        }
        Ok(s)
    }

    /// Whether the private key is sensitive and was never extractable,
    /// read back from the token (`CKA_SENSITIVE`, `CKA_EXTRACTABLE`).
    pub fn never_leaves(&self) -> Result<bool> {
        let attrs = self
            .session
            .get_attributes(
                self.key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                ],
            )
            .context("cannot read the key's attributes")?;
        let mut ok = [false; 3];
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => ok[0] = v,
                Attribute::Extractable(v) => ok[1] = !v,
                Attribute::NeverExtractable(v) => ok[2] = v,
                _ => {}
            }
        }
        Ok(ok.iter().all(|&b| b))
    }
}

/// A new Ed25519 key pair in the token: private, sensitive, not
/// extractable, so its private half never exists outside it.
fn generate(
    session: &Session,
    label: &str,
) -> cryptoki::error::Result<(ObjectHandle, ObjectHandle)> {
    let id = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Label(label.into()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Label(label.into()),
        Attribute::Id(id),
    ];
    let (public, private) =
        session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)?;
    Ok((private, public))
}

/// An ECDSA signature `r || s` (32 bytes each) as OpenSSH encodes it.
fn ecdsa_blob(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.len() != 64 {
        bail!(
            "the token returned an ECDSA signature of {} bytes",
            raw.len()
        );
    }
    let (r, s) = raw.split_at(32);
    let mut out = Vec::new();
    for half in [r, s] {
        let m = ssh_key::Mpint::from_positive_bytes(half);
        ssh_key::encoding::Encode::encode(&m, &mut out).map_err(|e| anyhow!(e))?;
    }
    Ok(out)
}

impl Signer for Pkcs11Signer {
    fn public(&self) -> &ssh_key::PublicKey {
        &self.public
    }

    fn holder(&self) -> String {
        self.holder.clone()
    }

    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
        use ssh_key::public::KeyData;
        let token_err = |e| anyhow!("{} did not sign: {e}", self.holder);
        match self.public.key_data() {
            KeyData::Ed25519(_) => {
                let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                let raw = self
                    .session
                    .sign(&mech, self.key, data)
                    .map_err(token_err)?;
                ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, raw).map_err(|e| anyhow!(e))
            }
            KeyData::Ecdsa(_) => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(data);
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, self.key, &digest)
                    .map_err(token_err)?;
                ssh_key::Signature::new(
                    ssh_key::Algorithm::Ecdsa {
                        curve: ssh_key::EcdsaCurve::NistP256,
                    },
                    ecdsa_blob(&raw)?,
                )
                .map_err(|e| anyhow!(e))
            }
            other => bail!("{} holds a {} key", self.holder, other.algorithm()),
        }
    }
}
