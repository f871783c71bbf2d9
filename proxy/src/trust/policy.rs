//! The access policy: which principals may connect, from which networks and
//! when, and how many sessions each may hold. Written by the operator as TOML
//! (see `config-examples/policy.toml`), parsed with byte spans, checked
//! completely before use and reloaded on SIGHUP. Sources are checked at
//! accept time, before any cryptography; principal rules right after the
//! handshake authenticates the user and again at every identity proof.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use ztssh_proto::end::{EndKind, Ended};
use ztssh_proto::time::UnixTime;

mod file;

/// Most entries in any one list, and most per-principal rules.
const MAX_ENTRIES: usize = 10_000;

/// A mistake in a policy: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The 1-based line of the key or value at fault; `None` only when the
    /// TOML parser gives no place.
    pub line: Option<usize>,
    /// What is wrong, on one line.
    pub reason: String,
}

/// A span of the UTC day, `start..end` in whole hours; it wraps past
/// midnight when `end <= start` (`22-06`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hours {
    start: u8,
    end: u8,
}

impl Hours {
    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an hour range like \"08-18\" (UTC, end exclusive)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u8 = a.trim().parse().map_err(|_| bad())?;
        let end: u8 = b.trim().parse().map_err(|_| bad())?;
        if start > 23 || end > 24 {
            return Err(format!("{s:?}: hours run from 0 to 24"));
        }
        if start == end || (start == 0 && end == 24) {
            return Err(format!(
                "{s:?} covers the whole day or none of it; remove hours_utc to allow any time"
            ));
        }
        Ok(Self { start, end })
    }

    fn contains(self, now: UnixTime) -> bool {
        let hour = u8::try_from((now / 3600) % 24).unwrap_or(0);
        if self.start < self.end {
            (self.start..self.end).contains(&hour)
        } else {
            hour >= self.start || hour < self.end
        }
    }
}

impl std::fmt::Display for Hours {
    /// As written in a policy: `08-18`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}-{:02}", self.start, self.end)
    }
}

/// Extra rules for one principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Networks this principal may connect from (any when `None`).
    pub sources: Option<Vec<IpNet>>,
    /// Most concurrent sessions (when `None`, the proxy's
    /// `max_sessions_per_principal`, 64 by default: never unlimited).
    pub max_sessions: Option<u32>,
    /// UTC hours in which sessions may run (any time when `None`).
    pub hours: Option<Vec<Hours>>,
    /// Local accounts sshd may log this principal in as (only the
    /// principal's own name when `None`).
    pub accounts: Option<Vec<String>>,
    /// FIDO security keys: the touch flag is required (default: yes).
    pub require_presence: Option<bool>,
    /// FIDO security keys: the PIN flag is required (default: no).
    pub require_verification: Option<bool>,
    /// FIDO security keys: seconds after which a renewal needs a touch
    /// again (default: at login only).
    pub reverify_interval_secs: Option<u64>,
}

/// A checked policy. The default admits everyone the authorized principals
/// file admits, from anywhere, at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    principals_allow: Option<BTreeSet<String>>,
    principals_deny: BTreeSet<String>,
    sources_allow: Option<Vec<IpNet>>,
    sources_deny: Vec<IpNet>,
    rules: BTreeMap<String, Rule>,
}

/// The address a peer counts as: an IPv4-mapped IPv6 address is its IPv4
/// address, so `::ffff:10.0.0.1` meets the rules written for `10.0.0.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn matches(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

