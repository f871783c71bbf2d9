//! A test OpenID Connect issuer for the workload-identity tests (a CI job or
//! a pod logs in with its platform's OIDC token instead of a stored SSH
//! key): an RSA-2048 key (RS256) and a P-256 key (ES256), their JWKS
//! (RFC 7517) published through the nginx harness, key rotation, tokens
//! signed with `jsonwebtoken` (the crate the proxy verifies them with), the
//! hostile tokens a verifier must refuse, and (in `claims.rs`) claim sets
//! shaped like each platform's documented token.
//!
//! The keys are made by the real `openssl` CLI, not the `rsa`/`p256` crates
//! (both in the lock through ssh-key and jsonwebtoken): the JWKS is read
//! from OpenSSL's own public-key encoding, so a token that verifies against
//! it shows two implementations agreeing (OpenSSL's keys, RustCrypto's
//! signatures and verification), not one crate agreeing with itself; no
//! crate's key-generation API is tied to the harness; and an RSA-2048 key
//! takes `openssl` well under a second, whatever the test build's
//! optimisation level.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::nginx::{Nginx, WebRoot};
use crate::{http_get, run_bounded, wait_until};

mod claims;
pub use claims::{github_claims, gitlab_claims, kubernetes_claims};

const T: Duration = Duration::from_secs(10);

/// Where nginx serves the JWKS.
pub const JWKS_PATH: &str = "/jwks.json";

/// A signing algorithm of the issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over an RSA-2048 key.
    Rs256,
    /// ECDSA over P-256 with SHA-256.
    Es256,
}

impl TestAlg {
    pub const ALL: [TestAlg; 2] = [TestAlg::Rs256, TestAlg::Es256];

    /// The JOSE name (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            TestAlg::Rs256 => "RS256",
            TestAlg::Es256 => "ES256",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            TestAlg::Rs256 => Algorithm::RS256,
            TestAlg::Es256 => Algorithm::ES256,
        }
    }

    fn genpkey_args(self) -> [&'static str; 5] {
        match self {
            TestAlg::Rs256 => [
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            TestAlg::Es256 => [
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        }
    }
}

/// Which encoding of the RSA public key an algorithm-confusion token uses
/// as its HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicKeyForm {
    /// The SubjectPublicKeyInfo PEM text (`-----BEGIN PUBLIC KEY-----`),
    /// byte for byte as `openssl pkey -pubout` writes it.
    Pem,
    /// The SubjectPublicKeyInfo DER.
    Der,
}

/// One key pair: the private key in a 0600 file, the public JWK.
struct IssuerKey {
    alg: TestAlg,
    kid: String,
    /// The public JWK, with `kid`, `alg` and `use`.
    jwk: Value,
    /// SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
    signer: EncodingKey,
}

impl IssuerKey {
    /// `openssl genpkey` into a 0600 file under `dir` named after the kid.
    fn generate(dir: &Path, alg: TestAlg) -> Self {
        let pem = openssl(Command::new("openssl").args(alg.genpkey_args()));
        // tempfile creates 0600; the key is complete before its name appears.
        let mut file = tempfile::NamedTempFile::new_in(dir).expect("key file");
        file.write_all(&pem).expect("write key");
        let spki = openssl(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(file.path()),
        );
        let (mut jwk, kid) = public_jwk(alg, &spki);
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.name());
        jwk["use"] = json!("sig");
        let path = dir.join(format!("{}-{kid}.pem", alg.name().to_lowercase()));
        file.persist(&path).expect("keep key file");
        let signer = match alg {
            TestAlg::Rs256 => EncodingKey::from_rsa_pem(&pem),
            TestAlg::Es256 => EncodingKey::from_ec_pem(&pem),
        }
        .expect("jsonwebtoken reads openssl's PKCS#8 key");
        Self {
            alg,
            kid,
            jwk,
            spki,
            signer,
        }
    }

    /// A compact JWT with header `{alg, kid, typ: "JWT"}`.
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg.algorithm());
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.signer).expect("sign")
    }

    /// The SPKI PEM exactly as `openssl pkey -pubout` writes it.
    fn spki_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

/// The issuer: a current RSA and EC key, the keys they replaced (still in
/// the JWKS until [`TestIssuer::drop_old`]), key files 0600 under `dir`.
pub struct TestIssuer {
    dir: PathBuf,
    issuer_url: String,
    rsa: IssuerKey,
    ec: IssuerKey,
    previous: Vec<IssuerKey>,
}

