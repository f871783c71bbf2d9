//! The half-open handshake table, fair between networks.
//!
//! Every pending handshake is counted in three nested networks: its source
//! (an IPv4 address or an IPv6 /64), a site (IPv4 /24, IPv6 /56) and a
//! block (IPv4 /16, IPv6 /48). Each has a cap. When the whole table is full,
//! the victim is the oldest handshake of the fullest source within the
//! fullest site within the fullest block: a flood from one network turns
//! over its own handshakes and cannot push out a user's from another.
//!
//! A connection whose network holds its cap waits in its source's queue
//! (first come, first served; at most `per_source` per source and `total`
//! in all) until a handshake of its networks ends and makes room, instead
//! of being closed: a burst of honest logins from one address goes through
//! `handshakes_per_source` at a time. Nothing is read from a waiting
//! connection, and the caller bounds the wait in time.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::admission::limits::{Refusal, lock};

/// A network a source is counted in: a masked address and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which of the three nested networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// IPv4 address, IPv6 /64.
    Source = 0,
    /// IPv4 /24, IPv6 /56.
    Site = 1,
    /// IPv4 /16, IPv6 /48.
    Block = 2,
}

fn mask(ip: IpAddr, len: u8) -> Prefix {
    let addr = match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    };
    Prefix { addr, len }
}

/// The source, site and block `ip` is counted in (an IPv4-mapped IPv6
/// address counts as IPv4).
pub fn prefixes(ip: IpAddr) -> [Prefix; 3] {
    let ip = ip.to_canonical();
    let lens = match ip {
        IpAddr::V4(_) => [32, 24, 16],
        IpAddr::V6(_) => [64, 56, 48],
    };
    lens.map(|len| mask(ip, len))
}

struct Pending {
    id: u64,
    nets: [Prefix; 3],
    evict: Arc<Notify>,
}

/// A connection waiting for room in the table.
struct Waiter {
    id: u64,
    nets: [Prefix; 3],
    grant: oneshot::Sender<HandshakeSlot>,
}

/// How many connections may wait for room: per source, and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCaps {
    /// Per source (IPv4 address, IPv6 /64).
    pub per_source: usize,
    /// In all.
    pub total: usize,
}

/// Handshakes in progress.
pub struct HalfOpen {
    cap: usize,
    caps: [usize; 3],
    queue_caps: QueueCaps,
    next_id: u64,
    /// Oldest first.
    queue: VecDeque<Pending>,
    /// Pending handshakes per network, all three levels in one map.
    counts: HashMap<Prefix, usize>,
    /// Connections waiting for room, per source, oldest first.
    waiting: HashMap<Prefix, VecDeque<Waiter>>,
    /// How many wait, in all.
    queued: usize,
}

/// The handshake that made room for a newer one.
#[derive(Debug, PartialEq, Eq)]
pub struct Evicted {
    /// Its source network.
    pub source: Prefix,
    /// How many handshakes its block held, itself included.
    pub block_held: usize,
}

impl HalfOpen {
    /// A table of `cap` handshakes; `caps` per source, site and block;
    /// `queue_caps` for the connections that wait for room.
    pub fn new(cap: usize, caps: [usize; 3], queue_caps: QueueCaps) -> Self {
        Self {
            cap,
            caps,
            queue_caps,
            next_id: 0,
            queue: VecDeque::new(),
            counts: HashMap::new(),
            waiting: HashMap::new(),
            queued: 0,
        }
    }

    fn count(&self, p: &Prefix) -> usize {
        self.counts.get(p).copied().unwrap_or(0)
    }

    /// Takes a place for a handshake from `ip`, evicting one when the table
    /// is full. Refused when one of `ip`'s networks holds its cap.
    fn insert(&mut self, ip: IpAddr) -> Result<(u64, Arc<Notify>, Option<Evicted>), Refusal> {
        let nets = prefixes(ip);
        self.blocked(&nets).map_or(Ok(()), Err)?;
        let evicted = if self.queue.len() >= self.cap {
            self.evict_one()
        } else {
            None
        };
        let (id, evict) = self.push(nets);
        Ok((id, evict, evicted))
    }

