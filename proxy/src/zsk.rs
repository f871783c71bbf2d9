//! Zero standing keys: sshd accepts a user key only on the connection of a
//! live, authorized ztssh session.
//!
//! - [`SourcePool`] gives each session its own loopback source address
//!   (from `upstream_source_range`), never one a live session holds.
//! - [`LiveKeys`] lists the live sessions: who, with which user key, from
//!   which source address.
//! - [`answer`] decides what sshd's `AuthorizedKeysCommand` is told for one
//!   account: `from="<that session's source address>" <key>` for each live
//!   session whose principal is still authorized and may use the account.
//!
//! The socket that serves the answers is in [`crate::akc`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use ztssh_proto::identity::Authority as _;
use ztssh_proto::time::UnixTime;

use crate::authority::Authority;

/// Longest socket path the kernel takes (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks `upstream_source_range`: an IPv4 network inside 127.0.0.0/8,
/// without 127.0.0.1, with an address for every possible connection.
pub fn check_range(
    range: &str,
    upstream: SocketAddr,
    max_connections: usize,
) -> Result<Ipv4Net, String> {
    let key = format!("upstream_source_range = {range:?}");
    let net: Ipv4Net = match range.parse() {
        Ok(n) => n,
        Err(_) if range.parse::<ipnet::Ipv6Net>().is_ok() || range.contains(':') => {
            return Err(format!(
                "{key}: IPv6 has a single loopback address (::1), which cannot give each session one of its own; \
                 use an IPv4 range inside 127.0.0.0/8 such as \"127.77.0.0/16\""
            ));
        }
        Err(_) => {
            return Err(format!(
                "{key}: expected an IPv4 network with a prefix length, such as \"127.77.0.0/16\""
            ));
        }
    };
    if net.trunc() != net {
        return Err(format!(
            "{key}: host bits are set below the /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    let loopback = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map_err(|e| e.to_string())?;
    if !loopback.contains(&net) {
        return Err(format!(
            "{key}: must be inside 127.0.0.0/8, which Linux routes to the loopback interface"
        ));
    }
    if net.contains(&Ipv4Addr::LOCALHOST) {
        return Err(format!(
            "{key}: contains 127.0.0.1, the address every local process connects from; \
             a key bound to it would work for anyone on this host. Use a range such as \"127.77.0.0/16\""
        ));
    }
    if !(upstream.ip().is_loopback() && upstream.is_ipv4()) {
        return Err(format!(
            "{key}: upstream = {upstream} must then be an IPv4 loopback address (sshd on 127.0.0.1, say)"
        ));
    }
    let usable = usable_addresses(net);
    if usable < max_connections as u64 {
        return Err(format!(
            "{key}: has {usable} usable address(es), fewer than max_connections ({max_connections}); \
             every live session needs one. Use a larger range, such as a /16"
        ));
    }
    Ok(net)
}

fn usable_addresses(net: Ipv4Net) -> u64 {
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    // 127.0.0.0 and 127.255.255.255 are the loopback network's own
    // network and broadcast addresses.
    let reserved = [
        Ipv4Addr::new(127, 0, 0, 0),
        Ipv4Addr::new(127, 255, 255, 255),
    ];
    size - reserved.iter().filter(|a| net.contains(*a)).count() as u64
}

/// Checks `authorized_keys_socket`: absolute, short enough, in a
/// directory that exists.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let key = format!("authorized_keys_socket = {:?}", path.display().to_string());
    if !path.is_absolute() {
        return Err(format!(
            "{key}: must be an absolute path (sshd runs the command from /)"
        ));
    }
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{key}: longer than {MAX_SOCKET_PATH} bytes, the most a Unix socket path may have"
        ));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(()),
        Some(dir) => Err(format!(
            "{key}: directory {} does not exist; create it (root-owned, mode 0755; under systemd, RuntimeDirectory=ztssh)",
            dir.display()
        )),
        None => Err(format!("{key}: has no directory")),
    }
}

/// Whether `name` can be a local account name: 1 to 32 of `A-Z a-z 0-9 . _ -`,
/// not starting with `-` (what useradd accepts, less a trailing `$`).
pub fn check_account(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 32 || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} is not an account name (1-32 of A-Z a-z 0-9 . _ -, not starting with -)"
        ));
    }
    Ok(())
}

/// Loopback source addresses for sessions, one per live session.
pub struct SourcePool {
    net: Ipv4Net,
    state: Mutex<PoolState>,
}

