//! Claim sets shaped like each platform's documented OIDC token (GitHub
//! Actions, Kubernetes projected service-account tokens, GitLab CI/CD ID
//! tokens), each builder citing the page it follows. Ids that name a thing
//! (a repository, a service account) are fixed by its name; ids that name
//! an event (`jti`, a run, a pod) are new on every call.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// 32 bytes unique to this call (process, counter, clock).
fn unique(label: &str) -> [u8; 32] {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    stable(&format!("{label}/{}/{n}/{t}", std::process::id()))
}

/// 32 bytes fixed by `label` (a repository's or service account's ids).
fn stable(label: &str) -> [u8; 32] {
    Sha256::digest(label).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A version-4-shaped UUID from `h`.
fn uuid(h: &[u8; 32]) -> String {
    let x = hex(&h[..16]);
    let variant = ["8", "9", "a", "b"][usize::from(h[16] & 3)];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &x[..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

/// A decimal id of up to `digits` digits (no leading zero) from `h`.
fn number(h: &[u8; 32], digits: u32) -> u64 {
    let v = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    let low = 10u64.pow(digits - 1);
    low + v % (9 * low)
}

/// GitHub Actions' OIDC token for a job of `repository` (`owner/name`) at
/// `git_ref` (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/merge`), in
/// `environment` if the job names one.
///
/// Every claim of <https://docs.github.com/en/actions/reference/security/oidc>
/// (the claims table and its example token), except `enterprise` and
/// `enterprise_id` (only for an enterprise account's repositories) and
/// `repo_property_*` (opt-in custom properties). `sub` is assembled as
/// documented (environment, else `pull_request`, else ref; `:` in a value as
/// `%3A`); custom claims are strings, as GitHub sends them; `nbf` is 600 s
/// before `iat`, as in GitHub's example.
pub fn github_claims(
    repository: &str,
    git_ref: &str,
    environment: Option<&str>,
    audience: &str,
    iat: u64,
    exp: u64,
) -> Value {
    let owner = repository.split_once('/').map_or(repository, |(o, _)| o);
    let pull = git_ref.starts_with("refs/pull/");
    let esc = |v: &str| v.replace(':', "%3A");
    let sub = match environment {
        Some(env) => format!("repo:{}:environment:{}", esc(repository), esc(env)),
        None if pull => format!("repo:{}:pull_request", esc(repository)),
        None => format!("repo:{}:ref:{}", esc(repository), esc(git_ref)),
    };
    let ref_type = if git_ref.starts_with("refs/tags/") {
        "tag"
    } else {
        "branch"
    };
    let (head_ref, base_ref) = if pull { ("topic", "main") } else { ("", "") };
    let sha = hex(&stable(&format!("{repository}@{git_ref}"))[..20]);
    let workflow_ref = format!("{repository}/.github/workflows/deploy.yml@{git_ref}");
    let mut claims = json!({
        "jti": uuid(&unique("github jti")),
        "sub": sub,
        "aud": audience,
        "ref": git_ref,
        "sha": sha,
        "repository": repository,
        "repository_owner": owner,
        "actor_id": number(&stable("octocat"), 7).to_string(),
        "repository_visibility": "private",
        "repository_id": number(&stable(repository), 9).to_string(),
        "repository_owner_id": number(&stable(owner), 8).to_string(),
        "run_id": number(&unique("github run"), 11).to_string(),
        "run_number": number(&unique("github run number"), 3).to_string(),
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "deploy",
        "workflow_ref": workflow_ref,
        "workflow_sha": sha,
        "head_ref": head_ref,
        "base_ref": base_ref,
        "event_name": if pull { "pull_request" } else { "push" },
        "ref_type": ref_type,
        "job_workflow_ref": workflow_ref,
        "job_workflow_sha": sha,
        "check_run_id": number(&unique("github check run"), 11).to_string(),
        "iss": "https://token.actions.githubusercontent.com",
        "nbf": iat.saturating_sub(600),
        "exp": exp,
        "iat": iat,
    });
    if let Some(env) = environment {
        claims["environment"] = json!(env);
    }
    claims
}

/// A Kubernetes projected service-account token (kubelet-issued, bound to
/// a pod on a node) for `namespace`/`service_account`, from the cluster
/// issuer `issuer`.
///
/// Every claim of the example in
/// <https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#schema-for-service-account-private-claims>:
/// `aud` as an array, `sub` `system:serviceaccount:NS:SA`, `jti`, `nbf` =
/// `iat`, and the nested `kubernetes.io` (namespace, node, pod,
/// serviceaccount, each with name and uid). The service account's uid is
/// fixed by its name; the pod's is new each call.
pub fn kubernetes_claims(
    issuer: &str,
    namespace: &str,
    service_account: &str,
    audience: &str,
    iat: u64,
    exp: u64,
) -> Value {
    let pod = unique("kubernetes pod");
    let pod_name = format!("{service_account}-{}-{}", hex(&pod[..5]), hex(&pod[5..8]));
    json!({
        "aud": [audience],
        "exp": exp,
        "iat": iat,
        "iss": issuer,
        "jti": uuid(&unique("kubernetes jti")),
        "kubernetes.io": {
            "namespace": namespace,
            "node": { "name": "worker-1", "uid": uuid(&stable("node worker-1")) },
            "pod": { "name": pod_name, "uid": uuid(&pod) },
            "serviceaccount": {
                "name": service_account,
                "uid": uuid(&stable(&format!("sa {namespace}/{service_account}"))),
            },
        },
        "nbf": iat,
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
    })
}

/// A GitLab CI/CD ID token (`id_tokens:` in `.gitlab-ci.yml`) from
/// gitlab.com for a job of `project_path` (`group/sub/project`) at
/// `git_ref` (`refs/heads/main` or `refs/tags/v1`).
///
/// Every claim of <https://docs.gitlab.com/ci/secrets/id_token_authentication/#token-payload>
/// that a job without an environment carries, `groups_direct` included;
/// left out are the environment claims (`environment`,
/// `environment_protected`, `deployment_tier`, `environment_action`),
/// `user_identities` (a user preference) and `job_config` (policy jobs).
/// `sub` is `project_path:P:ref_type:T:ref:R`; ids are strings except
/// `runner_id`; `nbf` is 5 s before `iat`, as in GitLab's example.
pub fn gitlab_claims(
    project_path: &str,
    git_ref: &str,
    audience: &str,
    iat: u64,
    exp: u64,
) -> Value {
    let namespace = project_path.rsplit_once('/').map_or("", |(n, _)| n);
    let (ref_type, short) = match git_ref.strip_prefix("refs/tags/") {
        Some(tag) => ("tag", tag),
        None => (
            "branch",
            git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref),
        ),
    };
    let protected = ref_type == "tag" || short == "main";
    let sha = hex(&stable(&format!("{project_path}@{git_ref}"))[..20]);
    let (project_id, namespace_id) = (
        number(&stable(project_path), 8).to_string(),
        number(&stable(namespace), 8).to_string(),
    );
    json!({
        "namespace_id": namespace_id,
        "namespace_path": namespace,
        "project_id": project_id,
        "project_path": project_path,
        "job_project_id": project_id,
        "job_project_path": project_path,
        "job_namespace_id": namespace_id,
        "job_namespace_path": namespace,
        "user_id": number(&stable("gitlab user"), 7).to_string(),
        "user_login": "sample-user",
        "user_email": "sample-user@example.com",
        "user_access_level": "developer",
        "pipeline_id": number(&unique("gitlab pipeline"), 10).to_string(),
        "pipeline_source": "push",
        "job_id": number(&unique("gitlab job"), 10).to_string(),
        "job_source": "push",
        "ref": short,
        "ref_type": ref_type,
        "ref_path": git_ref,
        "ref_protected": protected.to_string(),
        "groups_direct": [namespace],
        "runner_id": number(&stable("gitlab runner"), 8),
        "runner_environment": "gitlab-hosted",
        "sha": sha,
        "project_visibility": "private",
        "ci_config_ref_uri": format!("gitlab.com/{project_path}//.gitlab-ci.yml@{git_ref}"),
        "ci_config_sha": sha,
        "jti": uuid(&unique("gitlab jti")),
        "iss": "https://gitlab.com",
        "iat": iat,
        "nbf": iat.saturating_sub(5),
        "exp": exp,
        "sub": format!("project_path:{project_path}:ref_type:{ref_type}:ref:{short}"),
        "aud": audience,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = "ztssh://bastion.example";

    /// The documented claims (sorted), as listed on the pages the builders
    /// cite.
    const GITHUB_CLAIMS: [&str; 31] = [
        "actor",
        "actor_id",
        "aud",
        "base_ref",
        "check_run_id",
        "environment",
        "event_name",
        "exp",
        "head_ref",
        "iat",
        "iss",
        "job_workflow_ref",
        "job_workflow_sha",
        "jti",
        "nbf",
        "ref",
        "ref_type",
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "repository_visibility",
        "run_attempt",
        "run_id",
        "run_number",
        "runner_environment",
        "sha",
        "sub",
        "workflow",
        "workflow_ref",
        "workflow_sha",
    ];
    const GITLAB_CLAIMS: [&str; 34] = [
        "aud",
        "ci_config_ref_uri",
        "ci_config_sha",
        "exp",
        "groups_direct",
        "iat",
        "iss",
        "job_id",
        "job_namespace_id",
        "job_namespace_path",
        "job_project_id",
        "job_project_path",
        "job_source",
        "jti",
        "namespace_id",
        "namespace_path",
        "nbf",
        "pipeline_id",
        "pipeline_source",
        "project_id",
        "project_path",
        "project_visibility",
        "ref",
        "ref_path",
        "ref_protected",
        "ref_type",
        "runner_environment",
        "runner_id",
        "sha",
        "sub",
        "user_access_level",
        "user_email",
        "user_id",
        "user_login",
    ];

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn claim_sets_follow_the_platforms_documented_shapes() {
        let t = 1_700_000_000;
        let gh = github_claims("acme/app", "refs/heads/main", Some("prod"), AUD, t, t + 300);
        assert_eq!(gh["sub"], "repo:acme/app:environment:prod");
        assert_eq!(
            (&gh["repository_owner"], &gh["ref_type"], &gh["environment"]),
            (&json!("acme"), &json!("branch"), &json!("prod"))
        );
        assert_eq!(
            gh["job_workflow_ref"],
            "acme/app/.github/workflows/deploy.yml@refs/heads/main"
        );
        assert_eq!(
            (&gh["nbf"], &gh["iat"], &gh["exp"]),
            (&json!(t - 600), &json!(t), &json!(t + 300))
        );
        assert_eq!(keys(&gh), GITHUB_CLAIMS);
        let tag = github_claims("acme/app", "refs/tags/v1", None, AUD, t, t + 300);
        assert_eq!(
            (&tag["sub"], &tag["ref_type"]),
            (&json!("repo:acme/app:ref:refs/tags/v1"), &json!("tag"))
        );
        assert!(tag.get("environment").is_none());
        let pr = github_claims("acme/app", "refs/pull/7/merge", None, AUD, t, t + 300);
        assert_eq!(
            (&pr["sub"], &pr["event_name"]),
            (&json!("repo:acme/app:pull_request"), &json!("pull_request"))
        );
        let colon = github_claims(
            "acme/app",
            "refs/heads/main",
            Some("prod:v1"),
            AUD,
            t,
            t + 300,
        );
        assert_eq!(colon["sub"], "repo:acme/app:environment:prod%3Av1");
        assert_ne!(gh["jti"], tag["jti"], "jti is unique per token");

        let k8s = kubernetes_claims("https://k8s.test", "ci", "deployer", AUD, t, t + 600);
        assert_eq!(k8s["sub"], "system:serviceaccount:ci:deployer");
        assert_eq!(k8s["aud"], json!([AUD]));
        let k = &k8s["kubernetes.io"];
        assert_eq!(
            (&k["namespace"], &k["serviceaccount"]["name"]),
            (&json!("ci"), &json!("deployer"))
        );
        for part in ["pod", "node", "serviceaccount"] {
            assert_eq!(k[part]["uid"].as_str().unwrap().len(), 36, "{part}");
        }
        let again = kubernetes_claims("https://k8s.test", "ci", "deployer", AUD, t, t + 600);
        assert_eq!(
            again["kubernetes.io"]["serviceaccount"],
            k["serviceaccount"]
        );
        assert_ne!(again["kubernetes.io"]["pod"], k["pod"]);

        let gl = gitlab_claims("acme/tools/app", "refs/tags/v1", AUD, t, t + 300);
        assert_eq!(gl["sub"], "project_path:acme/tools/app:ref_type:tag:ref:v1");
        assert_eq!(
            (&gl["namespace_path"], &gl["ref_path"], &gl["ref"]),
            (&json!("acme/tools"), &json!("refs/tags/v1"), &json!("v1"))
        );
        assert_eq!(
            gl["ci_config_ref_uri"],
            "gitlab.com/acme/tools/app//.gitlab-ci.yml@refs/tags/v1"
        );
        assert!(gl["runner_id"].is_u64() && gl["project_id"].is_string());
        assert_eq!(keys(&gl), GITLAB_CLAIMS);
        assert_eq!(
            keys(&k8s),
            [
                "aud",
                "exp",
                "iat",
                "iss",
                "jti",
                "kubernetes.io",
                "nbf",
                "sub"
            ]
        );
    }
}
