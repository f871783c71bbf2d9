//! Who a platform token may act as: the configured [`Issuer`]s and their
//! [`Rule`]s, checked once ([`Issuers::new`]) and matched against a
//! token's claims.

use serde_json::{Map, Value};

use super::{Alg, KeysInForce, quoted};

/// Issuers configured at once.
pub const MAX_ISSUERS: usize = 16;
/// Rules per issuer.
pub const MAX_RULES: usize = 256;
/// Claims one rule may test.
pub const MAX_RULE_CLAIMS: usize = 16;
/// Largest clock skew an issuer may allow, in seconds.
pub const MAX_SKEW: u64 = 900;

/// Who a token may act as: a principal, the accounts it may use, and the
/// claims (path, glob) a token must carry for it. A path walks nested
/// objects on `/` (`kubernetes.io/namespace`); a glob's `*` matches any
/// run of characters, `/` included; all else is literal; the whole value
/// must match, and it must be a JSON string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The principal the token may act as.
    pub principal: String,
    /// The accounts on the server it may log in as.
    pub accounts: Vec<String>,
    /// Claim path and glob, every one required.
    pub claims: Vec<(String, String)>,
}

/// A platform whose tokens the proxy accepts.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The operator's name for it (in messages and logs): `github`.
    pub name: String,
    /// The token's `iss`, exactly: `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// The audience a token must name: the proxy's own identifier.
    pub audience: String,
    /// The algorithms allowed.
    pub algorithms: Vec<Alg>,
    /// Longest validity (`exp` minus the later of `iat` and `nbf`) accepted.
    pub max_lifetime_secs: u64,
    /// Clock skew allowed around `iat`, `nbf` and `exp`.
    pub skew_secs: u64,
    /// The key set in force, `None` until the first fetch.
    pub keys: Option<KeysInForce>,
    /// Who its tokens may act as.
    pub rules: Vec<Rule>,
    /// The claims that name who owns a workload on this platform (a
    /// repository, a project, a namespace): every rule pins one of them
    /// exactly. Empty: the platform's own ([`tenant_claims`]).
    pub tenant_claims: Vec<String>,
}

/// Claims the verifier itself judges; a rule never tests them (a rule on
/// `iss` or `exp` alone would admit every workload of the platform).
pub const VERIFIED_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "iat", "nbf", "jti"];

/// The shared platforms whose tenant claims are known: their issuer signs
/// for every workload on them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Platform {
    GitHub,
    GitLab,
    Other,
}

fn platform(iss: &str) -> Platform {
    let rest = iss.strip_prefix("https://").unwrap_or(iss);
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    // GitHub.com, GitHub Enterprise Cloud with data residency
    // (token.actions.SUBDOMAIN.ghe.com) and GitHub Enterprise Server
    // (https://HOST/_services/token): GitHub's claims, whoever runs it.
    let ghe_cloud = host.starts_with("token.actions.") && host.ends_with(".ghe.com");
    let ghe_server = rest.trim_end_matches('/').ends_with("/_services/token");
    if host == "token.actions.githubusercontent.com" || ghe_cloud || ghe_server {
        Platform::GitHub
    } else if host == "gitlab.com" || host.starts_with("gitlab.") {
        Platform::GitLab
    } else {
        Platform::Other
    }
}

/// GitHub's `sub` prefixes that name the owner: a repository may choose
/// its own subject template (`include_claim_keys`), but the value of each
/// key is its own, so only a subject that begins with one of these names
/// whose workload it is. Every other (`environment:prod`,
/// `job_workflow_ref:...`) any repository can produce.
const GITHUB_OWNER_SUBS: [&str; 4] = [
    "repo:",
    "repository_owner:",
    "repository_owner_id:",
    "repository_id:",
];

/// The claims that say who owns a workload, for an issuer `iss` whose
/// table names none: a platform's issuer signs for every workload on it
/// (any GitHub user's workflow gets a token for any audience), so a rule
/// must pin its owner, not only a branch, a runner or a reusable workflow
/// (which any repository may call). GitHub: the repository or its owner
/// (the ids outlive a renamed or re-registered name), or a `sub` that
/// begins with one of them; GitLab: the project or its group; any other
/// issuer (a Kubernetes cluster, say): the subject or the namespace.
pub fn tenant_claims(iss: &str) -> &'static [&'static str] {
    match platform(iss) {
        Platform::GitHub => &[
            "repository",
            "repository_id",
            "repository_owner",
            "repository_owner_id",
            "sub",
        ],
        Platform::GitLab => &[
            "project_path",
            "project_id",
            "namespace_path",
            "namespace_id",
            "sub",
        ],
        Platform::Other => &["sub", "kubernetes.io/namespace"],
    }
}

