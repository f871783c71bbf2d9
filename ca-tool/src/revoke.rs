//! `revoke`, `crl` and `krl`: the CA's revocation records, the signed
//! list and sshd's key revocation list.
//!
//! Records live in `CA/revocations.txt`, one `principal NAME`,
//! `server SERVER_ID`, `serial HEX`, `key SHA256:FINGERPRINT`,
//! `noise-key HEX` or `subca-key HEX` (a proxy's Noise static or Sub-CA
//! public key, 64 hex digits) or `host-serial N` (an OpenSSH host
//! certificate's serial) per line.
//! `CA/crl.version` and `CA/krl.version` hold the last version issued of
//! each list, so versions only ever go up; `CA/crl.last` holds the version
//! of the last list `crl` issued, and a `crl.version` more than
//! [`MAX_VERSION_JUMP`] ahead of it is refused as a typo or tampering.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ztssh_keyfile as keyfile;
use ztssh_proto::armor;
use ztssh_proto::cert::{
    Licence, LicenceRequest, MAX_PRINCIPAL, MAX_SERVER_ID, Serial, check_name,
};
use ztssh_proto::crl::{Crl, Revocations};
use ztssh_proto::keys::hex;
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration};

const RECORDS: &str = "revocations.txt";
const VERSION_FILE: &str = "crl.version";
const KRL_VERSION_FILE: &str = "krl.version";
/// The version of the last revocation list `crl` issued, written by `crl`
/// alone (never by hand in normal operation): what `crl.version` is
/// checked against for implausible jumps.
const LAST_ISSUED_FILE: &str = "crl.last";
/// Longest a revocation list may stay current.
const MAX_CRL_TTL: u64 = 30 * 86_400;

/// One revocation.
pub enum Target {
    /// Ban a principal everywhere.
    Principal(String),
    /// Revoke a server's licence(s).
    Server(String),
    /// Revoke one certificate or licence serial.
    Serial(Serial),
    /// Revoke a user key, by the SHA-256 hash of its OpenSSH encoding.
    Key([u8; 32]),
    /// Revoke a host certificate the host CA signed, by its serial.
    HostSerial(u64),
    /// Revoke a proxy's Noise static key: every licence for it.
    NoiseKey([u8; 32]),
    /// Revoke a proxy's Sub-CA key: every licence for it.
    SubcaKey([u8; 32]),
    /// Revoke a delegation: its delegated key and its serial.
    Delegation {
        /// The delegated key.
        key: [u8; 32],
        /// The delegation's serial.
        serial: Serial,
    },
    /// Revoke both keys of a licence.
    LicenceKeys {
        /// Its Noise static key.
        noise: [u8; 32],
        /// Its Sub-CA key.
        subca: [u8; 32],
    },
}

/// Which key of a proxy's.
#[derive(Clone, Copy)]
enum ProxyKey {
    Noise,
    Subca,
}

fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Refuses a Noise key in a non-canonical encoding: licences never carry
/// one, so revoking it would revoke nothing.
fn noise_key_canonical(key: &[u8; 32]) -> Result<()> {
    ztssh_proto::cert::check_noise_key(key, "Noise key").map_err(|e| {
        anyhow::anyhow!(
            "{e}: no licence carries it, so revoking it revokes nothing; copy the key as \
             `ztssh-ca show` prints it, or give the licence file"
        )
    })
}

/// A proxy key from 64 hex digits (as `ztssh-ca show` prints it) or from
/// a file: a licence this CA signed, or a licence request.
fn proxy_key(dir: &Path, arg: &str, which: ProxyKey) -> Result<[u8; 32]> {
    if let Some(key) = parse_key_hex(arg) {
        if matches!(which, ProxyKey::Noise) {
            noise_key_canonical(&key)?;
        }
        return Ok(key);
    }
    let path = Path::new(arg);
    if !path.exists() {
        bail!(
            "{arg:?} is neither 64 hex digits (the key as `ztssh-ca show` prints it) nor a file \
             (a licence or a licence-request.pem)"
        );
    }
    let (noise, subca) = licence_or_request_keys(dir, path)?;
    Ok(match which {
        ProxyKey::Noise => noise,
        ProxyKey::Subca => subca,
    })
}