struct PoolState {
    /// Where the next search starts: addresses are handed out in turn, so
    /// a freed address comes back as late as possible.
    next: u32,
    in_use: HashSet<u32>,
}

/// One session's source address; returned to the pool when dropped.
pub struct SourceLease<'a> {
    pool: &'a SourcePool,
    offset: u32,
    /// The address.
    pub addr: Ipv4Addr,
}

impl SourcePool {
    /// A pool over `net` (checked by [`check_range`]).
    pub fn new(net: Ipv4Net) -> Self {
        Self {
            net,
            state: Mutex::new(PoolState {
                next: 0,
                in_use: HashSet::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An address no live session holds, or `None` when every one is taken.
    /// The search is bounded: among any `live + 4` addresses in a row, one
    /// is neither held nor reserved.
    pub fn lease(&self) -> Option<SourceLease<'_>> {
        let size = u32::try_from(1u64 << (32 - u32::from(self.net.prefix_len()))).ok()?;
        let base = u32::from(self.net.network());
        let mut st = self.state();
        let tries = st.in_use.len().saturating_add(4).min(size as usize);
        for i in 0..tries as u32 {
            let offset = (st.next.wrapping_add(i)) % size;
            let addr = Ipv4Addr::from(base.wrapping_add(offset));
            let reserved = addr == Ipv4Addr::new(127, 0, 0, 0)
                || addr == Ipv4Addr::new(127, 255, 255, 255)
                || addr == Ipv4Addr::LOCALHOST;
            if reserved || st.in_use.contains(&offset) {
                continue;
            }
            st.in_use.insert(offset);
            st.next = (offset + 1) % size;
            return Some(SourceLease {
                pool: self,
                offset,
                addr,
            });
        }
        None
    }

    /// Addresses held by live sessions.
    pub fn in_use(&self) -> usize {
        self.state().in_use.len()
    }
}

impl Drop for SourceLease<'_> {
    fn drop(&mut self) {
        self.pool.state().in_use.remove(&self.offset);
    }
}

/// A live session as sshd's command sees it.
pub struct LiveSession {
    /// The session id of the audit trail.
    pub id: String,
    /// The principal it proved.
    pub principal: String,
    /// The user key it proved.
    pub user_key: ssh_key::PublicKey,
    /// The client's real address (policy rules depend on it).
    pub peer: IpAddr,
    /// The source address of its connection to sshd.
    pub source: Ipv4Addr,
    /// The source port of that connection (matched against sshd's `%C`).
    pub source_port: u16,
}

/// Every live session that connected to sshd from an address of its own.
#[derive(Default)]
pub struct LiveKeys {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
}

/// Removes its session from [`LiveKeys`] when dropped.
pub struct Listed<'a> {
    keys: &'a LiveKeys,
    id: String,
}

impl LiveKeys {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lists `s` until the returned guard drops (or [`LiveKeys::remove`]).
    pub fn insert(&self, s: LiveSession) -> Listed<'_> {
        let id = s.id.clone();
        self.map().insert(id.clone(), Arc::new(s));
        Listed { keys: self, id }
    }

    /// Unlists session `id` (at once when the session is ended).
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// The sessions listed now.
    pub fn snapshot(&self) -> Vec<Arc<LiveSession>> {
        self.map().values().cloned().collect()
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.keys.remove(&self.id);
    }
}

/// What sshd is told for one account, and the sessions refused it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// authorized_keys lines: `from="ADDR" TYPE BASE64`.
    pub lines: Vec<String>,
    /// Sessions holding the offered key (or any key, when none was
    /// offered) that may not log in as the account: (session id, principal,
    /// reason).
    pub refused: Vec<(String, String, String)>,
}

