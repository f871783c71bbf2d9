//! Platform OIDC tokens as an identity source: a JWT that GitHub Actions,
//! GitLab CI or a Kubernetes projected service-account volume hands a
//! workload, checked offline against the platform's key set (JWKS) that
//! the caller fetched or pinned. [`verify`] turns the token bytes into a
//! [`TokenVerified`], which only it makes, or a [`Refused`] whose reason
//! names the issuer, what is wrong and what to do.
//!
//! # Call order
//! 1. Once per configuration: [`KeySet::from_json`] for each issuer's
//!    JWKS, [`Issuers::new`] over the [`Issuer`]s (and
//!    [`Issuers::set_keys`] whenever a key set is fetched again).
//! 2. At admission: [`verify`], then [`ReplayCache::first_use`] with the
//!    token's [`TokenVerified::id`] and [`TokenVerified::expires`] where
//!    a token must serve one connection only (GitHub Actions mints one per
//!    request; a Kubernetes pod reuses its projected token for an hour).
//! 3. At every later checkpoint: [`TokenVerified::check`] against the
//!    issuers in force; at a renewal, [`verify`] on the new token, then
//!    [`TokenVerified::continues`] from the token in force.
//!
//! # Verify before parse
//! The compact token is split into its three parts and only the JOSE
//! header is read before the signature: `alg` (RS256, ES256 or EdDSA;
//! never `none` or an HMAC) and `kid`, to pick the candidate keys, every
//! key of a configured issuer with that `kid`, of that algorithm's type,
//! under an issuer that allows the algorithm. The claims are parsed only
//! once a candidate's signature verified (jsonwebtoken's `decode`, with all
//! of its own claim checks off: it never reads the clock), and `iss` must
//! then be that key's issuer. Audience, times, lifetime and the rules
//! are judged here, against `now`.
//!
//! proto does no IO: the caller fetches key sets and passes `now`.

use base64ct::{Base64UrlUnpadded, Encoding};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::end::{EndKind, Ended};
use crate::time::{UnixTime, when};

mod keys;
mod replay;
mod rules;

pub use keys::{KeySet, KeysInForce, MAX_JWKS, MAX_KEYS, MAX_RSA_BITS, MIN_RSA_BITS};
pub use replay::{KeyId, MAX_LIVE_PER_WORKLOAD, ReplayCache, key_id, owner_id};
pub use rules::{
    Issuer, Issuers, MAX_ISSUERS, MAX_RULE_CLAIMS, MAX_RULES, MAX_SKEW, Rule, VERIFIED_CLAIMS,
    tenant_claims,
};

use keys::Key;
#[cfg(test)]
use rules::glob_match;
use rules::match_rule;

/// Bytes of a compact JWT accepted.
pub const MAX_TOKEN: usize = 4096;
/// Longest `kid` kept.
const MAX_KID: usize = 256;
/// Longest claim value a refusal quotes.
const MAX_QUOTED: usize = 120;

/// A signature algorithm ztssh accepts on a platform token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (GitHub, GitLab, Kubernetes).
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// Every algorithm, for configuration defaults.
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// Parses a JOSE `alg` (`RS256`, `ES256`, `EdDSA`); `none`, HMAC and
    /// anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Self::Rs256 => "an RSA key",
            Self::Es256 => "a P-256 key",
            Self::EdDsa => "an Ed25519 key",
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token was refused, by fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// Not a compact JWT, too large, or a header or claims that do not read.
    Malformed,
    /// An `alg` ztssh never accepts (`none`, HMAC, ...), one no issuer
    /// allows, or one the key with that `kid` cannot make.
    BadAlgorithm,
    /// No configured issuer has a key with the token's `kid`.
    UnknownKey,
    /// The issuers that could have signed it have no fresh key set.
    KeysUnavailable,
    /// No candidate key verifies the signature.
    BadSignature,
    /// Signed by an issuer's key but naming another `iss`.
    WrongIssuer,
    /// Not for this proxy's audience.
    WrongAudience,
    /// Past `exp` (plus skew).
    Expired,
    /// Before `nbf` or `iat` (minus skew).
    NotYetValid,
    /// Valid for longer than the issuer allows.
    LifetimeTooLong,
    /// No rule lets it act as the principal.
    NoRule,
    /// Seen before, or older than the token in force.
    Replayed,
    /// The replay cache is full of live tokens.
    ReplayCacheFull,
    /// A renewal's token for another workload, principal or rule.
    NotContinuation,
}