/// The Noise and Sub-CA keys of a licence this CA signed (checked under
/// the root, whatever its validity window) or of a licence request
/// (checked by its proof of possession).
fn licence_or_request_keys(dir: &Path, path: &Path) -> Result<([u8; 32], [u8; 32])> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // A licence a delegated key signed carries its delegation beside it.
    if let Ok((bytes, Some(d))) = ztssh_proto::delegation::split_pem(&text, pem::LICENCE) {
        let root = keyfile::read_root_public(&dir.join("root.pub")).map_err(anyhow::Error::msg)?;
        let d = ztssh_proto::delegation::Delegation::decode_verified(&d, &root)
            .with_context(|| format!("{}: not a delegation this CA signed", path.display()))?;
        if d.body.purpose != ztssh_proto::delegation::Purpose::Licences {
            bail!(
                "{}: its delegation is for {}, not licences",
                path.display(),
                d.body.purpose
            );
        }
        let lic = Licence::decode_signed_by(&bytes, &d.body.key.into()).with_context(|| {
            format!(
                "{} is not a licence its delegated key signed",
                path.display()
            )
        })?;
        return Ok((lic.body.noise_key, lic.body.subca_key.0));
    }
    let (label, bytes) =
        armor::decode(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match label.as_str() {
        pem::LICENCE => {
            let root =
                keyfile::read_root_public(&dir.join("root.pub")).map_err(anyhow::Error::msg)?;
            let lic = Licence::decode_signed_by(&bytes, &root)
                .with_context(|| format!("{} is not a licence this CA signed", path.display()))?;
            Ok((lic.body.noise_key, lic.body.subca_key.0))
        }
        pem::REQUEST => {
            let req = LicenceRequest::decode_verified(&bytes)
                .with_context(|| format!("{} is not a valid licence request", path.display()))?;
            Ok((req.noise_key, req.subca_key.0))
        }
        other => bail!(
            "{} is a {other:?} file; give a licence, a licence-request.pem or the key's 64 hex digits",
            path.display()
        ),
    }
}

/// The serial of an OpenSSH host certificate file, checked to be signed by
/// this CA's host CA key.
fn host_cert_serial(dir: &Path, path: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cert = ssh_key::Certificate::from_openssh(text.trim()).with_context(|| {
        format!(
            "{} is not an OpenSSH certificate (a KEY-cert.pub line)",
            path.display()
        )
    })?;
    if cert.cert_type() != ssh_key::certificate::CertType::Host {
        bail!(
            "{} is a user certificate, not a host certificate",
            path.display()
        );
    }
    if cert.signature_key() != host_ca_key(dir)?.key_data() {
        bail!(
            "{} was not signed by this CA's host CA key (ztssh-ca known-hosts --dir {} shows it)",
            path.display(),
            crate::cadir::shown_path(dir)
        );
    }
    cert.verify_signature().map_err(|e| {
        anyhow::anyhow!(
            "{}: the certificate's signature does not verify ({e}): it is damaged or forged; \
             revoke nothing on its word",
            path.display()
        )
    })?;
    let serial = cert.serial();
    if serial == 0 {
        bail!(
            "{} has serial 0, which OpenSSH cannot revoke by serial (a KRL naming serial 0 is refused \
             by sshd, which then refuses every key); ztssh-ca sign-host never issues it. Revoke the \
             host key itself with --key",
            path.display()
        );
    }
    Ok(serial)
}

fn host_ca_key(dir: &Path) -> Result<ssh_key::PublicKey> {
    crate::hostcert::host_ca_public(dir)
}

fn key_line(hash: &[u8; 32]) -> String {
    format!("key {}", ssh_key::Fingerprint::Sha256(*hash))
}

/// The SHA-256 hash of an OpenSSH `KEY.pub` file's key.
fn key_hash(path: &Path) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = ssh_key::PublicKey::from_openssh(text.trim()).with_context(|| {
        format!(
            "{} is not one OpenSSH public key (a KEY.pub line; certificates are not accepted)",
            path.display()
        )
    })?;
    key.fingerprint(ssh_key::HashAlg::Sha256)
        .sha256()
        .context("no SHA-256 fingerprint")
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    text.parse::<ssh_key::Fingerprint>()
        .ok()
        .and_then(ssh_key::Fingerprint::sha256)
        .with_context(|| format!("{text:?} is not a SHA256:... key fingerprint"))
}

fn parse_serial(hex: &str) -> Result<Serial> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("serial {hex:?} is not 32 hex digits (as `ztssh-ca show` prints it)");
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(Serial(out))
}

