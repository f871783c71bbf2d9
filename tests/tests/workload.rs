//! Workload identity end to end: a CI job (GitHub-shaped tokens, RS256,
//! keys pulled from a JWKS that nginx serves) and a pod (Kubernetes-shaped
//! tokens, ES256, a pinned JWKS file) log in through ztssh with zero
//! standing keys, real sshd and ssh. The job's key is a throwaway one made
//! by `ssh-keygen` for the test: it is in no file on the proxy or sshd.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ztssh_tests::oidc::{PublicKeyForm, TestAlg, TestIssuer, github_claims, kubernetes_claims};
use ztssh_tests::zsk::ACCOUNT;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const AUDIENCE: &str = "ztssh:web1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A job's throwaway key, as a job makes it at its start.
fn job_key(dir: &Path) -> PathBuf {
    let key = dir.join("job_key");
    assert_ok(
        &run_bounded(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "job", "-f"])
                .arg(&key),
            T,
        ),
        "ssh-keygen",
    );
    key
}

/// The GitHub issuer table, its keys pulled from `jwks_url` every second.
fn github_table(jwks_url: &str) -> String {
    format!(
        "[[workload_issuer]]\nname = \"github\"\nissuer = \"{GITHUB}\"\njwks_url = \"{jwks_url}\"\n\
         jwks_allow_http = true\njwks_poll_secs = 1\njwks_max_age_secs = 3600\n\
         max_token_lifetime_secs = 900\n\
         [[workload_issuer.rule]]\nprincipal = \"deploy\"\naccounts = [\"{ACCOUNT}\"]\n\
         claims = {{ repository = \"acme/app\", ref = \"refs/heads/main\", environment = \"prod\" }}\n"
    )
}

fn world(range: &str, tables: &str, short_certs: bool) -> World {
    let mut toml = "workload_token_record = \"{dir}/workload-tokens.record\"\n".to_owned();
    if short_certs {
        toml.push_str(
            "insecure_short_certs = true\ncert_ttl_secs = 4\nchallenge_interval_secs = 1\n",
        );
    }
    toml.push_str(tables);
    World::builder()
        .principals(&["alice", "deploy"])
        .zero_standing_keys(range)
        .proxy_toml(&toml)
        .start()
}

/// ssh as [`ACCOUNT`] through ztssh as principal deploy, the sidecar
/// getting its token with `token_flags`.
fn through(w: &World, key: &Path, token_flags: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(w.direct_opts(key))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={}",
            w.proxy_command_as(key, "deploy", token_flags)
        ))
        .arg("-p")
        .arg(w.proxy.port.to_string())
        .arg(format!("{ACCOUNT}@localhost"));
    c
}

fn write_token(path: &Path, token: &str) {
    // As the kubelet does: a new file, renamed over the old.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).expect("token");
    std::fs::rename(&tmp, path).expect("rename");
}

fn github(git_ref: &str, audience: &str, iat: u64, exp: u64) -> Value {
    github_claims("acme/app", git_ref, Some("prod"), audience, iat, exp)
}

/// One login with `token` in a file; its output.
fn login(w: &World, key: &Path, dir: &Path, token: &str) -> std::process::Output {
    let file = dir.join("token");
    write_token(&file, token);
    run_bounded(
        through(w, key, &format!("--token-file {}", file.display())).arg("whoami"),
        T,
    )
}