/// The keys that may log in as `account` now: those of live sessions whose
/// principal is still authorized (licence, revocation list, authorized
/// principals, policy) and may use the account. With `offered` (sshd's `%k`),
/// only sessions holding that key are considered; with `client` (from
/// sshd's `%C`), only the session whose connection to sshd that is.
pub fn answer(
    sessions: &[Arc<LiveSession>],
    account: &str,
    offered: Option<&ssh_key::public::KeyData>,
    client: Option<SocketAddr>,
    authority: &Authority,
    now: UnixTime,
) -> Answer {
    let mut out = Answer::default();
    let mut sorted: Vec<&Arc<LiveSession>> = sessions.iter().collect();
    sorted.sort_by_key(|s| s.source);
    for s in sorted {
        if offered.is_some_and(|k| k != s.user_key.key_data()) {
            continue;
        }
        if client.is_some_and(|c| c != SocketAddr::new(IpAddr::V4(s.source), s.source_port)) {
            continue;
        }
        let verdict = authority
            .at(s.peer)
            .check(&s.principal, &s.user_key, None, now)
            .map_err(|e| e.reason.clone())
            .and_then(|()| {
                if authority.policy.may_use(&s.principal, account) {
                    Ok(())
                } else {
                    Err(format!(
                        "principal {} may not use account {account}",
                        s.principal
                    ))
                }
            });
        match verdict {
            Ok(()) => {
                let key = ssh_key::PublicKey::new(s.user_key.key_data().clone(), "");
                match key.to_openssh() {
                    Ok(k) => out.lines.push(format!("from=\"{}\" {k}", s.source)),
                    Err(e) => out.refused.push((
                        s.id.clone(),
                        s.principal.clone(),
                        format!("cannot encode key: {e}"),
                    )),
                }
            }
            Err(reason) => out
                .refused
                .push((s.id.clone(), s.principal.clone(), reason)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use getrandom::SysRng;
    use rand_core::UnwrapErr;

    fn up() -> SocketAddr {
        "127.0.0.1:22".parse().expect("addr")
    }

    #[test]
    fn ranges_are_checked_with_reasons() {
        assert!(check_range("127.77.0.0/16", up(), 1024).is_ok());
        let cases = [
            ("10.0.0.0/8", "inside 127.0.0.0/8"),
            ("127.0.0.0/24", "contains 127.0.0.1"),
            ("127.77.0.1/16", "did you mean 127.77.0.0/16"),
            ("::1/128", "IPv6 has a single loopback address"),
            ("loopback", "expected an IPv4 network"),
            ("127.77.0.0/24", "fewer than max_connections (1024)"),
        ];
        for (range, want) in cases {
            let got = check_range(range, up(), 1024).expect_err(range);
            assert!(got.contains(want), "{range}: {got}");
        }
        let far = "192.0.2.1:22".parse().expect("addr");
        assert!(
            check_range("127.77.0.0/16", far, 8)
                .expect_err("remote")
                .contains("IPv4 loopback")
        );
        // A /32 is one address: enough for one connection only.
        assert!(check_range("127.77.0.9/32", up(), 1).is_ok());
        assert!(check_range("127.77.0.9/32", up(), 2).is_err());
    }

    #[test]
    fn leases_never_share_an_address_and_come_back_late() {
        let pool = SourcePool::new("127.77.0.0/30".parse().expect("net"));
        let a = pool.lease().expect("a");
        let b = pool.lease().expect("b");
        let c = pool.lease().expect("c");
        let d = pool.lease().expect("d");
        let all: HashSet<Ipv4Addr> = [a.addr, b.addr, c.addr, d.addr].into();
        assert_eq!(all.len(), 4);
        assert!(pool.lease().is_none(), "four addresses, four sessions");
        let freed = b.addr;
        drop(b);
        assert_eq!(pool.lease().expect("again").addr, freed);
        drop((a, c, d));
        assert_eq!(pool.in_use(), 0, "leases returned on drop");
    }

    #[test]
    fn reserved_addresses_are_never_handed_out() {
        let pool = SourcePool::new("127.255.255.254/31".parse().expect("net"));
        let a = pool.lease().expect("one usable");
        assert_eq!(a.addr, Ipv4Addr::new(127, 255, 255, 254));
        assert!(pool.lease().is_none());
    }

    fn key(n: u8) -> ssh_key::PublicKey {
        let data = ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([n; 32]));
        ssh_key::PublicKey::new(data, "")
    }

    fn authority(dir: &Path, principals: &str, policy: &str) -> Authority {
        use ztssh_proto::cert::{LicenceBody, Serial};
        use ztssh_proto::keys::SigningKey;
        let root = SigningKey::generate(&mut UnwrapErr(SysRng));
        let body = LicenceBody {
            serial: Serial::random(&mut UnwrapErr(SysRng)),
            server_id: "web1".into(),
            hostnames: vec!["web1".into()],
            subca_key: SigningKey::generate(&mut UnwrapErr(SysRng)).public(),
            noise_key: [7; 32],
            not_before: NOW - 60,
            not_after: NOW + 3600,
            issuer: root.public(),
        };
        let licence = body
            .sign(&root)
            .expect("sign")
            .verify(&root.public(), NOW)
            .expect("verify");
        let (ap, pp) = (dir.join("principals"), dir.join("policy.toml"));
        std::fs::write(&ap, principals).expect("principals");
        std::fs::write(&pp, policy).expect("policy");
        Authority {
            licence,
            crl: None,
            authorized: crate::authz::Authorized::load(&ap).expect("principals"),
            policy: Arc::new(crate::policy::Policy::load(&pp).expect("policy")),
            staleness: Default::default(),
        }
    }

    const NOW: UnixTime = 1_800_000_000;

    fn live(id: &str, principal: &str, k: u8, last: u8) -> Arc<LiveSession> {
        Arc::new(LiveSession {
            id: id.into(),
            principal: principal.into(),
            user_key: key(k),
            peer: "192.0.2.1".parse().expect("ip"),
            source: Ipv4Addr::new(127, 77, 0, last),
            source_port: 40_000 + u16::from(last),
        })
    }

    #[test]
    fn answers_only_live_authorized_sessions_for_their_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = |p: &str, k: u8| format!("{p} {}\n", key(k).to_openssh().expect("openssh"));
        let principals = format!(
            "{}{}{}",
            line("alice", 1),
            line("bob", 2),
            line("mallory", 4)
        );
        let a = authority(
            dir.path(),
            &principals,
            "[principals]\ndeny = [\"mallory\"]\n[principal.alice]\naccounts = [\"alice\", \"deploy\"]\n",
        );
        let sessions = [
            live("s1", "alice", 1, 5),
            live("s2", "bob", 2, 6),
            live("s3", "carol", 3, 7),
            live("s4", "mallory", 4, 8),
        ];
        let alice_line = format!(
            "from=\"127.77.0.5\" {}",
            key(1).to_openssh().expect("openssh")
        );
        let got = answer(&sessions, "deploy", None, None, &a, NOW);
        assert_eq!(got.lines, vec![alice_line.clone()]);
        let why: Vec<(&str, &str)> = got
            .refused
            .iter()
            .map(|(id, _, r)| (id.as_str(), r.as_str()))
            .collect();
        assert!(
            why.contains(&("s2", "principal bob may not use account deploy")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|(id, r)| *id == "s3" && r.contains("not authorized")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|(id, r)| *id == "s4" && r.contains("denied by policy")),
            "{why:?}"
        );
        // By default a principal may use only its own name.
        let bob_line = format!(
            "from=\"127.77.0.6\" {}",
            key(2).to_openssh().expect("openssh")
        );
        assert_eq!(
            answer(&sessions, "bob", None, None, &a, NOW).lines,
            vec![bob_line]
        );
        // With the offered key (%k), only sessions holding it count.
        let got = answer(&sessions, "alice", Some(key(2).key_data()), None, &a, NOW);
        assert!(got.lines.is_empty());
        assert_eq!(got.refused.len(), 1);
        assert_eq!(
            answer(&sessions, "alice", Some(key(1).key_data()), None, &a, NOW).lines,
            vec![alice_line.clone()]
        );
        assert!(
            answer(&sessions, "root", None, None, &a, NOW)
                .lines
                .is_empty()
        );
        // With %C (sshd 9.4+), only the session on that connection counts:
        // its address and its port.
        let on = |c: &str| {
            answer(
                &sessions,
                "alice",
                None,
                Some(c.parse().expect("addr")),
                &a,
                NOW,
            )
        };
        assert_eq!(on("127.77.0.5:40005").lines, vec![alice_line]);
        assert!(on("127.77.0.5:40006").lines.is_empty(), "another port");
        assert!(on("127.77.0.6:40005").lines.is_empty(), "another address");
        assert!(on("127.0.0.1:40005").lines.is_empty(), "a local process");
        // An expired licence vouches for nobody.
        assert!(
            answer(&sessions, "deploy", None, None, &a, NOW + 7200)
                .lines
                .is_empty()
        );
    }

    #[test]
    fn unlisted_sessions_are_gone_at_once() {
        let keys = LiveKeys::default();
        let guard = keys.insert(LiveSession {
            id: "s1".into(),
            principal: "alice".into(),
            user_key: key(1),
            peer: "192.0.2.1".parse().expect("ip"),
            source: Ipv4Addr::new(127, 77, 0, 5),
            source_port: 40_005,
        });
        assert_eq!(keys.snapshot().len(), 1);
        keys.remove("s1");
        assert!(keys.snapshot().is_empty());
        drop(guard);
        assert!(keys.snapshot().is_empty());
    }

    #[test]
    fn account_names() {
        for ok in ["alice", "deploy", "svc_web-1", "a.b"] {
            assert!(check_account(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-rf", "al ice", "root\n", "a/b", &"x".repeat(33)] {
            assert!(check_account(bad).is_err(), "{bad:?}");
        }
    }
}