impl Target {
    /// Builds the target from exactly one of the flags (`dir`: the CA,
    /// to check a host certificate's signer).
    pub fn from_flags(dir: &Path, flags: Flags) -> Result<Self> {
        let Flags {
            principal,
            server,
            serial,
            key,
            host_cert,
            noise_key,
            subca_key,
            licence,
            delegation,
        } = flags;
        let given = [
            delegation.is_some(),
            noise_key.is_some(),
            subca_key.is_some(),
            licence.is_some(),
            principal.is_some(),
            server.is_some(),
            serial.is_some(),
            key.is_some(),
            host_cert.is_some(),
        ];
        if given.iter().filter(|g| **g).count() == 1 {
            if let Some(k) = noise_key {
                return Ok(Self::NoiseKey(proxy_key(dir, &k, ProxyKey::Noise)?));
            }
            if let Some(k) = subca_key {
                return Ok(Self::SubcaKey(proxy_key(dir, &k, ProxyKey::Subca)?));
            }
            if let Some(l) = licence {
                let (noise, subca) = licence_or_request_keys(dir, &l)?;
                return Ok(Self::LicenceKeys { noise, subca });
            }
            if let Some(d) = delegation {
                let d = crate::delegate::read_delegation(&d, Some(dir))?;
                return Ok(Self::Delegation {
                    key: d.body.key.0,
                    serial: d.body.serial,
                });
            }
        }
        Ok(match (principal, server, serial, key, host_cert) {
            (Some(p), None, None, None, None) => {
                check_name(&p, MAX_PRINCIPAL, "principal")?;
                Self::Principal(p)
            }
            (None, Some(s), None, None, None) => {
                check_name(&s, MAX_SERVER_ID, "server id")?;
                Self::Server(s)
            }
            (None, None, Some(n), None, None) => Self::Serial(parse_serial(&n)?),
            (None, None, None, Some(k), None) => Self::Key(key_hash(&k)?),
            (None, None, None, None, Some(c)) => Self::HostSerial(host_cert_serial(dir, &c)?),
            _ => bail!(
                "give exactly one of --principal, --server, --serial, --key, --host-cert, \
                 --noise-key, --subca-key, --licence or --delegation"
            ),
        })
    }

    fn lines(&self) -> Vec<String> {
        vec![match self {
            Self::Principal(p) => format!("principal {p}"),
            Self::Server(s) => format!("server {s}"),
            Self::Serial(n) => format!("serial {n}"),
            Self::Key(hash) => key_line(hash),
            Self::HostSerial(n) => format!("host-serial {n}"),
            Self::NoiseKey(k) => format!("noise-key {}", hex(k)),
            Self::SubcaKey(k) => format!("subca-key {}", hex(k)),
            Self::Delegation { key, serial } => {
                return vec![
                    format!("delegated-key {}", hex(key)),
                    format!("serial {serial}"),
                ];
            }
            Self::LicenceKeys { noise, subca } => {
                return vec![
                    format!("noise-key {}", hex(noise)),
                    format!("subca-key {}", hex(subca)),
                ];
            }
        }]
    }
}

/// `ztssh-ca revoke`'s flags, at most one set.
pub struct Flags {
    /// `--principal`.
    pub principal: Option<String>,
    /// `--server`.
    pub server: Option<String>,
    /// `--serial`.
    pub serial: Option<String>,
    /// `--key`.
    pub key: Option<std::path::PathBuf>,
    /// `--host-cert`.
    pub host_cert: Option<std::path::PathBuf>,
    /// `--noise-key`: a file or 64 hex digits.
    pub noise_key: Option<String>,
    /// `--subca-key`: a file or 64 hex digits.
    pub subca_key: Option<String>,
    /// `--licence`: a licence file, both of whose keys are revoked.
    pub licence: Option<std::path::PathBuf>,
    /// `--delegation`: a delegation file, revoked by key and serial.
    pub delegation: Option<std::path::PathBuf>,
}

/// Everything `revocations.txt` records.
#[derive(Default)]
struct Records {
    /// What the root-signed ztssh list carries.
    list: Revocations,
    /// Revoked user keys (SHA-256 of the key blob), for the KRL.
    keys: BTreeSet<[u8; 32]>,
    /// Revoked host certificate serials, for the KRL.
    host_serials: BTreeSet<u64>,
}