impl Policy {
    /// Reads and checks a policy file. Errors read
    /// `FILE:LINE: what is wrong` (the line of the key or value at fault),
    /// or `FILE: ...` when no line applies.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read policy {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| match e.line {
            Some(line) => format!("{}:{line}: {}", path.display(), e.reason),
            None => format!("{}: {}", path.display(), e.reason),
        })
    }

    /// Parses and checks policy text (see `config-examples/policy.toml`).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        file::parse(text)
    }

    /// The policy as canonical TOML, which [`Policy::parse`] reads back as
    /// an equal policy.
    pub fn to_toml(&self) -> Result<String, String> {
        file::to_toml(self)
    }

    /// Every network the policy names: the global lists, then each
    /// principal's sources.
    pub fn networks(&self) -> impl Iterator<Item = &IpNet> {
        let rules = self.rules.values().filter_map(|r| r.sources.as_ref());
        (self.sources_allow.iter().chain(rules))
            .flatten()
            .chain(&self.sources_deny)
    }

    /// The check made when a connection is accepted, before any
    /// cryptography: the global source lists.
    pub fn admit_source(&self, peer: IpAddr) -> Result<(), String> {
        let ip = canonical(peer);
        if matches(&self.sources_deny, ip) {
            return Err(format!("source {ip} is in sources.deny"));
        }
        if let Some(allow) = &self.sources_allow
            && !matches(allow, ip)
        {
            return Err(format!("source {ip} is not in sources.allow"));
        }
        Ok(())
    }

    /// The check made once the user is authenticated and again at every
    /// identity proof and every reload: may `principal`, connected from
    /// `peer`, go on at `now`?
    pub fn check(&self, principal: &str, peer: IpAddr, now: UnixTime) -> Result<(), Ended> {
        self.admit_source(peer).map_err(denied)?;
        if self.principals_deny.contains(principal) {
            return Err(denied(format!("principal {principal} is denied by policy")));
        }
        if let Some(allow) = &self.principals_allow
            && !allow.contains(principal)
        {
            return Err(denied(format!(
                "principal {principal} is not allowed by policy"
            )));
        }
        let Some(rule) = self.rules.get(principal) else {
            return Ok(());
        };
        let ip = canonical(peer);
        if let Some(nets) = &rule.sources
            && !matches(nets, ip)
        {
            return Err(denied(format!(
                "policy does not allow principal {principal} from {ip}"
            )));
        }
        if let Some(hours) = &rule.hours
            && !hours.iter().any(|h| h.contains(now))
        {
            return Err(denied(format!(
                "policy allows principal {principal} only during {} UTC",
                hours
                    .iter()
                    .map(|h| format!("{:02}:00-{:02}:00", h.start, h.end))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// Whether `principal` may log in to sshd as local `account`: one of its
    /// `accounts`, or by default only the account named like it.
    pub fn may_use(&self, principal: &str, account: &str) -> bool {
        match self.rules.get(principal).and_then(|r| r.accounts.as_ref()) {
            Some(accounts) => accounts.iter().any(|a| a == account),
            None => principal == account,
        }
    }

    /// The most concurrent sessions `principal` may hold.
    pub fn max_sessions(&self, principal: &str) -> Option<u32> {
        self.rules.get(principal).and_then(|r| r.max_sessions)
    }

    /// How many live sessions `principal` may hold, and what says so: its
    /// rule's `max_sessions`, else `default` (the proxy's
    /// `max_sessions_per_principal`). Never unlimited.
    pub fn session_cap(&self, principal: &str, default: u32) -> (u32, &'static str) {
        match self.max_sessions(principal) {
            Some(n) => (n, "the policy"),
            None => (default, "the proxy (max_sessions_per_principal)"),
        }
    }

    /// What a security key must assert for `principal` (see
    /// [`ztssh_proto::identity::SkPolicy`]).
    pub fn sk_policy(&self, principal: &str) -> ztssh_proto::identity::SkPolicy {
        let d = ztssh_proto::identity::SkPolicy::default();
        match self.rules.get(principal) {
            None => d,
            Some(r) => ztssh_proto::identity::SkPolicy {
                presence: r.require_presence.unwrap_or(d.presence),
                verification: r.require_verification.unwrap_or(d.verification),
                reverify_secs: r.reverify_interval_secs.or(d.reverify_secs),
            },
        }
    }

    /// One line for start-up logs and `check`.
    pub fn summary(&self) -> String {
        format!(
            "policy: principals {} allowed / {} denied, sources {} allowed / {} denied, {} per-principal rule(s)",
            self.principals_allow
                .as_ref()
                .map_or("any".to_owned(), |s| s.len().to_string()),
            self.principals_deny.len(),
            self.sources_allow
                .as_ref()
                .map_or("any".to_owned(), |s| s.len().to_string()),
            self.sources_deny.len(),
            self.rules.len()
        )
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host). Host
/// bits set under the prefix are refused: `10.0.0.1/8` is most likely a typo.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => {
            let (addr, len) = s.split_once('/').unwrap_or((s, ""));
            let addr: IpAddr = addr.parse().map_err(|_| {
                "expected an address with a prefix length, like 10.0.0.0/8 or 2001:db8::/32"
                    .to_owned()
            })?;
            if len.is_empty() && !s.contains('/') {
                IpNet::from(addr)
            } else {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                return Err(match len.parse::<u16>() {
                    Ok(n) => format!("prefix length {n} is longer than {max}"),
                    Err(_) => format!("prefix length {len:?} is not a number from 0 to {max}"),
                });
            }
        }
    };
    if net.trunc() != net {
        return Err(format!(
            "host bits are set below the /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    // A rule written for ::ffff:10.0.0.0/104 means 10.0.0.0/8: peers are
    // compared by their canonical address.
    Ok(match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net)
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    })
}

/// A refusal by the access policy.
fn denied(reason: String) -> Ended {
    Ended::new(EndKind::PolicyDenied, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Policy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Policy::load(&path).map_err(|e| e.replace(&path.display().to_string(), "policy.toml"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const NOON: UnixTime = 1_700_000_000 - 1_700_000_000 % 86_400 + 12 * 3600;

    #[test]
    fn security_key_rules_default_to_a_touch_at_login_only() {
        use ztssh_proto::identity::SkPolicy;
        let p = load(
            "[principal.alice]\nrequire_verification = true\nreverify_interval_secs = 3600\n\
             [principal.ci]\nrequire_presence = false\n",
        )
        .expect("policy");
        assert_eq!(
            p.sk_policy("alice"),
            SkPolicy {
                presence: true,
                verification: true,
                reverify_secs: Some(3600)
            }
        );
        assert_eq!(
            p.sk_policy("ci"),
            SkPolicy {
                presence: false,
                ..SkPolicy::default()
            }
        );
        assert_eq!(p.sk_policy("bob"), SkPolicy::default());
        assert_eq!(
            Policy::parse(&p.to_toml().expect("toml")).expect("again"),
            p
        );
    }

    #[test]
    fn accounts_default_to_the_principal_and_are_checked() {
        let p = load("[principal.alice]\naccounts = [\"alice\", \"deploy\"]\n[principal.bob]\nmax_sessions = 1\n")
            .expect("policy");
        assert!(p.may_use("alice", "deploy") && p.may_use("alice", "alice"));
        assert!(!p.may_use("alice", "root"));
        assert!(p.may_use("bob", "bob") && !p.may_use("bob", "deploy"));
        assert!(Policy::default().may_use("carol", "carol"));
        assert!(!Policy::default().may_use("carol", "root"));
        let e = load("[principal.alice]\n\naccounts = [\"ok\", \"-rf\"]\n").expect_err("bad name");
        assert!(
            e.starts_with(
                "policy.toml:3: principal.alice.accounts: \"-rf\" is not an account name"
            ),
            "{e}"
        );
        let e = load("[principal.alice]\naccounts = []\n").expect_err("empty");
        assert!(
            e.starts_with("policy.toml:2: principal.alice.accounts = [] allows no account"),
            "{e}"
        );
    }

    #[test]
    fn empty_policy_admits_everyone() {
        let p = load("").expect("empty policy");
        assert_eq!(p, Policy::default());
        assert!(p.check("alice", ip("203.0.113.9"), NOON).is_ok());
        assert!(p.admit_source(ip("2001:db8::1")).is_ok());
    }

    #[test]
    fn deny_beats_allow_for_sources_and_principals() {
        let p = load(
            r#"
[principals]
allow = ["alice", "bob"]
deny = ["bob"]
[sources]
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.66.0.0/16"]
"#,
        )
        .expect("policy");
        assert!(p.check("alice", ip("10.1.2.3"), NOON).is_ok());
        assert_eq!(
            p.check("bob", ip("10.1.2.3"), NOON)
                .map_err(|e| (e.kind, e.reason)),
            Err((
                EndKind::PolicyDenied,
                "principal bob is denied by policy".into()
            ))
        );
        assert_eq!(
            p.check("carol", ip("10.1.2.3"), NOON)
                .map_err(|e| (e.kind, e.reason)),
            Err((
                EndKind::PolicyDenied,
                "principal carol is not allowed by policy".into()
            ))
        );
        assert_eq!(
            p.admit_source(ip("10.66.1.1")),
            Err("source 10.66.1.1 is in sources.deny".into())
        );
        assert_eq!(
            p.admit_source(ip("192.0.2.1")),
            Err("source 192.0.2.1 is not in sources.allow".into())
        );
        assert!(p.admit_source(ip("2001:db8:5::7")).is_ok());
        assert!(p.admit_source(ip("2001:db9::7")).is_err());
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let p =
            load("[sources]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.9.9.9\"]\n").expect("policy");
        assert!(p.admit_source(ip("::ffff:10.1.2.3")).is_ok());
        assert_eq!(
            p.admit_source(ip("::ffff:10.9.9.9")),
            Err("source 10.9.9.9 is in sources.deny".into())
        );
        assert!(p.admit_source(ip("::ffff:192.0.2.1")).is_err());
        // A rule written in mapped form means the IPv4 network.
        let p = load("[sources]\ndeny = [\"::ffff:10.0.0.0/104\"]\n").expect("policy");
        assert!(p.admit_source(ip("10.3.3.3")).is_err());
        assert!(p.admit_source(ip("::ffff:10.3.3.3")).is_err());
        assert!(p.admit_source(ip("11.3.3.3")).is_ok());
    }

    #[test]
    fn per_principal_sources_sessions_and_hours() {
        let p = load(
            r#"
[principal.alice]
sources = ["192.0.2.0/24", "2001:db8:a::/48"]
max_sessions = 2
hours_utc = ["08-18"]

[principal.night]
hours_utc = ["22-06"]
"#,
        )
        .expect("policy");
        assert!(p.check("alice", ip("192.0.2.5"), NOON).is_ok());
        assert!(p.check("alice", ip("2001:db8:a::1"), NOON).is_ok());
        assert_eq!(
            p.check("alice", ip("198.51.100.1"), NOON)
                .map_err(|e| (e.kind, e.reason)),
            Err((
                EndKind::PolicyDenied,
                "policy does not allow principal alice from 198.51.100.1".into()
            ))
        );
        assert_eq!(
            p.check("alice", ip("192.0.2.5"), NOON + 7 * 3600)
                .map_err(|e| (e.kind, e.reason)),
            Err((
                EndKind::PolicyDenied,
                "policy allows principal alice only during 08:00-18:00 UTC".into()
            ))
        );
        assert!(p.check("alice", ip("192.0.2.5"), NOON - 4 * 3600).is_ok());
        assert!(p.check("alice", ip("192.0.2.5"), NOON - 5 * 3600).is_err());
        assert_eq!(p.max_sessions("alice"), Some(2));
        assert_eq!(p.max_sessions("bob"), None);
        // No principal is unlimited: without a rule, the proxy's default.
        assert_eq!(p.session_cap("alice", 64), (2, "the policy"));
        assert_eq!(
            p.session_cap("bob", 64),
            (64, "the proxy (max_sessions_per_principal)")
        );
        assert_eq!(
            Policy::default().session_cap("anyone", 64).0,
            64,
            "no policy file at all"
        );
        assert!(p.check("night", ip("192.0.2.5"), NOON).is_err());
        assert!(p.check("night", ip("192.0.2.5"), NOON + 11 * 3600).is_ok());
        assert!(p.check("night", ip("192.0.2.5"), NOON - 7 * 3600).is_ok());
        assert!(p.check("night", ip("192.0.2.5"), NOON - 6 * 3600).is_err());
    }

    #[test]
    fn mistakes_name_the_line_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "[sources]\nallow = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
                "policy.toml:4: sources.allow: \"10.0.0.0/33\" is not a network",
            ),
            (
                "[sources]\ndeny = [\"10.0.0.1/8\"]\n",
                "policy.toml:2: sources.deny: \"10.0.0.1/8\" is not a network: host bits are set below the /8 prefix; did you mean 10.0.0.0/8?",
            ),
            (
                "[principals]\ndeny = [\"al ice\"]\n",
                "policy.toml:2: principals.deny: \"al ice\"",
            ),
            (
                "\n[principal.alice]\nhours_utc = [\"8-8\"]\n",
                "policy.toml:3: principal.alice.hours_utc: \"8-8\" covers the whole day or none of it",
            ),
            (
                "[principal.alice]\nhours_utc = [\"9 to 5\"]\n",
                "policy.toml:2: principal.alice.hours_utc: \"9 to 5\" is not an hour range",
            ),
            (
                "[principal.alice]\n\nmax_sessions = 0\n",
                "policy.toml:3: principal.alice.max_sessions = 0 would lock alice out",
            ),
            (
                "[sources]\nallow = []\n",
                "policy.toml:2: sources.allow = [] admits nobody",
            ),
            (
                "[sources]\n\nallwo = [\"10.0.0.0/8\"]\n",
                "policy.toml:3: sources.allwo: unknown field `allwo`, expected `allow` or `deny`",
            ),
            (
                "[principal.bob]\nmax_sessions = \"two\"\n",
                "policy.toml:2: principal.bob.max_sessions: invalid type: string \"two\", expected u32",
            ),
            ("[sources\nallow = 1\n", "policy.toml:1: "),
            (
                "# \"10.0.0.1/8\" is wrong\n[principal.b]\nsources = [\"10.0.0.1/8\"]\n",
                "policy.toml:3: principal.b.sources: \"10.0.0.1/8\"",
            ),
            (
                "[principals]\nallow = [\"a\"]\n[sources]\nallow = 5\n",
                "policy.toml:4: sources.allow: invalid type",
            ),
        ];
        for (text, want) in cases {
            let got = load(text).expect_err(text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }

    #[test]
    fn hours_wrap_midnight_and_end_is_exclusive() {
        let h = Hours::parse("22-06").expect("hours");
        let at = |hour: u64| NOON - 12 * 3600 + hour * 3600;
        let inside: Vec<u64> = (0..24).filter(|&x| h.contains(at(x))).collect();
        assert_eq!(inside, vec![0, 1, 2, 3, 4, 5, 22, 23]);
        let h = Hours::parse("0-1").expect("hours");
        assert!(h.contains(at(0) + 3599));
        assert!(!h.contains(at(1)));
        assert!(Hours::parse("23-24").expect("to midnight").contains(at(23)));
        assert!(Hours::parse("0-24").is_err());
        assert!(Hours::parse("25-3").is_err());
    }
}
