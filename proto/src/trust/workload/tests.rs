//! Platform tokens signed here with fixed keys (testdata/workload: RSA-2048,
//! P-256 and Ed25519 written by openssl, and the JWKS of their public
//! halves), with claims shaped like the documented ones of GitHub Actions,
//! Kubernetes projected service-account tokens and GitLab CI.

use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;

const NOW: UnixTime = 1_800_000_000;
const AUD: &str = "ztssh.example.net";
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const K8S: &str = "https://kubernetes.default.svc.cluster.local";
const GITLAB: &str = "https://gitlab.example.com";

macro_rules! data {
    ($name:expr) => {
        include_str!(concat!("../../testdata/workload/", $name))
    };
}

fn der(pem: &str) -> Vec<u8> {
    pem_rfc7468::decode_vec(pem.as_bytes()).expect("pem").1
}

fn keys(json: &str) -> Option<KeysInForce> {
    Some(KeysInForce {
        set: Arc::new(KeySet::from_json(json.as_bytes()).expect("jwks")),
        fetched: NOW - 60,
        max_age_secs: Some(3_600),
    })
}

fn rule(principal: &str, claims: &[(&str, &str)]) -> Rule {
    Rule {
        principal: principal.into(),
        accounts: vec![format!("{principal}-acct")],
        claims: claims
            .iter()
            .map(|(p, g)| ((*p).to_owned(), (*g).to_owned()))
            .collect(),
    }
}

fn issuer(name: &str, iss: &str, alg: Alg, rules: Vec<Rule>) -> Issuer {
    Issuer {
        name: name.into(),
        issuer: iss.into(),
        audience: AUD.into(),
        algorithms: vec![alg],
        max_lifetime_secs: 3_600,
        skew_secs: 60,
        keys: keys(data!("jwks.json")),
        rules,
        tenant_claims: Vec::new(),
    }
}

fn github_rules() -> Vec<Rule> {
    vec![
        rule(
            "deploy",
            &[
                ("repository", "octo-org/octo-repo"),
                ("ref", "refs/heads/main"),
            ],
        ),
        rule(
            "build",
            &[
                ("repository_owner", "octo-org"),
                (
                    "job_workflow_ref",
                    "octo-org/octo-automation/.github/workflows/*@refs/heads/main",
                ),
            ],
        ),
    ]
}

fn issuers() -> Issuers {
    Issuers::new(vec![
        issuer("github", GITHUB, Alg::Rs256, github_rules()),
        issuer(
            "k8s",
            K8S,
            Alg::Es256,
            vec![rule(
                "deploy",
                &[
                    ("kubernetes.io/namespace", "prod"),
                    ("kubernetes.io/serviceaccount/name", "deployer"),
                ],
            )],
        ),
        issuer(
            "gitlab",
            GITLAB,
            Alg::EdDsa,
            vec![rule(
                "deploy",
                &[("project_path", "mygroup/myproject"), ("ref", "main")],
            )],
        ),
    ])
    .expect("issuers")
}

/// A GitHub Actions token's claims, as GitHub documents them.
fn github_claims() -> Value {
    json!({
        "jti": "example-id",
        "sub": "repo:octo-org/octo-repo:environment:prod",
        "environment": "prod",
        "aud": AUD,
        "ref": "refs/heads/main",
        "sha": "example-sha",
        "repository": "octo-org/octo-repo",
        "repository_owner": "octo-org",
        "actor_id": "12",
        "repository_visibility": "private",
        "repository_id": "74",
        "repository_owner_id": "65",
        "run_id": "example-run-id",
        "run_number": "10",
        "run_attempt": "2",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "example-workflow",
        "head_ref": "",
        "base_ref": "",
        "event_name": "workflow_dispatch",
        "ref_type": "branch",
        "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
        "iss": GITHUB,
        "nbf": NOW - 660,
        "exp": NOW + 240,
        "iat": NOW - 60
    })
}

/// A Kubernetes projected service-account token's claims.
fn k8s_claims() -> Value {
    json!({
        "aud": [AUD],
        "exp": NOW + 3_500,
        "iat": NOW - 100,
        "iss": K8S,
        "jti": "0c4c1d5e-0f3b-4d0e-9e2c-6d7c1a2b3c4d",
        "kubernetes.io": {
            "namespace": "prod",
            "node": {"name": "node-1", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"},
            "pod": {"name": "deployer-7d9f8b6c5-x2x4z", "uid": "a2c7f4e1-9a3b-4c7d-8e2f-1b0c9d8e7f6a"},
            "serviceaccount": {"name": "deployer", "uid": "a709ef71-30e2-489a-bd19-ade97031b9db"}
        },
        "nbf": NOW - 100,
        "sub": "system:serviceaccount:prod:deployer"
    })
}

/// A GitLab CI `id_tokens` token's claims.
fn gitlab_claims() -> Value {
    json!({
        "namespace_id": "72",
        "namespace_path": "mygroup",
        "project_id": "20",
        "project_path": "mygroup/myproject",
        "user_id": "1",
        "user_login": "sample-user",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "runner_id": 1,
        "runner_environment": "self-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
        "iss": GITLAB,
        "iat": NOW - 10,
        "nbf": NOW - 15,
        "exp": NOW + 290,
        "sub": "project_path:mygroup/myproject:ref_type:branch:ref:main",
        "aud": AUD
    })
}

fn encoding_key(alg: Alg) -> EncodingKey {
    match alg {
        Alg::Rs256 => EncodingKey::from_rsa_der(&der(data!("rsa2048.pem"))),
        Alg::Es256 => EncodingKey::from_ec_der(&der(data!("p256.pem"))),
        Alg::EdDsa => EncodingKey::from_ed_der(&der(data!("ed25519.pem"))),
    }
}

fn sign_with(alg: Alg, key: &EncodingKey, kid: &str, claims: &Value) -> Vec<u8> {
    let mut header = Header::new(alg.jwt());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key)
        .expect("sign")
        .into_bytes()
}