/// The most `revocations.txt` may hold (a million serial lines is about
/// 40 MB).
const MAX_RECORDS_FILE: u64 = 128 * 1024 * 1024;
/// The most a version counter file may hold.
const MAX_VERSION_FILE: u64 = 4096;
/// The highest list version the CA issues. Far beyond any real CA (a list
/// a second for 285 million years) and exact in the proxies'
/// `ztssh_crl_version` metric (an f64); a counter above it is a typo or
/// tampering, and going on from it would run into the end of u64, after
/// which every verifier refuses every list for good.
pub const MAX_LIST_VERSION: u64 = 1 << 53;
/// The most `crl.version` may be ahead of the last list `crl` issued
/// (`crl.last`): a million lists, one a minute for about two years. Any
/// more is a typo or tampering (a digit too many when an operator writes
/// the counter back by hand), and counting on from it could run the CA
/// into [`MAX_LIST_VERSION`], after which it can issue nothing.
pub const MAX_VERSION_JUMP: u64 = 1_000_000;

/// Reads a file of the CA directory as strictly as `root.key` is read
/// (`keyfile::read_private`: not through a symlink, a regular file owned
/// by this user or root, closed to group and others). `Ok(None)`: there is
/// nothing at `path`.
fn read_ca_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link; the CA reads its files only directly, so that nobody who \
             can change a link can point it elsewhere",
            path.display()
        ),
        _ => {}
    }
    keyfile::read_private(path, max)
        .map(Some)
        .map_err(anyhow::Error::msg)
}

/// Reads `revocations.txt` (missing: no records). Any other failure to
/// read it is an error: a file that cannot be read must never be taken for
/// an empty one.
fn read_records(path: &Path) -> Result<String> {
    match read_ca_file(path, MAX_RECORDS_FILE)? {
        None => Ok(String::new()),
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("cannot read {}: it is not UTF-8 text", path.display())),
    }
}

/// What the CA's records revoke, as the ztssh list carries it.
pub fn recorded(dir: &Path) -> Result<Revocations> {
    Ok(load(dir)?.list)
}

fn load(dir: &Path) -> Result<Records> {
    let path = dir.join(RECORDS);
    let text = read_records(&path)?;
    let mut records = Records::default();
    for (i, line) in text.lines().enumerate() {
        parse_line(line, &mut records).with_context(|| format!("{}:{}", path.display(), i + 1))?;
    }
    Ok(records)
}

const KINDS: &str = "principal|server|serial|key|host-serial|noise-key|subca-key|delegated-key";

/// One line of `revocations.txt`, checked as `revoke` checks its flags.
fn parse_line(line: &str, records: &mut Records) -> Result<()> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(());
    }
    let Some((kind, value)) = line.split_once(' ') else {
        bail!("expected `{KINDS} VALUE`, found {line:?}");
    };
    let value = value.trim();
    let r = &mut records.list;
    match kind {
        "principal" => {
            check_name(value, MAX_PRINCIPAL, "principal")
                .with_context(|| format!("principal {value:?}"))?;
            r.principals.insert(value.to_owned());
        }
        "server" => {
            check_name(value, MAX_SERVER_ID, "server id")
                .with_context(|| format!("server {value:?}"))?;
            r.servers.insert(value.to_owned());
        }
        "serial" => {
            r.serials.insert(parse_serial(value)?);
        }
        "key" => {
            records.keys.insert(parse_fingerprint(value)?);
        }
        "host-serial" => {
            let serial: u64 = value
                .parse()
                .with_context(|| format!("host-serial {value:?}: not a certificate serial"))?;
            if serial == 0 {
                bail!(
                    "host-serial 0: OpenSSH cannot revoke serial 0 (sshd refuses such a KRL and then \
                     every key); remove this line"
                );
            }
            records.host_serials.insert(serial);
        }
        "delegated-key" => {
            let key = parse_key_hex(value)
                .with_context(|| format!("{kind} {value:?}: not 64 hex digits"))?;
            r.delegated_keys.insert(key);
        }
        "noise-key" | "subca-key" => {
            let key = parse_key_hex(value)
                .with_context(|| format!("{kind} {value:?}: not 64 hex digits"))?;
            if kind == "noise-key" {
                noise_key_canonical(&key).with_context(|| format!("{kind} {value}"))?;
                r.noise_keys.insert(key);
            } else {
                r.subca_keys.insert(key);
            }
        }
        _ => bail!("expected `{KINDS} VALUE`, found {kind:?}"),
    }
    Ok(())
}

