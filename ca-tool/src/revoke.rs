//! `revoke` and `crl`: the CA's revocation records and the signed list.
//!
//! Records live in `CA/revocations.txt`, one `principal NAME`,
//! `server SERVER_ID` or `serial HEX` per line. `CA/crl.version` holds the
//! last list version issued, so versions only ever go up.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ztssh_proto::cert::{MAX_PRINCIPAL, MAX_SERVER_ID, Serial, check_name};
use ztssh_proto::crl::{Crl, Revocations};
use ztssh_proto::labels::pem;
use ztssh_proto::time::{human, parse_duration};
use ztssh_proto::{armor, keyfile};

const RECORDS: &str = "revocations.txt";
const VERSION_FILE: &str = "crl.version";
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
    /// Builds the target from exactly one of the three flags.
    pub fn from_flags(
        principal: Option<String>,
        server: Option<String>,
        serial: Option<String>,
    ) -> Result<Self> {
        Ok(match (principal, server, serial) {
            (Some(p), None, None) => {
                check_name(&p, MAX_PRINCIPAL, "principal")?;
                Self::Principal(p)
            }
            (None, Some(s), None) => {
                check_name(&s, MAX_SERVER_ID, "server id")?;
                Self::Server(s)
            }
            (None, None, Some(n)) => Self::Serial(parse_serial(&n)?),
            _ => bail!("give exactly one of --principal, --server or --serial"),
        })
    }

    fn line(&self) -> String {
        match self {
            Self::Principal(p) => format!("principal {p}"),
            Self::Server(s) => format!("server {s}"),
            Self::Serial(n) => format!("serial {n}"),
        }
    }
}

fn load(dir: &Path) -> Result<Revocations> {
    let path = dir.join(RECORDS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut r = Revocations::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{}:{}: expected `principal|server|serial VALUE`",
                path.display(),
                i + 1
            )
        };
        let (kind, value) = line.split_once(' ').ok_or_else(bad)?;
        match kind {
            "principal" => r.principals.insert(value.to_owned()),
            "server" => r.servers.insert(value.to_owned()),
            "serial" => r.serials.insert(parse_serial(value)?),
            _ => return Err(bad()),
        };
    }
    Ok(r)
}

/// Records a revocation (idempotent).
pub fn revoke(dir: &Path, target: &Target) -> Result<()> {
    keyfile::read_signing_key(&dir.join("root.key"), pem::ROOT_KEY).map_err(anyhow::Error::msg)?;
    let path = dir.join(RECORDS);
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    let line = target.line();
    if text.lines().any(|l| l.trim() == line) {
        println!("already revoked: {line}");
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    keyfile::write_atomic(&path, text.as_bytes(), 0o600, true)?;
    println!("recorded: {line}");
    println!(
        "publish it: ztssh-ca crl --dir {} --out crl.pem, then copy crl.pem to every proxy",
        dir.display()
    );
    Ok(())
}

/// Signs a new revocation list with the next version.
pub fn crl(dir: &Path, out: &Path, ttl: &str, now: u64) -> Result<()> {
    let Some(ttl) = parse_duration(ttl).filter(|t| *t > 0 && *t <= MAX_CRL_TTL) else {
        bail!(
            "--ttl {ttl:?} must be a duration like 7d, at most {}",
            human(MAX_CRL_TTL)
        );
    };
    let root = keyfile::read_signing_key(&dir.join("root.key"), pem::ROOT_KEY)
        .map_err(anyhow::Error::msg)?;
    let revoked = load(dir)?;
    let version_path = dir.join(VERSION_FILE);
    let last: u64 = match std::fs::read_to_string(&version_path) {
        Ok(t) => t
            .trim()
            .parse()
            .with_context(|| format!("{} is corrupt", version_path.display()))?,
        Err(_) => 0,
    };
    let list = Crl {
        list_version: last + 1,
        issued: now,
        next_update: now + ttl,
        issuer: root.public(),
        revoked,
    };
    let bytes = list.sign(&root)?;
    keyfile::write_atomic(
        &version_path,
        format!("{}\n", list.list_version).as_bytes(),
        0o600,
        true,
    )?;
    keyfile::write_atomic(out, armor::encode(pem::CRL, &bytes).as_bytes(), 0o644, true)?;
    let r = &list.revoked;
    println!(
        "revocation list version {} ({} principals, {} servers, {} serials), next update in {}, written to {}",
        list.list_version,
        r.principals.len(),
        r.servers.len(),
        r.serials.len(),
        human(ttl),
        out.display()
    );
    Ok(())
}