    /// Which cap, if any, keeps a handshake from `nets` out.
    fn blocked(&self, nets: &[Prefix; 3]) -> Option<Refusal> {
        let level = (0..3).find(|&l| self.count(&nets[l]) >= self.caps[l])?;
        Some(if level == Level::Source as usize {
            Refusal::SourceHandshakes
        } else {
            Refusal::NetworkHandshakes
        })
    }

    fn push(&mut self, nets: [Prefix; 3]) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let evict = Arc::new(Notify::new());
        for net in &nets {
            *self.counts.entry(*net).or_insert(0) += 1;
        }
        self.queue.push_back(Pending {
            id,
            nets,
            evict: Arc::clone(&evict),
        });
        (id, evict)
    }

    /// Puts a connection from `ip`, kept out by `why`, in its source's
    /// queue; refused with `why` when the queue is full.
    fn enqueue(
        &mut self,
        ip: IpAddr,
        why: Refusal,
    ) -> Result<(u64, Prefix, oneshot::Receiver<HandshakeSlot>), Refusal> {
        let nets = prefixes(ip);
        let source = nets[Level::Source as usize];
        let mine = self.waiting.get(&source).map_or(0, VecDeque::len);
        if mine >= self.queue_caps.per_source || self.queued >= self.queue_caps.total {
            return Err(why);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let (grant, rx) = oneshot::channel();
        self.waiting
            .entry(source)
            .or_default()
            .push_back(Waiter { id, nets, grant });
        self.queued += 1;
        Ok((id, source, rx))
    }

    /// Lets waiting connections in while there is room for them, oldest
    /// first within each source.
    fn promote(&mut self, table: &Arc<Mutex<HalfOpen>>) {
        if self.queued == 0 {
            return;
        }
        let sources: Vec<Prefix> = self.waiting.keys().copied().collect();
        for source in sources {
            while self.queue.len() < self.cap {
                let Some(q) = self.waiting.get_mut(&source) else {
                    break;
                };
                let fits = q.front().is_some_and(|w| {
                    let nets = w.nets;
                    (0..3).all(|l| self.counts.get(&nets[l]).copied().unwrap_or(0) < self.caps[l])
                });
                if !fits {
                    break;
                }
                let Some(w) = q.pop_front() else {
                    break;
                };
                if q.is_empty() {
                    self.waiting.remove(&source);
                }
                self.queued -= 1;
                let (id, evict) = self.push(w.nets);
                let slot = HandshakeSlot {
                    table: Some(Arc::clone(table)),
                    id,
                    evict,
                };
                if let Err(mut slot) = w.grant.send(slot) {
                    // It stopped waiting: the place goes to the next one.
                    slot.table = None;
                    self.remove(id);
                }
            }
        }
    }

    /// A waiting connection gave up (or was let in already).
    fn unqueue(&mut self, source: Prefix, id: u64) {
        let Some(q) = self.waiting.get_mut(&source) else {
            return;
        };
        if let Some(pos) = q.iter().position(|w| w.id == id) {
            q.remove(pos);
            self.queued -= 1;
        }
        if q.is_empty() {
            self.waiting.remove(&source);
        }
    }

    /// The oldest handshake of the fullest source in the fullest site in
    /// the fullest block.
    fn evict_one(&mut self) -> Option<Evicted> {
        let score = |p: &Pending| {
            let [s, si, b] = p.nets.map(|n| self.count(&n));
            (b, si, s)
        };
        let mut best: Option<(usize, (usize, usize, usize))> = None;
        for (i, p) in self.queue.iter().enumerate() {
            let sc = score(p);
            if best.is_none_or(|(_, top)| sc > top) {
                best = Some((i, sc));
            }
        }
        let (i, (block_held, _, _)) = best?;
        let gone = self.queue.remove(i)?;
        self.forget(&gone.nets);
        gone.evict.notify_one();
        Some(Evicted {
            source: gone.nets[Level::Source as usize],
            block_held,
        })
    }

    fn remove(&mut self, id: u64) {
        if let Some(pos) = self.queue.iter().position(|p| p.id == id)
            && let Some(gone) = self.queue.remove(pos)
        {
            self.forget(&gone.nets);
        }
    }

    fn forget(&mut self, nets: &[Prefix; 3]) {
        for net in nets {
            if let Some(n) = self.counts.get_mut(net) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(net);
                }
            }
        }
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no handshake is in progress.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Connections waiting for room.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

