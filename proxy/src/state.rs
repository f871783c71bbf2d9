//! The process-wide state every task shares ([`Shared`]): built once by
//! [`crate::server`], then read by the sessions, the reload task, the
//! revocation pull and the socket sshd's `AuthorizedKeysCommand` asks.
//!
//! It also holds the two tables of live sessions that belong to no one
//! task (the session writes them, [`crate::sshd`] reads them):
//!
//! - [`SourcePool`] gives each session its own loopback source address
//!   (from `upstream_source_range`), never one a live session holds.
//! - [`LiveKeys`] lists the live sessions: who, with which user key, from
//!   which source address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Bytes;
use ipnet::Ipv4Net;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admission::limits::{Limits, PrincipalSessions};
use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::trust::authority::Authority;
use ztssh_proto::cert::Serial;
use ztssh_proto::trust::Issued;

/// What every session and task shares.
pub struct Shared {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Static configuration and keys.
    pub cfg: Config,
    /// The live authority; replaced on reload.
    pub authority: watch::Receiver<Arc<Authority>>,
    /// Accept-time abuse limits and penalties.
    pub limits: Limits,
    /// Live sessions per principal.
    pub sessions: PrincipalSessions,
    /// One loopback source address per session (zero standing keys).
    pub sources: Option<SourcePool>,
    /// Live sessions and their keys, for sshd's `AuthorizedKeysCommand`.
    pub live_keys: LiveKeys,
    /// New sshd connections that sshd may still be logging in
    /// (`upstream_max_startups`): the proxy holds the next one back rather
    /// than let sshd's `MaxStartups` drop it.
    pub upstream_startups: std::sync::Arc<tokio::sync::Semaphore>,
    /// Cancelled when a shutdown's drain period has run out: every session
    /// still open then is ended with a TERMINATE that says so.
    pub stop_sessions: CancellationToken,
    /// The KRL last written to `user_ca_krl_cache` (or `user_ca_krl`), set
    /// by the reload task once the authority it went into is published:
    /// the file watch that the write sets off knows it without decoding.
    pub krl_kept: Mutex<Kept>,
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
    /// A pool over `net` (checked by [`crate::config::zsk::check_range`]).
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
    /// Every serial the session was issued, kept up to date at each
    /// renewal: sshd's lookup judges them against the list in force.
    pub serials: SerialLog,
    /// The OpenSSH user certificate that vouches for it now, if any (the
    /// login's, then each renewal's): its critical options and extensions
    /// become the key's options.
    pub user_cert: CertSlot,
    /// The workload token that vouches for it now, if it began with one
    /// (the login's, then each fresh one's).
    pub workload: TokenSlot,
}

/// A live session's credential that can be replaced while it runs (a
/// newer user certificate, a fresh workload token).
pub struct Slot<T>(Mutex<Option<Arc<T>>>);

/// A live session's user certificate, replaced when a newer one is taken.
pub type CertSlot = Slot<ztssh_proto::trust::usercert::UserCertVerified>;

/// A workload session's token, replaced when a fresh one is taken.
pub type TokenSlot = Slot<ztssh_proto::trust::workload::TokenVerified>;

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T> Slot<T> {
    /// A slot holding `value`.
    pub fn new(value: Option<Arc<T>>) -> Self {
        Self(Mutex::new(value))
    }

    /// The credential in force.
    pub fn get(&self) -> Option<Arc<T>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces it (a renewal).
    pub fn set(&self, value: Option<Arc<T>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }
}

/// A live session's serials as its core holds them ([`Issued`]): the
/// session serial, the current certificate's, then the earlier ones.
pub struct SerialLog(Mutex<Vec<Serial>>);

impl SerialLog {
    /// The serials of `issued`.
    pub fn new(issued: Issued<'_>) -> Self {
        Self(Mutex::new(Self::flat(issued)))
    }

    fn flat(issued: Issued<'_>) -> Vec<Serial> {
        [issued.session, issued.current]
            .into_iter()
            .chain(issued.earlier)
            .copied()
            .collect()
    }

    /// Replaces them with `issued` (after a renewal).
    pub fn set(&self, issued: Issued<'_>) {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.clear();
        v.extend(Self::flat(issued));
    }

    /// Runs `f` on them.
    pub fn with<R>(&self, f: impl FnOnce(Issued<'_>) -> R) -> R {
        let v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match v.as_slice() {
            [session, current, earlier @ ..] => f(Issued {
                session,
                current,
                earlier,
            }),
            // Never empty (made from an `Issued`); a session serial alone
            // is still judged.
            [only] => f(Issued::first(only)),
            [] => f(Issued::first(&Serial([0; 16]))),
        }
    }
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
    /// The session as listed (its serials are updated through it).
    pub session: Arc<LiveSession>,
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
        let session = Arc::new(s);
        self.map().insert(id.clone(), Arc::clone(&session));
        Listed {
            keys: self,
            id,
            session,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ssh_key::PublicKey {
        let data = ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([n; 32]));
        ssh_key::PublicKey::new(data, "")
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
            serials: SerialLog::new(Issued::first(&Serial([1; 16]))),
            user_cert: CertSlot::default(),
            workload: TokenSlot::default(),
        });
        assert_eq!(keys.snapshot().len(), 1);
        keys.remove("s1");
        assert!(keys.snapshot().is_empty());
        drop(guard);
        assert!(keys.snapshot().is_empty());
    }
}

/// The signed list the reload task last wrote to a cache file, and its version:
/// the file watch that the write itself sets off, and the next write's
/// look at what the cache holds, know those bytes again without verifying
/// and decoding the list once more (a list of 10,000 principals, or
/// 100,000 serials, costs tens of milliseconds each time). Bytes that
/// differ in any way are verified as ever.
#[derive(Clone, Default)]
pub struct Kept(Option<(Bytes, u64)>);

impl Kept {
    /// The version of `bytes`, if they are exactly the list last written.
    pub fn version_of(&self, bytes: &[u8]) -> Option<u64> {
        self.0
            .as_ref()
            .filter(|(pem, _)| pem.as_ref() == bytes)
            .map(|(_, v)| *v)
    }

    /// Remembers a list just written.
    pub fn wrote(&mut self, pem: &Bytes, version: u64) {
        self.0 = Some((pem.clone(), version));
    }
}