/// Records a revocation (idempotent).
pub fn revoke(dir: &Path, target: &Target) -> Result<()> {
    // A CA directory, or an on-call copy of its records that holds the
    // root's public key and no private key (its lists are signed with a
    // `revocations` delegation: `crl --delegation`).
    if dir.join("root.key").exists() || !dir.join("root.pub").exists() {
        keyfile::read_signing_key(&dir.join("root.key"), pem::ROOT_KEY)
            .map_err(anyhow::Error::msg)?;
    }
    let path = dir.join(RECORDS);
    // The whole file is checked before a line is added to it: a mistake is
    // reported where it is, and an unreadable file is never replaced.
    load(dir)?;
    let mut text = read_records(&path)?;
    let mut added = Vec::new();
    for line in target.lines() {
        if text.lines().any(|l| l.trim() == line) {
            println!("already revoked: {line}");
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        added.push(line);
    }
    if added.is_empty() {
        return Ok(());
    }
    keyfile::write_atomic(&path, text.as_bytes(), 0o600, keyfile::Existing::Replace)?;
    for line in &added {
        println!("recorded: {line}");
    }
    if matches!(
        target,
        Target::NoiseKey(_) | Target::SubcaKey(_) | Target::LicenceKeys { .. }
    ) {
        println!(
            "every licence for this key is revoked once the list is published, and this CA \
             will not license it again; the server needs new keys (ztssh-proxy keygen) and a \
             licence for them (docs/OPERATOR.md, recovery after a stolen proxy)"
        );
    }
    if let Target::Delegation { .. } = target {
        println!(
            "everything the delegated key signed is refused once the list is published: \
             licences it signed end their sessions, lists it signed are refused (docs/OPERATOR.md, \
             rotating a delegation)"
        );
    }
    if let Target::HostSerial(_) = target {
        println!(
            "publish it: ztssh-ca krl --dir {} --out revoked.krl for every sshd's RevokedKeys \
             (clients check host certificates against it with ssh's RevokedHostKeys)",
            crate::cadir::shown_path(dir)
        );
    } else if let Target::Key(_) = target {
        println!(
            "publish it: ztssh-ca crl --dir {0} --out crl.pem for every proxy, and \
             ztssh-ca krl --dir {0} --out revoked.krl for every sshd's RevokedKeys \
             (docs/OPERATOR.md)",
            crate::cadir::shown_path(dir)
        );
    } else {
        println!(
            "publish it: ztssh-ca crl --dir {} --out crl.pem, then copy crl.pem to every proxy",
            crate::cadir::shown_path(dir)
        );
    }
    Ok(())
}

/// Signs a new revocation list with the next version, by the root, or by
/// `signer`: a `revocations` delegation's key (then `dir` may be a copy of
/// the CA's records and counters without `root.key`).
pub fn crl(
    dir: &Path,
    out: &Path,
    ttl: &str,
    now: u64,
    signer: Option<&crate::delegate::Delegated>,
) -> Result<()> {
    let Some(ttl) = parse_duration(ttl).filter(|t| *t > 0 && *t <= MAX_CRL_TTL) else {
        bail!(
            "--ttl {ttl:?} must be a duration like 7d, at most {}",
            human(MAX_CRL_TTL)
        );
    };
    let held: Box<dyn crate::signer::Signer> = match signer {
        Some(s) => Box::new(crate::signer::file::FileSigner::new(
            s.key_copy(),
            Path::new("delegated key"),
        )),
        None => crate::signer::root(dir)?,
    };
    let root = crate::signer::RootSigning::new(held.as_ref())?;
    let records = load(dir)?;
    let mut revoked = records.list;
    revoked.user_keys = records.keys.iter().copied().collect();
    let version_path = dir.join(VERSION_FILE);
    let last_path = dir.join(LAST_ISSUED_FILE);
    let list_version = next_version(&version_path, true)?;
    check_jump(&version_path, &last_path, list_version)?;
    let list = Crl {
        list_version,
        issued: now,
        next_update: now + ttl,
        issuer: ztssh_proto::rootkey::RootSigner::root_key(&root).id(),
        revoked,
        delegation: None,
    };
    let bytes = list.sign_with(&root)?;
    crate::issuance::audit(
        dir,
        now,
        "revocation-list",
        &format!(
            "version={} not_before={} not_after={}",
            list.list_version, list.issued, list.next_update
        ),
        &root.holder(),
    )?;
    let text =
        ztssh_proto::delegation::encode_pem(pem::CRL, &bytes, signer.map(|s| &s.delegation))?;
    keyfile::write_atomic(
        &version_path,
        format!("{}\n", list.list_version).as_bytes(),
        0o600,
        keyfile::Existing::Replace,
    )?;
    keyfile::write_atomic(
        &last_path,
        format!("{}\n", list.list_version).as_bytes(),
        0o600,
        keyfile::Existing::Replace,
    )?;
    keyfile::write_atomic(out, text.as_bytes(), 0o644, keyfile::Existing::Replace)?;
    let r = &list.revoked;
    println!(
        "revocation list version {} ({} principals, {} servers, {} serials, {} user keys), next update in {}, written to {}",
        list.list_version,
        r.principals.len(),
        r.servers.len(),
        r.serials.len(),
        r.user_keys.len(),
        human(ttl),
        out.display()
    );
    if !r.noise_keys.is_empty() || !r.subca_keys.is_empty() {
        println!(
            "it revokes {} proxy Noise and {} Sub-CA key(s): proxies and sidecars older than this \
             list format (version 3) refuse it",
            r.noise_keys.len(),
            r.subca_keys.len()
        );
    }
    if !r.user_keys.is_empty() {
        println!(
            "it revokes user keys: proxies older than this list format refuse it (version 2); \
             publish the keys to sshd too with ztssh-ca krl"
        );
    }
    Ok(())
}

/// The version after the last one issued, from its counter file. The
/// revocation list's (`crl.version`) must exist: every proxy refuses a
/// list whose version is not above the one it holds, so starting again at
/// 1 would have them all refuse every new list. `ztssh-ca init` writes it;
/// a KRL's counter may start over (sshd does not compare versions). A
/// counter at or above [`MAX_LIST_VERSION`] is refused, never wrapped.
pub(crate) fn next_version(path: &Path, required: bool) -> Result<u64> {
    let last = last_version(path, required)?;
    match last.checked_add(1).filter(|v| *v <= MAX_LIST_VERSION) {
        Some(next) => Ok(next),
        None => bail!(
            "{} holds {last}: no list can follow it (the highest version a CA issues is \
             {MAX_LIST_VERSION}). A counter this high is a typo or was tampered with; counting on \
             from it would reach the end of the version numbers, after which every proxy refuses \
             every list for good. Write the version of the last list this CA issued into it \
             (ztssh-ca show crl.pem prints it)",
            path.display()
        ),
    }
}

/// Refuses `next` when it is more than [`MAX_VERSION_JUMP`] above the last
/// list this CA issued (`crl.last`; 0 when missing, as in a CA directory
/// from before it existed).
fn check_jump(version_path: &Path, last_path: &Path, next: u64) -> Result<()> {
    let last = last_version(last_path, false)?;
    if next <= last.saturating_add(MAX_VERSION_JUMP) {
        return Ok(());
    }
    bail!(
        "{} would make the next list version {next}, but the last list this CA issued is version \
         {last} ({}): a jump of more than {MAX_VERSION_JUMP} versions is a typo or tampering, and \
         counting on from it could run into the highest version a CA issues ({MAX_LIST_VERSION}), \
         after which no list can follow. Write the version of the last list this CA issued into {} \
         (ztssh-ca show crl.pem prints it). If proxies really hold a list that much newer (a CA \
         restored from an old backup), write that version into both {} and {}",
        version_path.display(),
        if last_path.exists() {
            format!("{}", last_path.display())
        } else {
            format!("{} is missing: 0", last_path.display())
        },
        version_path.display(),
        version_path.display(),
        last_path.display()
    )
}

/// The last version issued, from its counter file (see [`next_version`]).
fn last_version(path: &Path, required: bool) -> Result<u64> {
    let read = read_ca_file(path, MAX_VERSION_FILE).with_context(|| {
        format!(
            "cannot read {}; refusing to guess the next version",
            path.display()
        )
    })?;
    match read {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let t = text.trim();
            t.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| t.parse::<u64>().ok())
                .flatten()
                .with_context(|| {
                    format!(
                        "{} is corrupt ({t:?} is not a version number); write the version of the \
                         last list this CA issued into it (ztssh-ca show crl.pem prints it)",
                        path.display(),
                    )
                })
        }
        None if !required => Ok(0),
        None => bail!(
            "{} is missing; it holds the version of the last revocation list this CA \
             issued, and proxies refuse a list that is not newer than theirs. If this CA \
             never issued a list, create it with: (umask 077; echo 0 > {}); otherwise write \
             the last version into it (ztssh-ca show crl.pem prints it)",
            path.display(),
            path.display()
        ),
    }
}