/// A slot in the half-open table, released on drop. `evicted` fires when a
/// newer connection took the slot.
pub struct HandshakeSlot {
    /// None only for a slot whose waiter was gone (released by hand).
    table: Option<Arc<Mutex<HalfOpen>>>,
    id: u64,
    evict: Arc<Notify>,
}

/// A place in a source's queue for the half-open table; leaves the queue
/// on drop.
pub struct QueueTicket {
    table: Arc<Mutex<HalfOpen>>,
    id: u64,
    source: Prefix,
    grant: oneshot::Receiver<HandshakeSlot>,
}

impl QueueTicket {
    /// Waits at most `limit` for a slot.
    pub async fn wait(mut self, limit: Duration) -> Option<HandshakeSlot> {
        match tokio::time::timeout(limit, &mut self.grant).await {
            Ok(Ok(slot)) => Some(slot),
            _ => None,
        }
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        lock(&self.table).unqueue(self.source, self.id);
    }
}

/// What [`admit`] gives a connection: a slot now, or a place in line.
pub enum Entry {
    /// A slot, and the older handshake evicted to make room, if one was.
    Ready(HandshakeSlot, Option<Evicted>),
    /// A place in its source's queue.
    Queued(QueueTicket),
}

impl HandshakeSlot {
    /// Completes when this handshake has been evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            let mut t = lock(&table);
            t.remove(self.id);
            t.promote(&table);
        }
    }
}