/// Whether the exact pin `value` of claim `path` names an owner on the
/// platform of `iss` (a GitHub `sub` only with an owner prefix).
fn pins_owner(iss: &str, path: &str, value: &str) -> bool {
    platform(iss) != Platform::GitHub
        || path != "sub"
        || GITHUB_OWNER_SUBS.iter().any(|p| value.starts_with(p))
}

/// The configured issuers, checked by [`Issuers::new`].
#[derive(Clone, Debug)]
pub struct Issuers {
    list: Vec<Issuer>,
}

impl Issuers {
    /// Checks the configuration: names and `iss` unique, an audience, at
    /// least one algorithm, at least one rule, and every rule with at least
    /// one claim and one claim pinned exactly (no `*`), so that no rule
    /// admits every workload of a shared platform.
    pub fn new(list: Vec<Issuer>) -> Result<Self, String> {
        if list.is_empty() || list.len() > MAX_ISSUERS {
            return Err(format!(
                "{} workload issuers configured: configure 1 to {MAX_ISSUERS}",
                list.len()
            ));
        }
        for (n, issuer) in list.iter().enumerate() {
            check_issuer(issuer)?;
            if let Some(other) = list.get(..n).and_then(|before| {
                before
                    .iter()
                    .find(|o| o.name == issuer.name || o.issuer == issuer.issuer)
            }) {
                return Err(format!(
                    "workload issuers {} and {} share a name or an iss ({}): each issuer once",
                    other.name, issuer.name, issuer.issuer
                ));
            }
        }
        Ok(Self { list })
    }

    /// The issuers, in configuration order.
    pub fn list(&self) -> &[Issuer] {
        &self.list
    }

    /// The issuer named `name`.
    pub fn get(&self, name: &str) -> Option<&Issuer> {
        self.list.iter().find(|i| i.name == name)
    }

    /// Puts `keys` in force for the issuer named `name`; `false` if there
    /// is none.
    pub fn set_keys(&mut self, name: &str, keys: KeysInForce) -> bool {
        match self.list.iter_mut().find(|i| i.name == name) {
            Some(issuer) => {
                issuer.keys = Some(keys);
                true
            }
            None => false,
        }
    }
}