fn sign(alg: Alg, claims: &Value) -> Vec<u8> {
    let kid = match alg {
        Alg::Rs256 => "rsa-1",
        Alg::Es256 => "ec-1",
        Alg::EdDsa => "ed-1",
    };
    sign_with(alg, &encoding_key(alg), kid, claims)
}

fn github(claims: &Value) -> Vec<u8> {
    sign(Alg::Rs256, claims)
}

fn with(mut claims: Value, path: &str, value: Value) -> Value {
    claims[path] = value;
    claims
}

fn without(mut claims: Value, path: &str) -> Value {
    claims.as_object_mut().expect("object").remove(path);
    claims
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// A token of `header` and `claims` with the HMAC-SHA256 of `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> Vec<u8> {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_secret(secret).expect("secret");
    let sig = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).expect("hmac");
    format!("{signed}.{sig}").into_bytes()
}

fn refused(issuers: &Issuers, token: &[u8], principal: &str) -> Refused {
    verify(issuers, token, principal, NOW).expect_err("refused")
}

fn kind(issuers: &Issuers, token: &[u8], principal: &str) -> RefusalKind {
    refused(issuers, token, principal).kind
}

#[test]
fn a_github_actions_token_verifies_with_rs256() {
    let token = github(&github_claims());
    let v = verify(&issuers(), &token, "deploy", NOW).expect("verifies");
    assert_eq!(v.issuer(), "github");
    assert_eq!(v.iss(), GITHUB);
    assert_eq!(v.sub(), "repo:octo-org/octo-repo:environment:prod");
    assert_eq!(v.principal(), "deploy");
    assert_eq!(v.accounts(), ["deploy-acct".to_owned()]);
    assert_eq!(v.kid(), "rsa-1");
    assert_eq!(
        v.claims(),
        [
            ("repository".to_owned(), "octo-org/octo-repo".to_owned()),
            ("ref".to_owned(), "refs/heads/main".to_owned())
        ]
    );
    assert_eq!(
        (v.iat(), v.exp(), v.expires()),
        (NOW - 60, NOW + 240, NOW + 300)
    );
    assert_eq!(v.id(), token_id(GITHUB, Some("example-id"), ""));
    assert!(v.check(&issuers(), NOW).is_ok());
    // The second rule, for another principal, by its workflow glob.
    let v = verify(&issuers(), &token, "build", NOW).expect("build");
    assert_eq!(v.accounts(), ["build-acct".to_owned()]);
}

#[test]
fn a_kubernetes_token_verifies_with_es256_on_nested_claims() {
    let token = sign(Alg::Es256, &k8s_claims());
    let v = verify(&issuers(), &token, "deploy", NOW).expect("verifies");
    assert_eq!(v.issuer(), "k8s");
    assert_eq!(v.sub(), "system:serviceaccount:prod:deployer");
    assert_eq!(
        v.claims(),
        [
            ("kubernetes.io/namespace".to_owned(), "prod".to_owned()),
            (
                "kubernetes.io/serviceaccount/name".to_owned(),
                "deployer".to_owned()
            )
        ]
    );
    // A namespace that is not a string, or a path through a string.
    let mut claims = k8s_claims();
    claims["kubernetes.io"]["namespace"] = json!(["prod"]);
    let e = refused(&issuers(), &sign(Alg::Es256, &claims), "deploy");
    assert_eq!(e.kind, RefusalKind::NoRule);
    assert!(
        e.reason.contains("kubernetes.io/namespace is not a string"),
        "{e}"
    );
    let mut claims = k8s_claims();
    claims["kubernetes.io"]["serviceaccount"] = json!("deployer");
    let e = refused(&issuers(), &sign(Alg::Es256, &claims), "deploy");
    assert!(e.reason.contains("serviceaccount/name is absent"), "{e}");
}

#[test]
fn a_gitlab_token_verifies_with_eddsa() {
    let v = verify(
        &issuers(),
        &sign(Alg::EdDsa, &gitlab_claims()),
        "deploy",
        NOW,
    )
    .expect("verifies");
    assert_eq!(v.issuer(), "gitlab");
    assert_eq!(
        v.sub(),
        "project_path:mygroup/myproject:ref_type:branch:ref:main"
    );
}

#[test]
fn the_library_reads_no_clock_only_now() {
    // Valid in 1970 only: verify judges by `now` alone.
    let mut claims = github_claims();
    claims["iat"] = json!(1_000);
    claims["nbf"] = json!(1_000);
    claims["exp"] = json!(1_300);
    let token = github(&claims);
    assert!(verify(&issuers(), &token, "deploy", 1_100).is_ok());
    assert_eq!(kind(&issuers(), &token, "deploy"), RefusalKind::Expired);
}

#[test]
fn malformed_tokens_are_refused_before_any_key() {
    let i = issuers();
    let good = github(&github_claims());
    let text = String::from_utf8(good.clone()).expect("text");
    let mut big = good.clone();
    big.resize(MAX_TOKEN + 1, b'A');
    let (signed, _) = text.rsplit_once('.').expect("dot");
    let no_kid = hs256(&json!({"alg": "RS256"}), &github_claims(), b"k");
    for token in [
        big,
        b"".to_vec(),
        b"a.b".to_vec(),
        format!("{text}.x").into_bytes(),
        format!("{signed}.").into_bytes(),
        format!("{signed}.a+b").into_bytes(),
        b"!!.a.b".to_vec(),
        no_kid,
        vec![0xff; 10],
    ] {
        let e = refused(&i, &token, "deploy");
        assert_eq!(e.kind, RefusalKind::Malformed, "{e}");
        assert!(!e.reason.contains(&text), "the token is never quoted");
    }
}