/// Takes a slot in `table` for a handshake from `ip`, or a place in its
/// source's queue when one of its networks holds its cap (behind any
/// connection of the same source already waiting). Refused when the queue
/// is full too.
pub fn admit(table: &Arc<Mutex<HalfOpen>>, ip: IpAddr) -> Result<Entry, Refusal> {
    let mut t = lock(table);
    let source = prefixes(ip)[Level::Source as usize];
    let inserted = match t.waiting.get(&source) {
        Some(q) if !q.is_empty() => Err(Refusal::SourceHandshakes),
        _ => t.insert(ip),
    };
    match inserted {
        Ok((id, evict, evicted)) => {
            let slot = HandshakeSlot {
                table: Some(Arc::clone(table)),
                id,
                evict,
            };
            Ok(Entry::Ready(slot, evicted))
        }
        Err(why) => {
            let (id, source, grant) = t.enqueue(ip, why)?;
            Ok(Entry::Queued(QueueTicket {
                table: Arc::clone(table),
                id,
                source,
                grant,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const NO_QUEUE: QueueCaps = QueueCaps {
        per_source: 0,
        total: 0,
    };

    fn table(cap: usize, caps: [usize; 3]) -> Arc<Mutex<HalfOpen>> {
        Arc::new(Mutex::new(HalfOpen::new(cap, caps, NO_QUEUE)))
    }

    /// A slot now; these tables queue nothing.
    fn admit(
        t: &Arc<Mutex<HalfOpen>>,
        ip: IpAddr,
    ) -> Result<(HandshakeSlot, Option<Evicted>), Refusal> {
        match super::admit(t, ip)? {
            Entry::Ready(slot, evicted) => Ok((slot, evicted)),
            Entry::Queued(_) => panic!("queued without a queue"),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_burst_from_one_source_waits_its_turn_instead_of_being_refused() {
        let caps = QueueCaps {
            per_source: 3,
            total: 4,
        };
        let t = Arc::new(Mutex::new(HalfOpen::new(64, [2, 8, 8], caps)));
        let src = ip("192.0.2.1");
        let Ok(Entry::Ready(first, _)) = super::admit(&t, src) else {
            panic!("first")
        };
        let Ok(Entry::Ready(second, _)) = super::admit(&t, src) else {
            panic!("second")
        };
        let mut line: Vec<QueueTicket> = (0..3)
            .map(|i| match super::admit(&t, src) {
                Ok(Entry::Queued(q)) => q,
                _ => panic!("waiter {i}"),
            })
            .collect();
        // The source's queue is full: the next is refused, naming the cap.
        assert!(matches!(
            super::admit(&t, src),
            Err(Refusal::SourceHandshakes)
        ));
        assert_eq!(lock(&t).queued(), 3);
        // Another source still gets a slot at once, and may wait too, up
        // to the total.
        assert!(matches!(
            super::admit(&t, ip("198.51.100.1")),
            Ok(Entry::Ready(..))
        ));
        let rt = rt();
        // A finished handshake lets the oldest waiter in, and only it.
        drop(first);
        let head = line.remove(0);
        let slot = rt
            .block_on(head.wait(Duration::from_secs(1)))
            .expect("the oldest waiter got the slot");
        assert_eq!(lock(&t).len(), 2);
        assert_eq!(lock(&t).queued(), 2);
        // A waiter that gives up leaves no trace; one whose deadline
        // passes gets nothing.
        let gone = line.remove(0);
        drop(gone);
        assert_eq!(lock(&t).queued(), 1);
        let last = line.remove(0);
        assert!(rt.block_on(last.wait(Duration::from_millis(200))).is_none());
        assert_eq!(lock(&t).queued(), 0);
        drop((slot, second));
        assert_eq!(lock(&t).len(), 0);
    }

    #[test]
    fn a_slot_granted_to_a_waiter_that_left_goes_back() {
        let caps = QueueCaps {
            per_source: 4,
            total: 4,
        };
        let t = Arc::new(Mutex::new(HalfOpen::new(64, [1, 8, 8], caps)));
        let src = ip("192.0.2.1");
        let Ok(Entry::Ready(first, _)) = super::admit(&t, src) else {
            panic!("first")
        };
        let Ok(Entry::Queued(mut a)) = super::admit(&t, src) else {
            panic!("a")
        };
        let Ok(Entry::Queued(b)) = super::admit(&t, src) else {
            panic!("b")
        };
        // `a` stops listening without leaving the line (its receiver is
        // gone, its ticket's drop not yet run).
        a.grant.close();
        drop(first);
        // The slot went past `a` to `b`.
        let rt = rt();
        assert!(rt.block_on(b.wait(Duration::from_secs(1))).is_some());
        drop(a);
        assert_eq!(lock(&t).len(), 0);
        assert_eq!(lock(&t).queued(), 0);
    }

    fn is_evicted(slot: &HandshakeSlot) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        // A notification stored by notify_one completes at once; an
        // un-notified slot would wait forever, so poll it exactly once.
        rt.block_on(async {
            let fut = slot.evicted();
            tokio::pin!(fut);
            poll_once(fut.as_mut()).await
        })
    }

    async fn poll_once<F: std::future::Future<Output = ()>>(mut f: std::pin::Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_ready())).await
    }

    #[test]
    fn sources_sites_and_blocks_nest() {
        let [s, si, b] = prefixes(ip("2001:db8:aa:bbcc:1:2:3:4"));
        assert_eq!(s.to_string(), "2001:db8:aa:bbcc::/64");
        assert_eq!(si.to_string(), "2001:db8:aa:bb00::/56");
        assert_eq!(b.to_string(), "2001:db8:aa::/48");
        let [s, si, b] = prefixes(ip("::ffff:192.0.2.77"));
        assert_eq!(s.to_string(), "192.0.2.77/32");
        assert_eq!(si.to_string(), "192.0.2.0/24");
        assert_eq!(b.to_string(), "192.0.0.0/16");
    }

    #[test]
    fn a_slash_56_flood_cannot_evict_a_handshake_from_another_prefix() {
        // Caps as wide as the table: only the eviction rule protects.
        let t = table(16, [16, 16, 16]);
        let (user, none) = admit(&t, ip("2001:db8:1:1::7")).expect("user");
        assert_eq!(none, None);
        // 105 /64s of one /56, far more than the table holds.
        let mut flood = Vec::new();
        for i in 0..105u16 {
            let a = ip(&format!("2001:db8:2:{:x}::1", 0x4400 + i));
            let (slot, evicted) = admit(&t, a).expect("flood");
            if let Some(e) = evicted {
                assert!(
                    e.source.to_string().starts_with("2001:db8:2:44"),
                    "evicted {e:?}"
                );
            }
            flood.push(slot);
        }
        assert!(!is_evicted(&user), "the user's handshake was evicted");
        assert_eq!(lock(&t).len(), 16);
        // The flood evicted its own, oldest first.
        assert!(is_evicted(&flood[0]));
        assert!(!is_evicted(&flood[104]));
    }

    #[test]
    fn the_fullest_network_is_evicted_from_even_when_newer() {
        let t = table(4, [4, 4, 4]);
        let (a, _) = admit(&t, ip("192.0.2.1")).expect("a");
        let (b, _) = admit(&t, ip("198.51.100.1")).expect("b");
        let (c, _) = admit(&t, ip("198.51.100.2")).expect("c");
        let (d, _) = admit(&t, ip("203.0.113.1")).expect("d");
        // 198.51.0.0/16 holds two: the older of its two goes.
        let (_e, ev) = admit(&t, ip("203.0.113.9")).expect("e");
        assert_eq!(
            ev.map(|e| e.source.to_string()),
            Some("198.51.100.1/32".into())
        );
        assert!(is_evicted(&b));
        assert!(!is_evicted(&a) && !is_evicted(&c) && !is_evicted(&d));
        // Now 203.0.0.0/16 holds two and is the fullest.
        let (_f, ev) = admit(&t, ip("192.0.2.2")).expect("f");
        assert_eq!(
            ev.map(|e| e.source.to_string()),
            Some("203.0.113.1/32".into())
        );
        assert!(is_evicted(&d));
    }

    #[test]
    fn each_network_level_has_its_cap() {
        let t = table(100, [2, 3, 4]);
        let mut held = Vec::new();
        held.push(admit(&t, ip("2001:db8:1:100::1")).expect("1"));
        held.push(admit(&t, ip("2001:db8:1:100::2")).expect("2"));
        assert!(matches!(
            admit(&t, ip("2001:db8:1:100::3")),
            Err(Refusal::SourceHandshakes)
        ));
        held.push(admit(&t, ip("2001:db8:1:101::1")).expect("3"));
        // The /56 2001:db8:1:100::/56 holds 3.
        assert!(matches!(
            admit(&t, ip("2001:db8:1:1ff::1")),
            Err(Refusal::NetworkHandshakes)
        ));
        held.push(admit(&t, ip("2001:db8:1:200::1")).expect("4"));
        // The /48 holds 4.
        assert!(matches!(
            admit(&t, ip("2001:db8:1:300::1")),
            Err(Refusal::NetworkHandshakes)
        ));
        assert!(admit(&t, ip("2001:db8:2::1")).is_ok());
        // Releasing frees every level.
        held.clear();
        assert!(lock(&t).counts.is_empty());
        assert_eq!(lock(&t).len(), 0);
    }

    #[test]
    fn evicted_and_released_slots_leave_no_counts() {
        let t = table(2, [2, 2, 2]);
        let (a, _) = admit(&t, ip("192.0.2.1")).expect("a");
        let (b, _) = admit(&t, ip("198.51.100.1")).expect("b");
        let (c, ev) = admit(&t, ip("203.0.113.1")).expect("c");
        assert!(ev.is_some() && is_evicted(&a));
        drop(a);
        assert_eq!(lock(&t).len(), 2);
        drop((b, c));
        assert_eq!(lock(&t).len(), 0);
        assert!(lock(&t).counts.is_empty());
    }
}