fn check_issuer(i: &Issuer) -> Result<(), String> {
    let name = &i.name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(format!(
            "workload issuer name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let printable = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c == ' ');
    if !printable(&i.issuer) {
        return Err(format!(
            "workload issuer {name}: iss {:?} must be the platform's issuer URL, exactly",
            i.issuer
        ));
    }
    if !printable(&i.audience) {
        return Err(format!(
            "workload issuer {name}: set an audience, the value its tokens must be requested for"
        ));
    }
    if i.algorithms.is_empty() {
        return Err(format!(
            "workload issuer {name}: allow at least one algorithm (RS256, ES256, EdDSA)"
        ));
    }
    if i.max_lifetime_secs == 0 || i.skew_secs > MAX_SKEW {
        return Err(format!(
            "workload issuer {name}: max lifetime must be positive and skew at most {MAX_SKEW}s"
        ));
    }
    if i.rules.is_empty() || i.rules.len() > MAX_RULES {
        return Err(format!(
            "workload issuer {name}: {} rules: give 1 to {MAX_RULES}, each naming a principal \
             and the claims its tokens must carry",
            i.rules.len()
        ));
    }
    let known = tenant_claims(&i.issuer);
    // For GitHub and GitLab the table may only narrow the platform's own
    // list: a claim any of the platform's users sets (an environment, a
    // branch) never stands for an owner.
    if platform(&i.issuer) != Platform::Other
        && let Some(c) = i
            .tenant_claims
            .iter()
            .find(|c| !known.contains(&c.as_str()))
    {
        return Err(format!(
            "workload issuer {name}: tenant_claims names {c:?}, which does not say whose \
             workload a token is on this platform: choose among {}",
            known.join(", ")
        ));
    }
    let tenant: Vec<&str> = if i.tenant_claims.is_empty() {
        known.to_vec()
    } else {
        i.tenant_claims.iter().map(String::as_str).collect()
    };
    i.rules
        .iter()
        .try_for_each(|r| check_rule(name, &i.issuer, r, &tenant))
}

fn check_rule(issuer: &str, iss: &str, r: &Rule, tenant: &[&str]) -> Result<(), String> {
    let at = format!(
        "workload issuer {issuer}, rule for principal {:?}",
        r.principal
    );
    if r.principal.is_empty() {
        return Err(format!("{at}: name a principal"));
    }
    if r.claims.is_empty() || r.claims.len() > MAX_RULE_CLAIMS {
        return Err(format!(
            "{at}: {} claims: test 1 to {MAX_RULE_CLAIMS} (a rule with none would admit every \
             token of the issuer)",
            r.claims.len()
        ));
    }
    if let Some((path, _)) = r
        .claims
        .iter()
        .find(|(p, _)| p.is_empty() || p.split('/').any(str::is_empty))
    {
        return Err(format!(
            "{at}: claim path {path:?}: name a claim, with '/' between nested names"
        ));
    }
    if let Some((path, _)) = r
        .claims
        .iter()
        .find(|(p, _)| VERIFIED_CLAIMS.contains(&p.as_str()))
    {
        return Err(format!(
            "{at}: claim {path} is checked by the proxy itself (iss, aud, exp, iat, nbf, jti): \
             test the claims that say which workload it is"
        ));
    }
    let pinned = r.claims.iter().any(|(p, glob)| {
        tenant.contains(&p.as_str())
            && !glob.is_empty()
            && !glob.contains('*')
            && pins_owner(iss, p, glob)
    });
    if !pinned {
        return Err(format!(
            "{at}: pin one of {} exactly, without '*' (on GitHub, a sub only when it begins \
             with repo:, repository_owner:, repository_owner_id: or repository_id:): a \
             platform's issuer signs for every workload on it (any GitHub user's workflow can \
             get a token for any audience, and call any public reusable workflow), so a rule \
             must name whose workload it admits, not only a branch, a runner or a workflow",
            tenant.join(", ")
        ));
    }
    Ok(())
}

/// A rule that matched, and the claims it tested with their values.
pub(super) type Matched<'r> = (&'r Rule, Vec<(String, String)>);

/// The first rule for `principal` whose every claim matches, with the
/// values it tested; or why none does.
pub(super) fn match_rule<'r>(
    issuer: &'r Issuer,
    claims: &Map<String, Value>,
    principal: &str,
) -> Result<Matched<'r>, String> {
    let name = &issuer.name;
    let mut first_miss = None;
    for rule in issuer.rules.iter().filter(|r| r.principal == principal) {
        let mut used = Vec::with_capacity(rule.claims.len());
        let mut miss = None;
        for (path, glob) in &rule.claims {
            match lookup(claims, path) {
                Some(Value::String(v)) if glob_match(glob, v) => {
                    used.push((path.clone(), v.clone()));
                }
                found => {
                    let actual = match found {
                        None => "absent".to_owned(),
                        Some(Value::String(v)) => quoted(v),
                        Some(_) => "not a string".to_owned(),
                    };
                    // What the rule wants stays in the proxy's
                    // configuration: the client learns which of its own
                    // claims did not fit, never another tenant's values.
                    miss = Some(format!(
                        "token from issuer {name}: claim {path} is {actual}, which no rule for \
                         principal {principal} on this server allows: run the workload where a \
                         rule allows it, or ask the operator which rules this server has"
                    ));
                    break;
                }
            }
        }
        match miss {
            None => return Ok((rule, used)),
            Some(why) => {
                first_miss.get_or_insert(why);
            }
        }
    }
    Err(first_miss.unwrap_or_else(|| {
        format!(
            "workload issuer {name} has no rule for principal {principal}: connect as a \
             principal the issuer's rules name, or ask the operator to add a rule"
        )
    }))
}

/// The value at `path` ('/' between nested object names).
fn lookup<'v>(claims: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('/');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Whether `text` matches `glob` whole, `*` matching any run.
pub(super) fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(c) if Some(c) == t.get(ti) => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}