/// Writes the counter files of a new CA: no list issued yet.
pub fn init_versions(dir: &Path) -> Result<()> {
    for name in [VERSION_FILE, LAST_ISSUED_FILE] {
        keyfile::write_atomic(&dir.join(name), b"0\n", 0o600, keyfile::Existing::Refuse)
            .with_context(|| format!("cannot create {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// Writes the revoked user keys as a binary OpenSSH KRL for sshd's
/// `RevokedKeys`, replacing `out` atomically (sshd re-reads it on every
/// authentication and refuses every key while it cannot read it).
pub fn krl(dir: &Path, out: &Path, now: u64) -> Result<()> {
    let host_ca = host_ca_key(dir)?.to_bytes().context("host CA key")?;
    let records = load(dir)?;
    let version_path = dir.join(KRL_VERSION_FILE);
    let version = next_version(&version_path, false)?;
    let bytes = crate::krl::Krl {
        krl_version: version,
        generated: now,
        comment: "ztssh-ca",
        sha256: &records.keys,
        certs: Some((&host_ca, &records.host_serials)),
    }
    .encode()
    .map_err(anyhow::Error::msg)?;
    keyfile::write_atomic(
        &version_path,
        format!("{version}\n").as_bytes(),
        0o600,
        keyfile::Existing::Replace,
    )?;
    keyfile::write_atomic(out, &bytes, 0o644, keyfile::Existing::Replace)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "KRL version {version} ({} revoked user keys, {} revoked host certificates) written to {}",
        records.keys.len(),
        records.host_serials.len(),
        out.display()
    );
    Ok(())
}

/// Why the CA must not license these proxy keys, if a revocation record
/// names one of them.
pub fn refuse_revoked_proxy_keys(dir: &Path, noise: &[u8; 32], subca: &[u8; 32]) -> Result<()> {
    let records = load(dir)?;
    refuse_listed_proxy_keys(
        &records.list,
        &dir.join(RECORDS).display().to_string(),
        noise,
        subca,
    )
}

/// Why no licence may be signed for these proxy keys, if `r` (from
/// `source`: the CA's records or the list in force) revokes one of them.
pub fn refuse_listed_proxy_keys(
    r: &Revocations,
    source: &str,
    noise: &[u8; 32],
    subca: &[u8; 32],
) -> Result<()> {
    let which = if r.noise_keys.contains(noise) {
        format!("Noise key {}", hex(noise))
    } else if r.subca_keys.contains(subca) {
        format!("Sub-CA key {}", hex(subca))
    } else {
        return Ok(());
    };
    bail!(
        "refusing to license this request: its {which} is revoked ({}). Keys that were revoked \
         are treated as stolen and are never licensed again: on the server, generate new keys \
         (ztssh-proxy keygen --dir NEW_STATE_DIR) and sign the new licence-request.pem \
         (docs/OPERATOR.md, recovery after a stolen proxy)",
        source
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_key_lines_parse_into_the_list_and_bad_ones_are_refused() {
        let mut records = Records::default();
        let noise = "2b".repeat(32);
        let subca = "0c".repeat(32);
        parse_line(&format!("noise-key {noise}"), &mut records).expect("noise");
        parse_line(&format!("subca-key {subca}"), &mut records).expect("subca");
        assert!(records.list.noise_keys.contains(&[0x2b; 32]));
        assert!(records.list.subca_keys.contains(&[0x0c; 32]));
        for bad in [
            "noise-key abc",
            "subca-key zz",
            &format!("noise-key {noise}00"),
            // The top bit set: another encoding of an X25519 key, which
            // no licence carries.
            &format!("noise-key {}", "ab".repeat(32)),
        ] {
            assert!(parse_line(bad, &mut Records::default()).is_err(), "{bad}");
        }
        let t = Target::LicenceKeys {
            noise: [0x2b; 32],
            subca: [0x0c; 32],
        };
        assert_eq!(
            t.lines(),
            vec![format!("noise-key {noise}"), format!("subca-key {subca}")]
        );
    }
}