impl TestIssuer {
    /// Makes both keys (each with its RFC 7638 thumbprint as `kid`) in `dir`.
    pub fn new(dir: &Path, issuer_url: &str) -> Self {
        std::fs::create_dir_all(dir).expect("issuer dir");
        Self {
            dir: dir.to_owned(),
            issuer_url: issuer_url.to_owned(),
            rsa: IssuerKey::generate(dir, TestAlg::Rs256),
            ec: IssuerKey::generate(dir, TestAlg::Es256),
            previous: Vec::new(),
        }
    }

    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    fn key(&self, alg: TestAlg) -> &IssuerKey {
        match alg {
            TestAlg::Rs256 => &self.rsa,
            TestAlg::Es256 => &self.ec,
        }
    }

    /// The current key's `kid` for `alg`.
    pub fn kid(&self, alg: TestAlg) -> &str {
        &self.key(alg).kid
    }

    /// Every `kid` in the JWKS: the current keys, then the replaced ones.
    pub fn kids(&self) -> Vec<String> {
        self.keys().map(|k| k.kid.clone()).collect()
    }

    fn keys(&self) -> impl Iterator<Item = &IssuerKey> {
        [&self.rsa, &self.ec].into_iter().chain(&self.previous)
    }

    /// The JWKS (RFC 7517): public members only, each key with `kid`, `alg`
    /// and `use: "sig"`.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<&Value> = self.keys().map(|k| &k.jwk).collect();
        serde_json::to_string_pretty(&json!({ "keys": keys })).expect("JWKS")
    }

    /// New RSA and EC keys (new kids) sign from now on; the old ones stay in
    /// the JWKS, as an issuer's do during a rotation, until
    /// [`TestIssuer::drop_old`].
    pub fn rotate(&mut self) {
        let rsa = IssuerKey::generate(&self.dir, TestAlg::Rs256);
        let ec = IssuerKey::generate(&self.dir, TestAlg::Es256);
        self.previous.push(std::mem::replace(&mut self.rsa, rsa));
        self.previous.push(std::mem::replace(&mut self.ec, ec));
    }

    /// Removes the replaced keys from the JWKS (the rotation's end).
    pub fn drop_old(&mut self) {
        self.previous.clear();
    }

    /// `claims` signed with the current key for `alg`.
    pub fn mint(&self, alg: TestAlg, claims: &Value) -> String {
        let key = self.key(alg);
        key.sign(&key.kid, claims)
    }

    /// `claims` signed with the key the last [`TestIssuer::rotate`]
    /// replaced for `alg` (under its own kid); panics before any rotation.
    pub fn mint_with_previous(&self, alg: TestAlg, claims: &Value) -> String {
        let key = self.previous.iter().rev().find(|k| k.alg == alg);
        let key = key.expect("no previous key: rotate() first");
        key.sign(&key.kid, claims)
    }

    /// Header `{alg: "none", kid: <the RSA kid>, typ: "JWT"}` and an empty
    /// signature (`header.payload.`).
    pub fn mint_alg_none(&self, claims: &Value) -> String {
        let header = json!({ "alg": "none", "kid": self.rsa.kid, "typ": "JWT" });
        format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
    }

    /// Algorithm confusion: HS256 under the RSA key's kid, with the RSA
    /// public key itself (PEM text or DER) as the HMAC secret; a verifier
    /// that lets the header choose the algorithm accepts it.
    pub fn mint_hs256_with_public_key(&self, claims: &Value, form: PublicKeyForm) -> String {
        let secret = match form {
            PublicKeyForm::Pem => self.rsa.spki_pem().into_bytes(),
            PublicKeyForm::Der => self.rsa.spki.clone(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.rsa.kid.clone());
        let key = EncodingKey::from_secret(&secret).expect("HMAC key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// Correctly signed by the current RSA key, under a kid that is in no
    /// JWKS.
    pub fn mint_unknown_kid(&self, claims: &Value) -> String {
        self.rsa.sign(&format!("unknown-{}", self.rsa.kid), claims)
    }

    /// Signed by a fresh key of `alg` that is in no JWKS, under the kid of
    /// the current key for `alg`: the kid resolves, the signature fails.
    pub fn mint_with_key_not_in_jwks(&self, alg: TestAlg, claims: &Value) -> String {
        let stranger = IssuerKey::generate(&self.dir, alg);
        stranger.sign(&self.key(alg).kid, claims)
    }

    /// Writes the JWKS beside `web`'s served tree and renames it over
    /// `www/jwks.json` (atomic, as the lists are published).
    pub fn publish_to(&self, web: &WebRoot) {
        let staging = web.path().join("staging/jwks.json");
        std::fs::write(&staging, self.jwks_json()).expect("write JWKS");
        // nginx's workers run as www-data when the tests run as root.
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&staging, mode).expect("chmod JWKS");
        let served = web.path().join("www/jwks.json");
        std::fs::rename(&staging, served).expect("publish JWKS");
    }

    /// Re-publishes the JWKS (after [`TestIssuer::rotate`] or
    /// [`TestIssuer::drop_old`]).
    pub fn publish(&self, server: &JwksServer) {
        self.publish_to(&server.web);
    }

    /// Starts nginx on a fresh web root serving this issuer's JWKS.
    pub fn serve(&self) -> JwksServer {
        let web = WebRoot::new();
        self.publish_to(&web);
        let nginx = Nginx::start_empty(&web);
        wait_until(T, "nginx to serve the JWKS", || {
            http_get(nginx.port, JWKS_PATH).starts_with("HTTP/1.1 200")
        });
        JwksServer { nginx, web }
    }
}

/// An nginx serving a JWKS; dropping it stops nginx, then removes the tree.
pub struct JwksServer {
    pub nginx: Nginx,
    pub web: WebRoot,
}

impl JwksServer {
    pub fn url(&self) -> String {
        jwks_url(&self.nginx)
    }
}

/// The JWKS's URL on `nginx` (published there with
/// [`TestIssuer::publish_to`]).
pub fn jwks_url(nginx: &Nginx) -> String {
    format!("http://127.0.0.1:{}{JWKS_PATH}", nginx.port)
}

/// Runs an `openssl` command to completion; its stdout.
fn openssl(cmd: &mut Command) -> Vec<u8> {
    let out = run_bounded(cmd, T);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{err}", out.status);
    out.stdout
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWK's public members from an SPKI, and its RFC 7638 thumbprint
/// (SHA-256 of the required members in lexicographic order, no spaces).
fn public_jwk(alg: TestAlg, spki: &[u8]) -> (Value, String) {
    let (jwk, canonical) = match alg {
        TestAlg::Rs256 => {
            let (n, e) = rsa_modulus_exponent(spki);
            let (n, e) = (b64(n), b64(e));
            let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            (json!({ "kty": "RSA", "n": n, "e": e }), canonical)
        }
        TestAlg::Es256 => {
            let point = spki.strip_prefix(P256_SPKI_PREFIX);
            let point = point.filter(|p| p.len() == 64).expect("P-256 SPKI");
            let (x, y) = (b64(&point[..32]), b64(&point[32..]));
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            (
                json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
                canonical,
            )
        }
    };
    (jwk, b64(Sha256::digest(canonical)))
}

/// SPKI DER of a P-256 key up to its uncompressed point's 0x04: SEQUENCE,
/// AlgorithmIdentifier (id-ecPublicKey, prime256v1), BIT STRING header.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

/// `n` and `e` (unsigned, no leading zero) of an RSA SPKI:
/// SEQUENCE { AlgorithmIdentifier, BIT STRING { 0, SEQUENCE { n, e } } }.
fn rsa_modulus_exponent(spki: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, spki, _) = der(spki);
    let (_, _algorithm, rest) = der(spki);
    let (tag, bits, _) = der(rest);
    assert_eq!((tag, bits.first()), (0x03, Some(&0)), "RSA SPKI BIT STRING");
    let (_, key, _) = der(&bits[1..]);
    let (_, n, rest) = der(key);
    let (_, e, _) = der(rest);
    let unsigned = |i: &[u8]| i.strip_prefix(&[0]).unwrap_or(i).to_vec();
    (unsigned(n), unsigned(e))
}

/// One DER element: (tag, contents, the bytes after it). Enough for the
/// SPKI openssl writes; panics on anything malformed.
fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let (&tag, rest) = input.split_first().expect("DER tag");
    let (&len, rest) = rest.split_first().expect("DER length");
    let (len, rest) = match len {
        0..0x80 => (usize::from(len), rest),
        _ => {
            let (bytes, rest) = rest.split_at(usize::from(len & 0x7f));
            (bytes.iter().fold(0, |a, &b| a << 8 | usize::from(b)), rest)
        }
    };
    let (contents, rest) = rest.split_at(len);
    (tag, contents, rest)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
    use jsonwebtoken::{DecodingKey, Validation, decode};

    use super::*;

    const AUD: &str = "ztssh://bastion.example";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn issuer(dir: &Path) -> TestIssuer {
        TestIssuer::new(dir, "https://issuer.test")
    }

    fn set(issuer: &TestIssuer) -> JwkSet {
        serde_json::from_str(&issuer.jwks_json()).expect("a JWKS jsonwebtoken reads")
    }

    /// The token's header as JSON (read by hand: jsonwebtoken refuses
    /// `alg: none`).
    fn header_of(token: &str) -> Value {
        let part = token.split('.').next().expect("header");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    }

    /// jsonwebtoken's own verification of `token` against the key `set`
    /// holds under the token's kid, for `alg`, audience and issuer.
    fn verify(
        set: &JwkSet,
        token: &str,
        alg: Algorithm,
        iss: &str,
    ) -> jsonwebtoken::errors::Result<Value> {
        let kid = header_of(token)["kid"].as_str().expect("kid").to_owned();
        let jwk = set
            .find(&kid)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut v = Validation::new(alg);
        v.set_audience(&[AUD]);
        v.set_issuer(&[iss]);
        v.validate_nbf = true;
        decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &v).map(|d| d.claims)
    }

    fn all_claims() -> [(Value, &'static str); 3] {
        let t = now();
        [
            (
                github_claims("acme/app", "refs/heads/main", Some("prod"), AUD, t, t + 300),
                "https://token.actions.githubusercontent.com",
            ),
            (
                kubernetes_claims("https://issuer.test", "ci", "deployer", AUD, t, t + 600),
                "https://issuer.test",
            ),
            (
                gitlab_claims("acme/tools/app", "refs/heads/main", AUD, t, t + 300),
                "https://gitlab.com",
            ),
        ]
    }

    #[test]
    fn every_minted_token_verifies_against_the_jwks_for_both_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path());
        let set = set(&issuer);
        for alg in TestAlg::ALL {
            for (claims, iss) in all_claims() {
                let token = issuer.mint(alg, &claims);
                let h = header_of(&token);
                assert_eq!(
                    h,
                    json!({ "alg": alg.name(), "kid": issuer.kid(alg), "typ": "JWT" })
                );
                let got = verify(&set, &token, alg.algorithm(), iss).unwrap();
                assert_eq!(got, claims);
            }
        }
    }

    #[test]
    fn the_jwks_holds_the_public_members_with_kid_alg_and_use() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path());
        let jwks: Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let (rsa, ec) = (&keys[0], &keys[1]);
        let len = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap().len();
        assert_eq!(
            (&rsa["kty"], &rsa["alg"], &rsa["use"]),
            (&json!("RSA"), &json!("RS256"), &json!("sig"))
        );
        assert_eq!((len(&rsa["n"]), &rsa["e"]), (256, &json!("AQAB")));
        assert_eq!(
            (&ec["kty"], &ec["crv"], &ec["alg"], &ec["use"]),
            (
                &json!("EC"),
                &json!("P-256"),
                &json!("ES256"),
                &json!("sig")
            )
        );
        assert_eq!((len(&ec["x"]), len(&ec["y"])), (32, 32));
        let members: Vec<usize> = keys.iter().map(|k| k.as_object().unwrap().len()).collect();
        assert_eq!(members, [6, 7], "no private members: {jwks}");
        assert_ne!(issuer.kid(TestAlg::Rs256), issuer.kid(TestAlg::Es256));
        // The kid is the RFC 7638 thumbprint, as jsonwebtoken computes it.
        for jwk in set(&issuer).keys {
            let kid = jwk.common.key_id.clone().unwrap();
            assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), kid);
        }
    }

    #[test]
    fn key_files_are_0600_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _issuer = issuer(dir.path());
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.display());
            assert!(read_private(&f).starts_with("-----BEGIN PRIVATE KEY-----"));
        }
    }

    fn read_private(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rotation_adds_the_new_keys_and_drop_old_removes_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let mut issuer = issuer(dir.path());
        let old = issuer.kids();
        issuer.rotate();
        let set_during = set(&issuer);
        assert_eq!(issuer.kids().len(), 4);
        for kid in old.iter().chain(&issuer.kids()) {
            assert!(set_during.find(kid).is_some(), "{kid} missing after rotate");
        }
        let (claims, iss) = all_claims()[0].clone();
        for alg in TestAlg::ALL {
            assert!(
                !old.contains(&issuer.kid(alg).to_owned()),
                "rotate keeps the kid"
            );
            verify(
                &set_during,
                &issuer.mint(alg, &claims),
                alg.algorithm(),
                iss,
            )
            .unwrap();
            verify(
                &set_during,
                &issuer.mint_with_previous(alg, &claims),
                alg.algorithm(),
                iss,
            )
            .unwrap();
        }
        let stale = issuer.mint_with_previous(TestAlg::Rs256, &claims);
        issuer.drop_old();
        let set_after = set(&issuer);
        assert_eq!(set_after.keys.len(), 2);
        for kid in &old {
            assert!(
                set_after.find(kid).is_none(),
                "{kid} still there after drop_old"
            );
        }
        assert!(verify(&set_after, &stale, Algorithm::RS256, iss).is_err());
    }

    #[test]
    fn hostile_tokens_carry_the_headers_they_claim() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path());
        let set = set(&issuer);
        let (claims, iss) = all_claims()[0].clone();
        let rsa_kid = issuer.kid(TestAlg::Rs256);

        let none = issuer.mint_alg_none(&claims);
        assert!(none.ends_with('.'), "empty signature: {none}");
        assert_eq!(
            header_of(&none),
            json!({ "alg": "none", "kid": rsa_kid, "typ": "JWT" })
        );
        assert!(jsonwebtoken::decode_header(&none).is_err());

        for (form, secret) in [
            (PublicKeyForm::Pem, issuer.rsa.spki_pem().into_bytes()),
            (PublicKeyForm::Der, issuer.rsa.spki.clone()),
        ] {
            let hs = issuer.mint_hs256_with_public_key(&claims, form);
            assert_eq!(
                header_of(&hs),
                json!({ "alg": "HS256", "kid": rsa_kid, "typ": "JWT" })
            );
            // It is what it claims: an HMAC under the public key's bytes...
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&[AUD]);
            let key = DecodingKey::from_secret(&secret).unwrap();
            assert_eq!(decode::<Value>(&hs, &key, &v).unwrap().claims, claims);
            // ...and the RSA key in the JWKS does not verify it.
            assert!(verify(&set, &hs, Algorithm::RS256, iss).is_err());
        }
        // The PEM is OpenSSL's own text.
        let file = dir.path().join(format!("rs256-{rsa_kid}.pem"));
        let pem = openssl(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(file),
        );
        assert_eq!(String::from_utf8(pem).unwrap(), issuer.rsa.spki_pem());

        let unknown = issuer.mint_unknown_kid(&claims);
        let h = header_of(&unknown);
        assert_eq!((&h["alg"], &h["typ"]), (&json!("RS256"), &json!("JWT")));
        let kid = h["kid"].as_str().unwrap();
        assert!(set.find(kid).is_none(), "{kid} is in the JWKS");
        // Only the kid is wrong: the current RSA key verifies it.
        let key = DecodingKey::from_jwk(set.find(rsa_kid).unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[AUD]);
        decode::<Value>(&unknown, &key, &v).unwrap();

        for alg in TestAlg::ALL {
            let stranger = issuer.mint_with_key_not_in_jwks(alg, &claims);
            let h = header_of(&stranger);
            assert_eq!(
                h,
                json!({ "alg": alg.name(), "kid": issuer.kid(alg), "typ": "JWT" })
            );
            let err = verify(&set, &stranger, alg.algorithm(), iss).unwrap_err();
            assert_eq!(
                err.kind(),
                &jsonwebtoken::errors::ErrorKind::InvalidSignature
            );
        }
    }

    #[test]
    fn nginx_serves_the_jwks_as_json_and_the_rotated_one_after_publish() {
        let dir = tempfile::tempdir().unwrap();
        let mut issuer = issuer(dir.path());
        let server = issuer.serve();
        assert_eq!(
            server.url(),
            format!("http://127.0.0.1:{}/jwks.json", server.nginx.port)
        );
        let body = |r: &str| r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap();
        let first = http_get(server.nginx.port, JWKS_PATH);
        assert!(first.contains("Content-Type: application/json"), "{first}");
        assert_eq!(body(&first), issuer.jwks_json());
        issuer.rotate();
        issuer.publish(&server);
        let second = body(&http_get(server.nginx.port, JWKS_PATH));
        assert_eq!(second, issuer.jwks_json());
        assert!(issuer.kids().iter().all(|k| second.contains(k.as_str())));
    }
}