impl RefusalKind {
    /// Every kind.
    pub const ALL: [RefusalKind; 14] = [
        Self::Malformed,
        Self::BadAlgorithm,
        Self::UnknownKey,
        Self::KeysUnavailable,
        Self::BadSignature,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::Expired,
        Self::NotYetValid,
        Self::LifetimeTooLong,
        Self::NoRule,
        Self::Replayed,
        Self::ReplayCacheFull,
        Self::NotContinuation,
    ];

    /// Stable snake_case label, for logs and a Prometheus label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadAlgorithm => "bad_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::NoRule => "no_rule",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::NotContinuation => "not_continuation",
        }
    }
}

/// A refused token: the fault and a sentence naming the issuer, what is
/// wrong and what to do. It never quotes the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The fault.
    pub kind: RefusalKind,
    /// For logs and the user.
    pub reason: String,
}

impl Refused {
    fn new(kind: RefusalKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// The session end it makes: [`EndKind::WorkloadTokenRefused`], or
    /// [`EndKind::WorkloadCheckUnavailable`] when the proxy could not judge
    /// (no fresh key set, a full replay cache).
    pub fn ended(&self) -> Ended {
        let kind = match self.kind {
            RefusalKind::KeysUnavailable | RefusalKind::ReplayCacheFull => {
                EndKind::WorkloadCheckUnavailable
            }
            _ => EndKind::WorkloadTokenRefused,
        };
        Ended::new(kind, self.reason.clone())
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refused {}

/// A platform token that passed every check of [`verify`]. Only [`verify`]
/// makes one. It keeps the token's claims (to judge changed rules later),
/// never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenVerified {
    issuer: String,
    iss: String,
    sub: String,
    principal: String,
    rule: Rule,
    used: Vec<(String, String)>,
    claims: Map<String, Value>,
    aud: Vec<String>,
    kid: String,
    key: [u8; 32],
    iat: UnixTime,
    exp: UnixTime,
    expires: UnixTime,
    id: [u8; 32],
}

impl TokenVerified {
    /// The issuer's configured name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token's `iss`.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// The token's `sub`.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The principal it acts as.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The accounts of the rule it matched.
    pub fn accounts(&self) -> &[String] {
        &self.rule.accounts
    }

    /// The rule it matched.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The claims the rule tested, with the token's values.
    pub fn claims(&self) -> &[(String, String)] {
        &self.used
    }

    /// The `kid` of the key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `iat`.
    pub fn iat(&self) -> UnixTime {
        self.iat
    }

    /// `exp`.
    pub fn exp(&self) -> UnixTime {
        self.exp
    }

    /// The moment from which [`verify`] refuses it (`exp` plus the
    /// issuer's skew): keep its id in a [`ReplayCache`] until then.
    pub fn expires(&self) -> UnixTime {
        self.expires
    }

    /// Its replay id (see [`crate::labels::CTX_WORKLOAD_TOKEN_ID`]).
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// A short description for logs: issuer, sub, principal and expiry.
    pub fn describe(&self) -> String {
        format!(
            "token from issuer {} for sub {} as principal {}, expires {}",
            self.issuer,
            quoted(&self.sub),
            self.principal,
            crate::time::date(self.exp)
        )
    }

    /// The checks at every later checkpoint: its issuer still configured
    /// with the same `iss` and an audience the token names, its key not
    /// withdrawn from a fresh key set, not expired, and a rule for its
    /// principal still matching its claims.
    pub fn check(&self, issuers: &Issuers, now: UnixTime) -> Result<(), Ended> {
        let refuse = |why: String| Ended::new(EndKind::WorkloadTokenRefused, why);
        let name = &self.issuer;
        let Some(issuer) = issuers.get(name) else {
            return Err(refuse(format!(
                "workload issuer {name} is no longer configured on this proxy: its tokens are \
                 not accepted any more"
            )));
        };
        if issuer.issuer != self.iss || !self.aud.contains(&issuer.audience) {
            return Err(refuse(format!(
                "workload issuer {name} is now configured with iss {} and audience {}, which \
                 this session's token does not carry: reconnect with a token for them",
                issuer.issuer, issuer.audience
            )));
        }
        if let Some(keys) = issuer.keys.as_ref().filter(|k| !k.stale(now))
            && !keys.set.holds(&self.kid, &self.key)
        {
            return Err(refuse(format!(
                "the key {} that signed this session's token was withdrawn from issuer {name}'s \
                 key set: reconnect with a token signed by a current key",
                self.kid
            )));
        }
        if now >= self.exp.saturating_add(issuer.skew_secs) {
            return Err(Ended::new(
                EndKind::WorkloadTokenExpired,
                format!(
                    "the token from issuer {name} expired {} and no newer one came: renew it \
                     before it expires",
                    when(self.exp, now)
                ),
            ));
        }
        match_rule(issuer, &self.claims, &self.principal)
            .map(|_| ())
            .map_err(refuse)
    }

    /// Whether `next`, a renewal's verified token, may take this one's
    /// place: the same issuer, `sub`, principal and rule (by content), and
    /// issued no earlier.
    pub fn continues(&self, next: &TokenVerified) -> Result<(), Refused> {
        let name = &self.issuer;
        let differs = if next.issuer != self.issuer || next.iss != self.iss {
            Some(format!("comes from issuer {}", next.issuer))
        } else if next.sub != self.sub {
            Some(format!("is for sub {}", quoted(&next.sub)))
        } else if next.principal != self.principal {
            Some(format!("acts as principal {}", next.principal))
        } else if next.rule != self.rule {
            Some(format!(
                "matches another rule for principal {} (accounts {})",
                next.principal,
                next.rule.accounts.join(",")
            ))
        } else {
            None
        };
        if let Some(what) = differs {
            return Err(Refused::new(
                RefusalKind::NotContinuation,
                format!(
                    "the renewal's token {what}, not the workload of this session (issuer \
                     {name}, sub {}, principal {}): a session keeps its workload; open a new one",
                    quoted(&self.sub),
                    self.principal
                ),
            ));
        }
        if next.iat < self.iat {
            return Err(Refused::new(
                RefusalKind::Replayed,
                format!(
                    "the renewal's token from issuer {name} was issued {}, before the token in \
                     force ({}): send the newest token",
                    crate::time::date(next.iat),
                    crate::time::date(self.iat)
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for TokenVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerified")
            .field("issuer", &self.issuer)
            .field("sub", &self.sub)
            .field("principal", &self.principal)
            .field("claims", &self.used)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// The parts of a compact token, split and checked before any key is used.
struct Compact<'t> {
    alg: Alg,
    kid: String,
    text: &'t str,
    signed: &'t str,
}

fn malformed(why: impl std::fmt::Display) -> Refused {
    Refused::new(
        RefusalKind::Malformed,
        format!(
            "not a platform token ({why}): send the JWT as the platform issued it \
             (GitHub: ACTIONS_ID_TOKEN_REQUEST_URL; Kubernetes: the projected token file)"
        ),
    )
}

fn split(token: &[u8]) -> Result<Compact<'_>, Refused> {
    if token.len() > MAX_TOKEN {
        return Err(malformed(format_args!(
            "{} bytes, more than the {MAX_TOKEN} accepted",
            token.len()
        )));
    }
    let text = std::str::from_utf8(token).map_err(|_| malformed("not text"))?;
    let parts: Vec<&str> = text.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(malformed("not three base64url parts"));
    };
    // The header first: an `alg` of none comes with an empty signature.
    let bytes = Base64UrlUnpadded::decode_vec(header).map_err(|_| malformed("bad header"))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("header is not JSON"))?;
    let alg_text = header.get("alg").and_then(Value::as_str);
    let Some(alg) = alg_text.and_then(Alg::parse) else {
        return Err(Refused::new(
            RefusalKind::BadAlgorithm,
            format!(
                "token signed with alg {}: ztssh accepts only RS256, ES256 and EdDSA (never \
                 none or HMAC): use the platform's own token",
                alg_text.map_or_else(|| "(none)".into(), quoted)
            ),
        ));
    };
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KID)
        .ok_or_else(|| malformed("no kid in its header"))?;
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64url(payload) || !b64url(signature) {
        return Err(malformed("not three base64url parts"));
    }
    Ok(Compact {
        alg,
        kid: kid.to_owned(),
        text,
        signed: text.rsplit_once('.').map_or(text, |(signed, _)| signed),
    })
}

/// Verifies platform token `token` for a session of `principal` at `now`
/// under the configured `issuers`. See the module docs for the order.
pub fn verify(
    issuers: &Issuers,
    token: &[u8],
    principal: &str,
    now: UnixTime,
) -> Result<TokenVerified, Refused> {
    let compact = split(token)?;
    let candidates = candidates(issuers, &compact, now)?;
    let mut validation = Validation::new(compact.alg.jwt());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let mut wrong_issuer = None;
    let mut malformed_claims = None;
    for (issuer, key) in candidates.iter().copied() {
        let claims = match jsonwebtoken::decode::<Value>(compact.text, &key.decoding, &validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                continue;
            }
            Err(e) => {
                malformed_claims = Some(format!("{e}"));
                continue;
            }
        };
        let Value::Object(claims) = claims else {
            malformed_claims = Some("the claims are not a JSON object".into());
            continue;
        };
        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == issuer.issuer => {}
            iss => {
                wrong_issuer = Some(Refused::new(
                    RefusalKind::WrongIssuer,
                    format!(
                        "token signed by issuer {}'s key {} names iss {}, not {}: a platform \
                         token's iss is its signer; check the issuer's configuration",
                        issuer.name,
                        key.kid,
                        iss.map_or_else(|| "(none)".into(), quoted),
                        issuer.issuer
                    ),
                ));
                continue;
            }
        }
        return check_claims(issuer, key, claims, &compact, principal, now);
    }
    if let Some(why) = malformed_claims {
        return Err(malformed(why));
    }
    Err(wrong_issuer.unwrap_or_else(|| {
        let names: Vec<&str> = candidates.iter().map(|(i, _)| i.name.as_str()).collect();
        Refused::new(
            RefusalKind::BadSignature,
            format!(
                "token signature does not verify under key {} of issuer {}: it was altered or \
                 not signed by that issuer; send the token as the platform issued it",
                compact.kid,
                names.join(", ")
            ),
        )
    }))
}

/// Every (issuer, key) that may have signed `t`, or why there is none.
fn candidates<'i>(
    issuers: &'i Issuers,
    t: &Compact<'_>,
    now: UnixTime,
) -> Result<Vec<(&'i Issuer, &'i Key)>, Refused> {
    let (alg, kid) = (t.alg, t.kid.as_str());
    let mut out = Vec::new();
    let mut unavailable = Vec::new();
    let mut wrong_type = None;
    let allowing: Vec<&Issuer> = issuers
        .list()
        .iter()
        .filter(|i| i.algorithms.contains(&alg))
        .collect();
    for issuer in &allowing {
        let keys = match &issuer.keys {
            None => {
                unavailable.push(format!("issuer {} has no key set yet", issuer.name));
                continue;
            }
            Some(k) if k.stale(now) => {
                unavailable.push(format!(
                    "issuer {}'s key set has not been refreshed since {}",
                    issuer.name,
                    when(k.fetched, now)
                ));
                continue;
            }
            Some(k) => k,
        };
        for key in keys.set.keys.iter().filter(|k| k.kid == kid) {
            if key.alg == alg {
                out.push((*issuer, key));
            } else {
                wrong_type = Some(format!(
                    "key {kid} of issuer {} is {}, and the token says {alg}",
                    issuer.name,
                    key.alg.key_type()
                ));
            }
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    if allowing.is_empty() {
        return Err(Refused::new(
            RefusalKind::BadAlgorithm,
            format!("no workload issuer on this proxy allows {alg}: ask the operator which do"),
        ));
    }
    if let Some(why) = wrong_type {
        return Err(Refused::new(
            RefusalKind::BadAlgorithm,
            format!("{why}: the token's algorithm must fit its key"),
        ));
    }
    if !unavailable.is_empty() {
        return Err(Refused::new(
            RefusalKind::KeysUnavailable,
            format!(
                "cannot check the token's key {kid}: {}; the proxy fetches key sets itself, so \
                 try again shortly, and if it persists its operator must check that the JWKS URL \
                 is reachable (or refresh the pinned file)",
                unavailable.join("; ")
            ),
        ));
    }
    let names: Vec<&str> = allowing.iter().map(|i| i.name.as_str()).collect();
    Err(Refused::new(
        RefusalKind::UnknownKey,
        format!(
            "no key {kid} in the key set of issuer {}: the token is from another platform or \
             cluster, or the platform rotated its keys since the proxy last fetched them (try \
             again after its next refresh)",
            names.join(", ")
        ),
    ))
}

/// The checks on the claims, once the signature and `iss` held.
fn check_claims(
    issuer: &Issuer,
    key: &Key,
    claims: Map<String, Value>,
    t: &Compact<'_>,
    principal: &str,
    now: UnixTime,
) -> Result<TokenVerified, Refused> {
    let name = &issuer.name;
    let aud = audiences(&claims).ok_or_else(|| malformed("its aud is not a string or a list"))?;
    if !aud.contains(&issuer.audience) {
        let named: Vec<String> = aud.iter().map(|a| quoted(a)).collect();
        return Err(Refused::new(
            RefusalKind::WrongAudience,
            format!(
                "token from issuer {name} is for audience {}, not {}: request the token for \
                 audience {} (GitHub: core.getIDToken(\"{}\"); Kubernetes: the projected \
                 token's audience)",
                named.join(", "),
                issuer.audience,
                issuer.audience,
                issuer.audience
            ),
        ));
    }
    let time = |field: &str| match claims.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(format_args!("its {field} is not whole seconds"))),
    };
    let (exp, iat, nbf) = (time("exp")?, time("iat")?, time("nbf")?);
    let (Some(exp), Some(iat)) = (exp, iat) else {
        return Err(malformed("it has no exp or no iat"));
    };
    check_times(issuer, exp, iat, nbf, now)?;
    let text = |field: &str| match claims.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format_args!("its {field} is not a string"))),
    };
    let sub = text("sub")?.ok_or_else(|| malformed("it has no sub"))?;
    let jti = text("jti")?;
    let (rule, used) = match_rule(issuer, &claims, principal)
        .map_err(|why| Refused::new(RefusalKind::NoRule, why))?;
    let rule = rule.clone();
    let id = token_id(&issuer.issuer, jti.as_deref(), t.signed);
    Ok(TokenVerified {
        issuer: name.clone(),
        iss: issuer.issuer.clone(),
        sub,
        principal: principal.to_owned(),
        rule,
        used,
        claims,
        aud,
        kid: key.kid.clone(),
        key: key.fingerprint,
        iat,
        exp,
        expires: exp.saturating_add(issuer.skew_secs),
        id,
    })
}