#[test]
fn a_github_job_logs_in_with_its_token_alone_and_every_bad_token_is_refused_with_its_reason() {
    let dir = TempDir::new().expect("tempdir");
    let mut issuer = TestIssuer::new(dir.path(), GITHUB);
    let jwks = issuer.serve();
    let metrics = free_port();
    let w = world(
        "127.82.0.0/16",
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n{}",
            github_table(&jwks.url())
        ),
        false,
    );
    w.proxy.wait_log("event=\"jwks_loaded\"", T);
    let key = job_key(dir.path());
    let t = now();

    // The job's token for acme/app on main, environment prod: in, as the
    // rule's account, with no key registered anywhere.
    let good = issuer.mint(
        TestAlg::Rs256,
        &github("refs/heads/main", AUDIENCE, t, t + 300),
    );
    let out = login(&w, &key, dir.path(), &good);
    assert_ok(&out, "the job's login");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCOUNT);
    let log = w.proxy.log_text();
    let authorized = log
        .lines()
        .find(|l| l.contains("event=\"authorized\"") && l.contains("workload_issuer"))
        .unwrap_or_else(|| panic!("no authorized line for the workload: {log}"));
    for want in [
        "workload_issuer=\"github\"",
        "repo:acme/app:environment:prod",
        "repository=acme/app",
        "ref=refs/heads/main",
        "environment=prod",
    ] {
        assert!(authorized.contains(want), "{want}: {authorized}");
    }
    // sshd took the throwaway key from the proxy's AuthorizedKeysCommand.
    assert!(
        w.sshd.log_text().contains("Accepted publickey"),
        "{}",
        w.sshd.log_text()
    );

    // The same token again with the job's key (its second connection):
    // in. With another key (the token read from a log): a replay.
    assert_ok(
        &login(&w, &key, dir.path(), &good),
        "the job's second login",
    );
    let thief = dir.path().join("thief");
    std::fs::create_dir(&thief).expect("dir");
    let thief_key = job_key(&thief);
    let out = login(&w, &thief_key, dir.path(), &good);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    // A restart forgets no use: the record is kept in the state directory.
    let mut w = w;
    w.proxy.restart();
    w.proxy.wait_log("event=\"jwks_loaded\"", T);
    let out = login(&w, &thief_key, dir.path(), &good);
    assert!(!out.status.success(), "replayed after a restart");
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    assert_ok(
        &login(&w, &key, dir.path(), &good),
        "the job's key after a restart",
    );

    // Each refused with the reason that names what is wrong.
    let claims = |git_ref: &str, aud: &str, iat: u64, exp: u64| github(git_ref, aud, iat, exp);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another branch",
            issuer.mint(
                TestAlg::Rs256,
                &claims("refs/heads/feature", AUDIENCE, t, t + 300),
            ),
            "refs/heads/feature",
        ),
        (
            "expired",
            issuer.mint(
                TestAlg::Rs256,
                &claims("refs/heads/main", AUDIENCE, t - 700, t - 400),
            ),
            "expired",
        ),
        (
            "not yet valid",
            issuer.mint(
                TestAlg::Rs256,
                &claims("refs/heads/main", AUDIENCE, t + 600, t + 800),
            ),
            "not valid until",
        ),
        (
            "another server's audience",
            issuer.mint(
                TestAlg::Rs256,
                &claims("refs/heads/main", "ztssh:web2", t, t + 300),
            ),
            "not ztssh:web1",
        ),
        (
            "another issuer",
            {
                let mut c = claims("refs/heads/main", AUDIENCE, t, t + 300);
                c["iss"] = Value::from("https://gitlab.example.com");
                issuer.mint(TestAlg::Rs256, &c)
            },
            "names iss",
        ),
        (
            "alg none",
            issuer.mint_alg_none(&claims("refs/heads/main", AUDIENCE, t, t + 300)),
            "never none or HMAC",
        ),
        (
            "HS256 keyed with the RSA public key",
            issuer.mint_hs256_with_public_key(
                &claims("refs/heads/main", AUDIENCE, t, t + 300),
                PublicKeyForm::Pem,
            ),
            "never none or HMAC",
        ),
        (
            "an unknown kid",
            issuer.mint_unknown_kid(&claims("refs/heads/main", AUDIENCE, t, t + 300)),
            "no key",
        ),
        (
            "a key not in the JWKS",
            issuer.mint_with_key_not_in_jwks(
                TestAlg::Rs256,
                &claims("refs/heads/main", AUDIENCE, t, t + 300),
            ),
            "does not verify",
        ),
    ];
    for (what, token, says) in &cases {
        let out = login(&w, &key, dir.path(), token);
        assert!(!out.status.success(), "{what}: logged in");
        assert!(stderr(&out).contains(says), "{what}: {}", stderr(&out));
    }
    // The proxy counted each by its reason.
    let m = http_get(metrics, "/metrics");
    for (reason, n) in [
        ("replayed", 1),
        ("no_rule", 1),
        ("expired", 1),
        ("not_yet_valid", 1),
        ("wrong_audience", 1),
        ("wrong_issuer", 1),
        ("bad_algorithm", 2),
        ("unknown_key", 1),
        ("bad_signature", 1),
    ] {
        let line = format!("ztssh_workload_tokens_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line}: {m}");
    }

    // The platform rotates its keys: tokens from the new key work without
    // a restart, once the proxy's next pull has them; the old key, dropped
    // from the set, no longer verifies.
    issuer.rotate();
    let old = issuer.mint_with_previous(
        TestAlg::Rs256,
        &github("refs/heads/main", AUDIENCE, now(), now() + 300),
    );
    issuer.drop_old();
    issuer.publish(&jwks);
    let kid = issuer.kid(TestAlg::Rs256).to_owned();
    wait_until(T, "the rotated key set in force", || {
        w.proxy
            .log_text()
            .lines()
            .any(|l| l.contains("event=\"jwks_loaded\"") && l.contains(&kid))
    });
    let fresh = issuer.mint(
        TestAlg::Rs256,
        &github("refs/heads/main", AUDIENCE, now(), now() + 300),
    );
    assert_ok(
        &login(&w, &key, dir.path(), &fresh),
        "a token from the new key",
    );
    let out = login(&w, &key, dir.path(), &old);
    assert!(!out.status.success(), "a token from the dropped key");
    assert!(stderr(&out).contains("no key"), "{}", stderr(&out));
}

