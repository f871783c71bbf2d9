//! The ML-DSA-65 half of a hybrid root (`init --pq`): no ssh-agent or
//! PKCS#11 token holds ML-DSA keys today, so it lives in the CA directory
//! as `root-mldsa.age`, its 32-byte seed encrypted by age's scrypt
//! passphrase recipient (not a construction of ours), mode 0600, written
//! atomically, and in memory only as a [`MlDsaKey`] (zeroized on drop, no
//! `Debug` of its bytes). The Ed25519 half is held as before (a file, an
//! agent or a token).
//!
//! The passphrase comes from `--passphrase-file FILE`, else the file named
//! by `ZTSSH_CA_PASSPHRASE_FILE`, else the terminal; never from a flag's
//! value, which other users see in the process list.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use age::secrecy::SecretString;
use anyhow::{Result, anyhow, bail};
use zeroize::Zeroizing;
use ztssh_keyfile as keyfile;
use ztssh_proto::keys::Secret;
use ztssh_proto::rootkey::{MlDsaKey, RootKey};

/// The key file, in the CA directory.
pub const KEY_FILE: &str = "root-mldsa.age";
/// The environment variable that names the passphrase file.
pub const PASSPHRASE_FILE_ENV: &str = "ZTSSH_CA_PASSPHRASE_FILE";
/// The largest passphrase file or key file read.
const MAX_FILE: u64 = 64 * 1024;
/// The shortest passphrase `init --pq` accepts.
const MIN_PASSPHRASE: usize = 12;

static PASSPHRASE_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records `--passphrase-file` (once, from `main`).
pub fn set_passphrase_file(path: Option<PathBuf>) {
    let _ = PASSPHRASE_FILE.set(path);
}

/// The passphrase: `--passphrase-file`, `ZTSSH_CA_PASSPHRASE_FILE`, or the
/// terminal (twice when `confirm`, for a new key).
fn passphrase(confirm: bool) -> Result<SecretString> {
    let file = PASSPHRASE_FILE
        .get()
        .cloned()
        .flatten()
        .or_else(|| std::env::var_os(PASSPHRASE_FILE_ENV).map(PathBuf::from));
    let text = match file {
        Some(path) => {
            let raw =
                Zeroizing::new(keyfile::read_private(&path, MAX_FILE).map_err(anyhow::Error::msg)?);
            let text = std::str::from_utf8(&raw)
                .map_err(|_| anyhow!("passphrase file {} is not text", path.display()))?;
            Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => from_terminal(confirm)?,
    };
    if text.is_empty() {
        bail!("the passphrase of the root's ML-DSA key is empty");
    }
    if confirm && text.chars().count() < MIN_PASSPHRASE {
        bail!(
            "the passphrase is shorter than {MIN_PASSPHRASE} characters: the post-quantum half \
             of the root is only as strong as it; choose a long one (a diceware phrase)"
        );
    }
    Ok(SecretString::from(text.as_str()))
}

fn from_terminal(confirm: bool) -> Result<Zeroizing<String>> {
    let no_tty = format!(
        "the root's ML-DSA key ({KEY_FILE}) needs its passphrase and there is no terminal to \
         ask: give --passphrase-file FILE or set {PASSPHRASE_FILE_ENV} (a file of mode 0600)"
    );
    let what = "the passphrase typed";
    let first =
        super::pkcs11::read_from_terminal("Passphrase for the root's ML-DSA key: ", &no_tty, what)?;
    if confirm {
        let again = super::pkcs11::read_from_terminal("Same passphrase again: ", &no_tty, what)?;
        if *again != *first {
            bail!("the two passphrases differ: nothing was written; run init --pq again");
        }
    }
    Ok(first)
}

/// Makes a new ML-DSA key and writes it, encrypted, to `dir`'s key file
/// (refusing to replace one).
pub fn create(dir: &Path, key: &MlDsaKey) -> Result<()> {
    let pass = passphrase(true)?;
    let recipient = age::scrypt::Recipient::new(pass);
    let sealed = age::encrypt(&recipient, key.seed().expose())
        .map_err(|e| anyhow!("cannot encrypt the ML-DSA key: {e}"))?;
    keyfile::write_atomic(
        &dir.join(KEY_FILE),
        &sealed,
        0o600,
        keyfile::Existing::Refuse,
    )?;
    Ok(())
}

/// Reads `dir`'s key file and checks it is the ML-DSA half of `pinned`.
pub fn open(dir: &Path, pinned: &RootKey) -> Result<MlDsaKey> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        bail!(
            "{}/root.pub is a hybrid (Ed25519 + ML-DSA-65) root, but {} is missing: restore it \
             from the CA's backup (without it this root cannot sign)",
            dir.display(),
            path.display()
        );
    }
    let sealed = keyfile::read_private(&path, MAX_FILE).map_err(anyhow::Error::msg)?;
    let identity = age::scrypt::Identity::new(passphrase(false)?);
    let seed = Zeroizing::new(age::decrypt(&identity, &sealed).map_err(|e| {
        anyhow!(
            "cannot decrypt {}: {e} (a wrong passphrase, or not the key file init --pq wrote)",
            path.display()
        )
    })?);
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("{} does not hold a 32-byte ML-DSA seed", path.display()))?;
    let key = MlDsaKey::from_seed(Secret::new(seed));
    match pinned {
        RootKey::Hybrid { mldsa, .. } if **mldsa == *key.public() => Ok(key),
        _ => bail!(
            "{} holds an ML-DSA key that is not the one {}/root.pub names: the wrong file, or \
             root.pub was replaced",
            path.display(),
            dir.display()
        ),
    }
}