fn audiences(claims: &Map<String, Value>) -> Option<Vec<String>> {
    match claims.get("aud")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(list) if !list.is_empty() => {
            list.iter().map(|v| v.as_str().map(str::to_owned)).collect()
        }
        _ => None,
    }
}

fn check_times(
    issuer: &Issuer,
    exp: UnixTime,
    iat: UnixTime,
    nbf: Option<UnixTime>,
    now: UnixTime,
) -> Result<(), Refused> {
    let (name, skew) = (&issuer.name, issuer.skew_secs);
    if now >= exp.saturating_add(skew) {
        return Err(Refused::new(
            RefusalKind::Expired,
            format!(
                "token from issuer {name} expired {}: get a fresh token from the platform",
                when(exp, now)
            ),
        ));
    }
    let start = nbf.map_or(iat, |n| n.max(iat));
    if start > now.saturating_add(skew) {
        return Err(Refused::new(
            RefusalKind::NotYetValid,
            format!(
                "token from issuer {name} is not valid until {}: check this host's clock \
                 (and the platform's)",
                when(start, now)
            ),
        ));
    }
    let lifetime = exp.saturating_sub(start);
    if lifetime > issuer.max_lifetime_secs {
        return Err(Refused::new(
            RefusalKind::LifetimeTooLong,
            format!(
                "token from issuer {name} is valid for {}, longer than the {} this proxy \
                 accepts: request a shorter-lived token (Kubernetes: the projected token's \
                 expirationSeconds) or ask the operator to raise the issuer's max lifetime",
                crate::time::human(lifetime),
                crate::time::human(issuer.max_lifetime_secs)
            ),
        ));
    }
    Ok(())
}

/// A claim value as a refusal shows it: escaped if it holds control
/// characters, cut if long.
fn quoted(v: &str) -> String {
    let cut: String = v.chars().take(MAX_QUOTED).collect();
    let more = if cut.len() < v.len() { "..." } else { "" };
    if cut.chars().any(char::is_control) {
        format!("{cut:?}{more}")
    } else {
        format!("{cut}{more}")
    }
}

fn token_id(iss: &str, jti: Option<&str>, signed: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(crate::labels::CTX_WORKLOAD_TOKEN_ID);
    match jti {
        Some(jti) => {
            h.update([1]);
            h.update((iss.len() as u64).to_be_bytes());
            h.update(iss.as_bytes());
            h.update(jti.as_bytes());
        }
        // The signed part, not the signature: an ECDSA signature has two
        // valid forms, and the id must not change with it.
        None => {
            h.update([0]);
            h.update(signed.as_bytes());
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests;