#[test]
fn a_pod_with_a_pinned_key_set_stays_in_while_its_token_is_refreshed_and_is_out_when_it_stops() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = "https://kubernetes.default.svc.cluster.local";
    let issuer = TestIssuer::new(dir.path(), cluster);
    let jwks = dir.path().join("cluster-jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).expect("jwks");
    let table = format!(
        "[[workload_issuer]]\nname = \"cluster\"\nissuer = \"{cluster}\"\njwks = \"{}\"\n\
         algorithms = [\"ES256\"]\n\
         [[workload_issuer.rule]]\nprincipal = \"deploy\"\naccounts = [\"{ACCOUNT}\"]\n\
         claims = {{ \"kubernetes.io/namespace\" = \"prod\", \"kubernetes.io/serviceaccount/name\" = \"deployer\" }}\n",
        jwks.display()
    );
    let w = world("127.83.0.0/16", &table, true);
    // `check` names the issuer, its audience, its keys and its rules.
    let check = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(w.dir.path().join("proxy.toml")),
        T,
    );
    assert_ok(&check, "ztssh-proxy check");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains(&format!(
            "workload issuers: cluster (iss {cluster}, audience ztssh:web1, 2 key(s)"
        )) && said.contains("1 rule(s) for deploy"),
        "{said}"
    );
    let key = job_key(dir.path());
    let file = dir.path().join("token");
    let mint = |sa: &str| {
        let t = now();
        issuer.mint(
            TestAlg::Es256,
            &kubernetes_claims(cluster, "prod", sa, AUDIENCE, t, t + 600),
        )
    };

    // The token file, replaced kubelet-style while the session runs: each
    // renewal carries the fresh one, and the session goes on.
    write_token(&file, &mint("deployer"));
    let before = count(&w.proxy.log_text(), "event=\"cert_renewed\"");
    let mut session = through(&w, &key, &format!("--token-file {}", file.display()))
        .arg("echo started; sleep 120")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    for n in 1..=3 {
        wait_until(T, "a renewal", || {
            count(&w.proxy.log_text(), "event=\"cert_renewed\"") >= before + n
        });
        write_token(&file, &mint("deployer"));
    }
    assert!(
        session.try_wait().expect("wait").is_none(),
        "the session ended while its token was refreshed: {}",
        w.proxy.log_text()
    );

    // Another service account's token in the same session: refused, and
    // the next renewal ends the session with the reason.
    write_token(&file, &mint("intruder"));
    let out = wait_bounded(session, T);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("workload"), "{said}");
    let log = w.proxy.log_text();
    assert!(
        log.contains("reason=\"workload_token_missing\""),
        "no workload_token_missing end: {log}"
    );

    // A token command that stops producing tokens (the job ended) ends its
    // session at the next renewal; the user reads why.
    let source = dir.path().join("source");
    write_token(&source, &mint("deployer"));
    let command = format!("--token-command 'cat {}'", source.display());
    let ends_before = count(&w.proxy.log_text(), "reason=\"workload_token_missing\"");
    let session = through(&w, &key, &command)
        .arg("echo started; sleep 120")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    wait_until(T, "the session to start", || {
        count(&w.proxy.log_text(), "event=\"upstream_connected\"") >= 2
    });
    std::fs::remove_file(&source).expect("remove");
    let out = wait_bounded(session, T);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("The token source said"), "{said}");
    assert!(
        count(&w.proxy.log_text(), "reason=\"workload_token_missing\"") > ends_before,
        "{}",
        w.proxy.log_text()
    );
}

#[test]
fn an_issuer_table_without_zero_standing_keys_is_refused_before_any_port_is_bound() {
    let dir = TempDir::new().expect("tempdir");
    let table = github_table("https://token.actions.githubusercontent.com/.well-known/jwks");
    let w = World::builder().start();
    let config = w.dir.path().join("proxy.toml");
    let text = std::fs::read_to_string(&config).expect("proxy.toml");
    let bad = dir.path().join("proxy.toml");
    std::fs::write(&bad, format!("{text}{table}")).expect("write");
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(&bad),
        T,
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("needs zero standing keys"), "{said}");
    assert!(said.contains(&format!("{}:", bad.display())), "{said}");
}