#[test]
fn claims_of_the_wrong_type_are_malformed_after_the_signature() {
    let i = issuers();
    for claims in [
        with(github_claims(), "exp", json!("1800000240")),
        with(github_claims(), "exp", json!(1_800_000_240.5)),
        with(github_claims(), "iat", json!(-1)),
        with(github_claims(), "nbf", json!(null)),
        without(github_claims(), "exp"),
        without(github_claims(), "iat"),
        without(github_claims(), "sub"),
        without(github_claims(), "aud"),
        with(github_claims(), "aud", json!([])),
        with(github_claims(), "aud", json!([AUD, 7])),
        with(github_claims(), "jti", json!(7)),
        with(github_claims(), "sub", json!({"a": 1})),
    ] {
        let e = refused(&i, &github(&claims), "deploy");
        assert_eq!(e.kind, RefusalKind::Malformed, "{claims}: {e}");
    }
    // Signed claims that are not an object.
    let key = encoding_key(Alg::Rs256);
    let token = sign_with(Alg::Rs256, &key, "rsa-1", &json!([1, 2]));
    assert_eq!(kind(&i, &token, "deploy"), RefusalKind::Malformed);
}

#[test]
fn alg_none_hmac_and_unknown_algorithms_are_refused() {
    let i = issuers();
    let claims = github_claims();
    let body = b64(claims.to_string().as_bytes());
    for alg in [
        "none", "None", "HS256", "HS512", "RS384", "PS256", "ES384", "",
    ] {
        let header = b64(json!({"alg": alg, "kid": "rsa-1"}).to_string().as_bytes());
        for token in [format!("{header}.{body}."), format!("{header}.{body}.AAAA")] {
            let e = refused(&i, token.as_bytes(), "deploy");
            assert_eq!(e.kind, RefusalKind::BadAlgorithm, "{alg}: {e}");
        }
    }
    let e = refused(
        &i,
        format!("{}.{body}.", b64(br#"{"kid":"rsa-1"}"#)).as_bytes(),
        "deploy",
    );
    assert_eq!(e.kind, RefusalKind::BadAlgorithm, "no alg: {e}");
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the verifier's own public key as an HMAC
    // secret, in PEM and in DER.
    let i = issuers();
    let pem = data!("rsa2048.pub.pem");
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    for secret in [pem.as_bytes().to_vec(), der(pem)] {
        let token = hs256(&header, &github_claims(), &secret);
        assert_eq!(kind(&i, &token, "deploy"), RefusalKind::BadAlgorithm);
    }
}

#[test]
fn an_algorithm_must_fit_its_key_and_its_issuer() {
    let i = issuers();
    // ES256 under the RSA key's kid: k8s allows ES256, its rsa-1 is RSA.
    let token = sign_with(
        Alg::Es256,
        &encoding_key(Alg::Es256),
        "rsa-1",
        &github_claims(),
    );
    let e = refused(&i, &token, "deploy");
    assert_eq!(e.kind, RefusalKind::BadAlgorithm, "{e}");
    assert!(e.reason.contains("is an RSA key"), "{e}");
    // No issuer allows EdDSA.
    let only_github =
        Issuers::new(vec![issuer("github", GITHUB, Alg::Rs256, github_rules())]).expect("one");
    let e = refused(&only_github, &sign(Alg::EdDsa, &gitlab_claims()), "deploy");
    assert_eq!(e.kind, RefusalKind::BadAlgorithm, "{e}");
}

#[test]
fn an_unknown_kid_is_refused() {
    let key = encoding_key(Alg::Rs256);
    let e = refused(
        &issuers(),
        &sign_with(Alg::Rs256, &key, "rsa-9", &github_claims()),
        "deploy",
    );
    assert_eq!(e.kind, RefusalKind::UnknownKey, "{e}");
    assert!(
        e.reason.contains("rsa-9") && e.reason.contains("github"),
        "{e}"
    );
}

#[test]
fn a_key_removed_from_the_key_set_stops_its_tokens() {
    let mut i = issuers();
    let token = github(&github_claims());
    let v = verify(&i, &token, "deploy", NOW).expect("before");
    // The platform withdrew rsa-1 (the rotated set has rsa-2 only).
    assert!(i.set_keys("github", keys(data!("jwks-rotated.json")).expect("keys")));
    assert_eq!(kind(&i, &token, "deploy"), RefusalKind::UnknownKey);
    let e = v.check(&i, NOW).expect_err("withdrawn");
    assert_eq!(e.kind, EndKind::WorkloadTokenRefused);
    assert!(e.reason.contains("withdrawn"), "{e}");
}

#[test]
fn a_rotated_key_set_takes_the_new_key() {
    let mut i = issuers();
    let next = EncodingKey::from_rsa_der(&der(data!("rsa2048-next.pem")));
    let token = sign_with(Alg::Rs256, &next, "rsa-2", &github_claims());
    assert_eq!(kind(&i, &token, "deploy"), RefusalKind::UnknownKey);
    i.set_keys("github", keys(data!("jwks-rotated.json")).expect("keys"));
    assert!(verify(&i, &token, "deploy", NOW).is_ok());
    // The new key under the old kid does not verify.
    let i = issuers();
    let forged = sign_with(Alg::Rs256, &next, "rsa-1", &github_claims());
    let e = refused(&i, &forged, "deploy");
    assert_eq!(e.kind, RefusalKind::BadSignature, "{e}");
    assert!(e.reason.contains("github"), "{e}");
}

#[test]
fn a_tampered_token_is_refused() {
    let i = issuers();
    for alg in Alg::ALL {
        let claims = match alg {
            Alg::Rs256 => github_claims(),
            Alg::Es256 => k8s_claims(),
            Alg::EdDsa => gitlab_claims(),
        };
        let token = String::from_utf8(sign(alg, &claims)).expect("text");
        let (signed, sig) = token.rsplit_once('.').expect("dot");
        // Another signature byte.
        let mut raw = Base64UrlUnpadded::decode_vec(sig).expect("sig");
        raw[5] ^= 1;
        let flipped = format!("{signed}.{}", b64(&raw));
        assert_eq!(
            kind(&i, flipped.as_bytes(), "deploy"),
            RefusalKind::BadSignature
        );
        // Other claims under the same signature.
        let (header, _) = signed.split_once('.').expect("dot");
        let other = with(claims, "sub", json!("someone else"));
        let swapped = format!("{header}.{}.{sig}", b64(other.to_string().as_bytes()));
        assert_eq!(
            kind(&i, swapped.as_bytes(), "deploy"),
            RefusalKind::BadSignature
        );
    }
}

#[test]
fn missing_or_stale_keys_leave_the_token_unchecked() {
    let mut list = vec![issuer("github", GITHUB, Alg::Rs256, github_rules())];
    list[0].keys = None;
    let i = Issuers::new(list.clone()).expect("issuers");
    let token = github(&github_claims());
    let e = refused(&i, &token, "deploy");
    assert_eq!(e.kind, RefusalKind::KeysUnavailable, "{e}");
    assert!(e.reason.contains("github has no key set"), "{e}");
    assert_eq!(e.ended().kind, EndKind::WorkloadCheckUnavailable);
    // Fetched two hours ago, good for one.
    let mut stale = keys(data!("jwks.json")).expect("keys");
    stale.fetched = NOW - 7_200;
    list[0].keys = Some(stale.clone());
    let e = refused(
        &Issuers::new(list.clone()).expect("issuers"),
        &token,
        "deploy",
    );
    assert_eq!(e.kind, RefusalKind::KeysUnavailable, "{e}");
    assert!(
        e.reason.contains("has not been refreshed since")
            && e.reason.contains("(2h ago)")
            && e.reason.contains("JWKS URL"),
        "{e}"
    );
    // A pinned file is never stale.
    stale.max_age_secs = None;
    list[0].keys = Some(stale);
    assert!(verify(&Issuers::new(list).expect("issuers"), &token, "deploy", NOW).is_ok());
}

#[test]
fn a_token_naming_another_issuer_is_refused() {
    // Signed by github's key, claiming to be the cluster.
    let token = github(&with(github_claims(), "iss", json!(K8S)));
    let e = refused(&issuers(), &token, "deploy");
    assert_eq!(e.kind, RefusalKind::WrongIssuer, "{e}");
    assert!(e.reason.contains("issuer github"), "{e}");
    let token = github(&without(github_claims(), "iss"));
    assert_eq!(kind(&issuers(), &token, "deploy"), RefusalKind::WrongIssuer);
}

#[test]
fn two_issuers_sharing_a_key_each_get_their_own_tokens() {
    // GitHub's enterprise issuer signs with the same keys as the default one.
    let enterprise = format!("{GITHUB}/octo-org");
    let i = Issuers::new(vec![
        issuer("github", GITHUB, Alg::Rs256, github_rules()),
        issuer("github-ent", &enterprise, Alg::Rs256, github_rules()),
    ])
    .expect("issuers");
    let token = github(&with(github_claims(), "iss", json!(enterprise)));
    let v = verify(&i, &token, "deploy", NOW).expect("verifies");
    assert_eq!(v.issuer(), "github-ent");
}

#[test]
fn a_token_for_another_audience_is_refused() {
    for aud in [
        json!("sts.amazonaws.com"),
        json!(["sts.amazonaws.com", "x"]),
    ] {
        let token = github(&with(github_claims(), "aud", aud));
        let e = refused(&issuers(), &token, "deploy");
        assert_eq!(e.kind, RefusalKind::WrongAudience, "{e}");
        assert!(e.reason.contains(AUD) && e.reason.contains("github"), "{e}");
    }
    // A list that names ours.
    let token = github(&with(github_claims(), "aud", json!(["other", AUD])));
    assert!(verify(&issuers(), &token, "deploy", NOW).is_ok());
}

#[test]
fn times_are_judged_against_now_with_skew() {
    let i = issuers();
    let token = github(&github_claims()); // exp NOW + 240, skew 60
    assert!(verify(&i, &token, "deploy", NOW + 299).is_ok());
    let e = verify(&i, &token, "deploy", NOW + 300).expect_err("expired");
    assert_eq!(e.kind, RefusalKind::Expired);
    assert!(
        e.reason.contains("expired") && e.reason.contains("ago"),
        "{e}"
    );
    // Issued in the future, or not valid before then.
    let claims = with(github_claims(), "iat", json!(NOW + 61));
    assert_eq!(
        kind(&i, &github(&claims), "deploy"),
        RefusalKind::NotYetValid
    );
    let claims = with(github_claims(), "iat", json!(NOW + 60));
    assert!(verify(&i, &github(&claims), "deploy", NOW).is_ok());
    let claims = with(github_claims(), "nbf", json!(NOW + 120));
    assert_eq!(
        kind(&i, &github(&claims), "deploy"),
        RefusalKind::NotYetValid
    );
    // Valid for longer than an hour from the later of iat and nbf.
    let claims = with(github_claims(), "exp", json!(NOW - 60 + 3_601));
    let e = refused(&i, &github(&claims), "deploy");
    assert_eq!(e.kind, RefusalKind::LifetimeTooLong, "{e}");
    let claims = with(github_claims(), "exp", json!(NOW - 60 + 3_600));
    assert!(verify(&i, &github(&claims), "deploy", NOW).is_ok());
}

#[test]
fn rules_pick_the_principal_and_say_which_claim_failed() {
    let i = issuers();
    let e = refused(&i, &github(&github_claims()), "root");
    assert_eq!(e.kind, RefusalKind::NoRule);
    assert!(
        e.reason
            .contains("issuer github has no rule for principal root"),
        "{e}"
    );
    let feature = with(github_claims(), "ref", json!("refs/heads/feature"));
    let e = refused(&i, &github(&feature), "deploy");
    assert_eq!(e.kind, RefusalKind::NoRule);
    assert!(
        e.reason.contains(
            "claim ref is refs/heads/feature, which no rule for principal deploy on this server \
             allows"
        ),
        "{e}"
    );
    // What the rule wants is never told to the client.
    assert!(!e.reason.contains("refs/heads/main"), "{e}");
    let e = refused(
        &i,
        &github(&without(github_claims(), "repository")),
        "deploy",
    );
    assert!(e.reason.contains("claim repository is absent"), "{e}");
    // A control character is shown escaped.
    let odd = with(github_claims(), "repository", json!("octo\u{1b}[31m"));
    let e = refused(&i, &github(&odd), "deploy");
    assert!(e.reason.contains("\"octo\\u{1b}[31m\""), "{e}");
}

#[test]
fn the_first_matching_rule_wins() {
    let mut list = vec![issuer("github", GITHUB, Alg::Rs256, github_rules())];
    list[0].rules = vec![
        rule("deploy", &[("repository", "octo-org/other")]),
        rule(
            "deploy",
            &[
                ("repository", "octo-org/*"),
                ("repository_owner", "octo-org"),
                ("ref_type", "branch"),
            ],
        ),
        rule("deploy", &[("repository", "octo-org/octo-repo")]),
    ];
    let i = Issuers::new(list).expect("issuers");
    let v = verify(&i, &github(&github_claims()), "deploy", NOW).expect("verifies");
    assert_eq!(v.rule(), &i.list()[0].rules[1]);
    // The refusal names the first rule's first miss.
    let other = with(github_claims(), "repository", json!("evil/repo"));
    let e = refused(&i, &github(&other), "deploy");
    assert!(e.reason.contains("claim repository is evil/repo"), "{e}");
}

#[test]
fn globs_match_whole_values() {
    for (glob, text, ok) in [
        ("main", "main", true),
        ("main", "main2", false),
        ("main", "xmain", false),
        ("refs/heads/*", "refs/heads/release/1.2", true),
        ("refs/heads/*", "refs/tags/v1", false),
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYYcZ", false),
        (
            "*.yml@refs/heads/main",
            "o/r/.github/workflows/x.yml@refs/heads/main",
            true,
        ),
        ("*a", "aaaa", true),
        ("a**", "a", true),
        ("?", "x", false),
        ("é*", "éa", true),
    ] {
        assert_eq!(glob_match(glob, text), ok, "{glob} {text}");
    }
}

#[test]
fn a_replay_cache_refuses_another_key_and_forgets_expired_tokens() {
    const JOB: KeyId = [1; 32];
    const THIEF: KeyId = [9; 32];
    const OWNER: [u8; 32] = [5; 32];
    let mut cache = ReplayCache::new(2);
    let v = verify(&issuers(), &github(&github_claims()), "deploy", NOW).expect("v");
    assert!(
        cache
            .first_use(v.id(), JOB, OWNER, v.expires(), NOW)
            .is_ok()
    );
    // The key that first presented it may again (a pod's second
    // connection); any other key is a replay.
    assert!(
        cache
            .first_use(v.id(), JOB, OWNER, v.expires(), NOW + 1)
            .is_ok()
    );
    let e = cache
        .first_use(v.id(), THIEF, OWNER, v.expires(), NOW + 1)
        .expect_err("replay");
    assert_eq!(e.kind, RefusalKind::Replayed);
    assert!(e.reason.contains("another key"), "{e}");
    assert_eq!(e.ended().kind, EndKind::WorkloadTokenRefused);
    // Another token, then a third: full, refused, none forgotten.
    assert!(cache.first_use([2; 32], JOB, OWNER, NOW + 100, NOW).is_ok());
    let e = cache
        .first_use([3; 32], JOB, OWNER, NOW + 100, NOW)
        .expect_err("full");
    assert_eq!(e.kind, RefusalKind::ReplayCacheFull);
    assert_eq!(e.ended().kind, EndKind::WorkloadCheckUnavailable);
    assert_eq!(cache.len(), 2);
    // Once [2; 32] expired it is pruned, and room is made.
    assert!(
        cache
            .first_use([3; 32], JOB, OWNER, NOW + 500, NOW + 100)
            .is_ok()
    );
    assert_eq!(cache.len(), 2);
    assert!(
        cache
            .first_use([2; 32], THIEF, OWNER, NOW + 600, NOW + 100)
            .is_err()
    );
    // Past the first token's expiry it is forgotten (verify refuses it).
    assert!(
        cache
            .first_use(v.id(), THIEF, OWNER, v.expires(), v.expires())
            .is_ok()
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_replay_record_reads_back_what_it_wrote() {
    const OWNER: [u8; 32] = [5; 32];
    let mut cache = ReplayCache::new(8);
    assert!(
        cache
            .first_use([1; 32], [2; 32], OWNER, NOW + 100, NOW)
            .is_ok()
    );
    assert!(
        cache
            .first_use([3; 32], [4; 32], OWNER, NOW + 10, NOW)
            .is_ok()
    );
    let line = cache.line(&[1; 32]).expect("line");
    assert_eq!(line.matches(' ').count(), 3);
    let text = format!("{}garbage\n{}", cache.lines(), line);
    let mut back = ReplayCache::new(8);
    assert_eq!(back.restore(&text, NOW + 20), 1, "one line does not read");
    // The live token came back with its key; the expired one did not.
    assert!(back.holds(&[1; 32]) && !back.holds(&[3; 32]));
    assert!(
        back.first_use([1; 32], [2; 32], OWNER, NOW + 100, NOW + 20)
            .is_ok()
    );
    assert!(
        back.first_use([1; 32], [9; 32], OWNER, NOW + 100, NOW + 20)
            .is_err()
    );
    assert_eq!(back.len(), 1);
}

#[test]
fn one_workload_cannot_fill_the_record() {
    let mut cache = ReplayCache::new(MAX_LIVE_PER_WORKLOAD + 10);
    let rules = github_rules();
    let (job, other) = (owner_id(GITHUB, &rules[0]), owner_id(GITHUB, &rules[1]));
    for n in 0..MAX_LIVE_PER_WORKLOAD as u32 {
        let mut id = [0; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        assert!(cache.first_use(id, [1; 32], job, NOW + 300, NOW).is_ok());
    }
    let e = cache
        .first_use([0xee; 32], [1; 32], job, NOW + 300, NOW)
        .expect_err("one workload's share");
    assert_eq!(e.kind, RefusalKind::ReplayCacheFull);
    assert!(e.reason.contains("this workload already has"), "{e}");
    // Another workload is unaffected; the first gets room as its expire.
    assert!(
        cache
            .first_use([0xef; 32], [1; 32], other, NOW + 300, NOW)
            .is_ok()
    );
    assert!(
        cache
            .first_use([0xee; 32], [1; 32], job, NOW + 900, NOW + 300)
            .is_ok()
    );
    // A record line read back keeps the count.
    let mut back = ReplayCache::new(MAX_LIVE_PER_WORKLOAD + 10);
    back.restore(&cache.lines(), NOW + 300);
    assert!(
        back.first_use([0xed; 32], [1; 32], job, NOW + 900, NOW + 300)
            .is_ok()
    );
    // A tampered line with a non-hex digit does not read.
    let line = cache.line(&[0xee; 32]).expect("line").replacen('e', "+", 1);
    assert_eq!(ReplayCache::new(4).restore(&line, NOW + 300), 1);
}

#[test]
fn the_id_is_the_jti_or_else_the_signed_part() {
    let i = issuers();
    let a = verify(&i, &github(&github_claims()), "deploy", NOW).expect("a");
    let later = with(github_claims(), "run_attempt", json!("3"));
    let b = verify(&i, &github(&later), "deploy", NOW).expect("b");
    assert_eq!(a.id(), b.id(), "the same jti");
    let c = verify(&i, &github(&without(github_claims(), "jti")), "deploy", NOW).expect("c");
    assert_ne!(a.id(), c.id());
    let token = String::from_utf8(github(&without(github_claims(), "jti"))).expect("text");
    let (signed, _) = token.rsplit_once('.').expect("dot");
    assert_eq!(c.id(), token_id(GITHUB, None, signed));
}

#[test]
fn a_renewal_continues_only_the_same_workload() {
    let i = issuers();
    let first = verify(&i, &github(&github_claims()), "deploy", NOW).expect("first");
    let newer = with(github_claims(), "iat", json!(NOW));
    let next = verify(&i, &github(&newer), "deploy", NOW).expect("next");
    assert!(first.continues(&next).is_ok());
    assert!(first.continues(&first).is_ok());
    // Older than the token in force.
    let e = next.continues(&first).expect_err("older");
    assert_eq!(e.kind, RefusalKind::Replayed);
    // Another sub, principal, rule or issuer.
    let other_sub = with(newer.clone(), "sub", json!("repo:octo-org/octo-repo:ref:x"));
    let k8s = verify(&i, &sign(Alg::Es256, &k8s_claims()), "deploy", NOW).expect("k8s");
    let build = verify(&i, &github(&newer), "build", NOW).expect("build");
    for (other, what) in [
        (
            verify(&i, &github(&other_sub), "deploy", NOW).expect("sub"),
            "sub",
        ),
        (build, "principal build"),
        (k8s, "issuer k8s"),
    ] {
        let e = first.continues(&other).expect_err(what);
        assert_eq!(e.kind, RefusalKind::NotContinuation, "{what}");
        assert!(e.reason.contains(what), "{e}");
    }
    let mut list = vec![issuer("github", GITHUB, Alg::Rs256, github_rules())];
    list[0].rules[0].accounts = vec!["deploy-acct".into(), "root".into()];
    let wider = Issuers::new(list).expect("issuers");
    let widened = verify(&wider, &github(&newer), "deploy", NOW).expect("widened");
    let e = first.continues(&widened).expect_err("rule");
    assert_eq!(e.kind, RefusalKind::NotContinuation);
    assert!(e.reason.contains("another rule"), "{e}");
}

#[test]
fn check_follows_the_issuers_in_force() {
    let v = verify(&issuers(), &github(&github_claims()), "deploy", NOW).expect("v");
    assert!(v.check(&issuers(), NOW).is_ok());
    // The rule now wants another ref.
    let mut list = issuers().list().to_vec();
    list[0].rules[0] = rule(
        "deploy",
        &[
            ("repository", "octo-org/octo-repo"),
            ("ref", "refs/heads/release"),
        ],
    );
    let e = v
        .check(&Issuers::new(list.clone()).expect("issuers"), NOW)
        .expect_err("rules changed");
    assert_eq!(e.kind, EndKind::WorkloadTokenRefused);
    assert!(e.reason.contains("claim ref is refs/heads/main"), "{e}");
    // A rule with other accounts still vouches: check asks only whether
    // some rule for the principal matches.
    list[0].rules[0] = rule(
        "deploy",
        &[
            ("repository", "octo-org/*"),
            ("repository_id", "74"),
            ("actor", "octocat"),
        ],
    );
    assert!(
        v.check(&Issuers::new(list.clone()).expect("issuers"), NOW)
            .is_ok()
    );
    // Another audience.
    list[0].audience = "other".into();
    let e = v
        .check(&Issuers::new(list.clone()).expect("issuers"), NOW)
        .expect_err("audience");
    assert!(e.reason.contains("audience other"), "{e}");
    // The issuer removed.
    list.remove(0);
    let e = v
        .check(&Issuers::new(list).expect("issuers"), NOW)
        .expect_err("gone");
    assert!(e.reason.contains("no longer configured"), "{e}");
    // Expired.
    let e = v.check(&issuers(), NOW + 300).expect_err("expired");
    assert_eq!(e.kind, EndKind::WorkloadTokenExpired);
    // Stale keys do not end a live session.
    let mut stale = issuers();
    let mut keys = keys(data!("jwks-rotated.json")).expect("keys");
    keys.fetched = NOW - 7_200;
    stale.set_keys("github", keys);
    assert!(v.check(&stale, NOW).is_ok());
}

#[test]
fn key_sets_skip_what_they_cannot_use() {
    let set = KeySet::from_json(data!("jwks.json").as_bytes()).expect("jwks");
    assert_eq!(set.kids(), ["rsa-1", "ec-1", "ed-1"]);
    assert_eq!(set.skipped(), 0);
    let base: Value = serde_json::from_str(data!("jwks.json")).expect("json");
    let mut keys = base["keys"].as_array().expect("keys").clone();
    let rsa = keys[0].clone();
    let ec = keys[1].clone();
    let mut no_kid = rsa.clone();
    no_kid.as_object_mut().expect("o").remove("kid");
    let mut enc = rsa.clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc-1");
    let mut p384 = ec.clone();
    p384["crv"] = json!("P-384");
    let mut rs512 = rsa.clone();
    rs512["alg"] = json!("RS512");
    let mut small = rsa.clone();
    small["n"] = json!(b64(&[0xc5; 128]));
    keys.extend([
        no_kid,
        enc,
        p384,
        rs512,
        small,
        json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
        json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[9; 32])}),
        json!("not a key"),
    ]);
    let set = KeySet::from_json(json!({ "keys": keys }).to_string().as_bytes()).expect("set");
    assert_eq!(set.kids(), ["rsa-1", "ec-1", "ed-1"]);
    assert_eq!(set.skipped(), 8, "{:?}", set.skipped_why());
    assert!(format!("{set:?}").contains("rsa-1"));
}

#[test]
fn broken_or_empty_key_sets_are_errors() {
    let base: Value = serde_json::from_str(data!("jwks.json")).expect("json");
    let mut bad_ec = base["keys"][1].clone();
    bad_ec["x"] = json!(b64(&[1; 32]));
    let mut bad_ed = base["keys"][2].clone();
    bad_ed["x"] = json!(b64(&[1; 31]));
    let mut bad_n = base["keys"][0].clone();
    bad_n["n"] = json!("not base64!");
    let mut even_e = base["keys"][0].clone();
    even_e["e"] = json!("AAE");
    let many: Vec<Value> = (0..=MAX_KEYS)
        .map(|n| {
            let mut k = base["keys"][2].clone();
            k["kid"] = json!(format!("ed-{n}"));
            k
        })
        .collect();
    for doc in [
        json!({"keys": [bad_ec]}),
        json!({"keys": [bad_ed]}),
        json!({"keys": [bad_n]}),
        json!({"keys": [even_e]}),
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}),
        json!({"keys": many}),
        json!({"key": []}),
        json!([1]),
    ] {
        assert!(
            KeySet::from_json(doc.to_string().as_bytes()).is_err(),
            "{doc}"
        );
    }
    assert!(KeySet::from_json(b"{").is_err());
    let mut big = br#"{"keys": []}"#.to_vec();
    big.resize(MAX_JWKS + 1, b' ');
    let e = KeySet::from_json(&big).expect_err("big");
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn the_configuration_is_checked() {
    let good = || issuer("github", GITHUB, Alg::Rs256, github_rules());
    type Change = Box<dyn Fn(&mut Vec<Issuer>)>;
    let cases: Vec<(&str, Change)> = vec![
        ("no issuer", Box::new(|l| l.clear())),
        (
            "same name",
            Box::new(move |l| {
                let mut other = l[0].clone();
                other.issuer = K8S.into();
                l.push(other);
            }),
        ),
        (
            "same iss",
            Box::new(move |l| {
                let mut other = l[0].clone();
                other.name = "gh2".into();
                l.push(other);
            }),
        ),
        ("empty name", Box::new(|l| l[0].name.clear())),
        (
            "name with space",
            Box::new(|l| l[0].name = "git hub".into()),
        ),
        ("no audience", Box::new(|l| l[0].audience.clear())),
        ("no iss", Box::new(|l| l[0].issuer.clear())),
        ("no algorithm", Box::new(|l| l[0].algorithms.clear())),
        ("no lifetime", Box::new(|l| l[0].max_lifetime_secs = 0)),
        ("skew", Box::new(|l| l[0].skew_secs = MAX_SKEW + 1)),
        ("no rule", Box::new(|l| l[0].rules.clear())),
        (
            "rule without claims",
            Box::new(|l| l[0].rules[0].claims.clear()),
        ),
        (
            "rule without principal",
            Box::new(|l| l[0].rules[0].principal.clear()),
        ),
        (
            "bad path",
            Box::new(|l| l[0].rules[0].claims[0].0 = "a//b".into()),
        ),
        (
            "only globs",
            Box::new(|l| {
                l[0].rules[0] = rule("deploy", &[("sub", "repo:*"), ("ref", "*")]);
            }),
        ),
        (
            "only an empty pin",
            Box::new(|l| {
                l[0].rules[0] = rule("deploy", &[("sub", "repo:*"), ("head_ref", "")]);
            }),
        ),
    ];
    for (what, change) in cases {
        let mut list = vec![good()];
        change(&mut list);
        assert!(Issuers::new(list).is_err(), "{what}");
    }
    assert!(Issuers::new(vec![good()]).is_ok());
}

#[test]
fn refusal_labels_are_distinct_snake_case() {
    let labels: std::collections::HashSet<&str> =
        RefusalKind::ALL.iter().map(|k| k.label()).collect();
    assert_eq!(labels.len(), RefusalKind::ALL.len());
    for label in labels {
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
    }
}

#[test]
fn debug_output_never_holds_the_token() {
    let token = github(&github_claims());
    let text = String::from_utf8(token.clone()).expect("text");
    let (_, sig) = text.rsplit_once('.').expect("dot");
    let v = verify(&issuers(), &token, "deploy", NOW).expect("v");
    let shown = format!("{v:?} {}", v.describe());
    assert!(!shown.contains(sig) && !shown.contains(&text), "{shown}");
    assert!(shown.contains("deploy"), "{shown}");
}

#[path = "session_tests.rs"]
mod session;

#[test]
fn a_rule_must_pin_whose_workload_it_admits() {
    // The review's rules: each pins a claim every GitHub user's workflow
    // can carry (any user gets a token for any audience).
    for claims in [
        vec![("ref", "refs/heads/main")],
        vec![("ref_type", "branch")],
        vec![("runner_environment", "github-hosted")],
        vec![("repository", "octo-org/*"), ("ref", "refs/heads/main")],
        vec![("iss", GITHUB), ("repository", "octo-org/octo-repo")],
        vec![("jti", "x"), ("repository_owner", "octo-org")],
        // The second review's: a reusable workflow any repository may
        // call, and subjects any repository can produce.
        vec![(
            "job_workflow_ref",
            "acme/shared/.github/workflows/deploy.yml@refs/heads/main",
        )],
        vec![("sub", "environment:prod")],
        vec![(
            "sub",
            "job_workflow_ref:acme/shared/.github/workflows/deploy.yml@refs/heads/main",
        )],
    ] {
        let mut list = vec![issuer("github", GITHUB, Alg::Rs256, github_rules())];
        list[0].rules = vec![rule("deploy", &claims)];
        let e = Issuers::new(list).expect_err("admits every workload");
        assert!(
            e.contains("pin one of repository") || e.contains("checked by the proxy itself"),
            "{claims:?}: {e}"
        );
    }
    // A GitHub subject that names the owner is a pin.
    let mut list = vec![issuer("github", GITHUB, Alg::Rs256, github_rules())];
    list[0].rules = vec![rule(
        "deploy",
        &[("sub", "repo:octo-org/octo-repo:environment:prod")],
    )];
    assert!(Issuers::new(list.clone()).is_ok());
    // The table may narrow GitHub's list, never widen it.
    list[0].tenant_claims = vec!["environment".into()];
    let e = Issuers::new(list.clone()).expect_err("widened");
    assert!(e.contains("does not say whose workload"), "{e}");
    list[0].tenant_claims = vec!["sub".into()];
    assert!(Issuers::new(list).is_ok());
    // GitHub Enterprise issuers are GitHub (the third review's R4).
    for iss in [
        "https://token.actions.acme.ghe.com",
        "https://github.acme.example/_services/token",
    ] {
        let mut list = vec![issuer("ghe", iss, Alg::Rs256, github_rules())];
        list[0].rules = vec![rule("deploy", &[("sub", "environment:prod")])];
        assert!(Issuers::new(list).is_err(), "{iss}");
    }
    // GitLab by project or group; any other issuer by sub or namespace,
    // unless its table names its own tenant claims.
    let mut list = vec![issuer("gitlab", GITLAB, Alg::EdDsa, github_rules())];
    list[0].rules = vec![rule("deploy", &[("ref", "main")])];
    assert!(Issuers::new(list.clone()).is_err());
    list[0].rules = vec![rule(
        "deploy",
        &[("namespace_path", "mygroup"), ("ref", "main")],
    )];
    assert!(Issuers::new(list).is_ok());
    let mut list = vec![issuer(
        "sso",
        "https://sso.example.com",
        Alg::Rs256,
        github_rules(),
    )];
    list[0].rules = vec![rule("deploy", &[("team", "ops")])];
    assert!(Issuers::new(list.clone()).is_err());
    list[0].tenant_claims = vec!["team".into()];
    assert!(Issuers::new(list).is_ok());
}
