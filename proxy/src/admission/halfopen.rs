//! The half-open handshake table, fair between networks.
//!
//! Every pending handshake is counted in three nested networks: its source
//! (an IPv4 address or an IPv6 /64), a site (IPv4 /24, IPv6 /56) and a
//! block (IPv4 /16, IPv6 /48). Each has a cap. When the whole table is full,
//! the victim is the oldest handshake of the fullest source within the
//! fullest site within the fullest block: a flood from one network turns
//! over its own handshakes and cannot push out a user's from another.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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

/// Handshakes in progress.
pub struct HalfOpen {
    cap: usize,
    caps: [usize; 3],
    next_id: u64,
    /// Oldest first.
    queue: VecDeque<Pending>,
    /// Pending handshakes per network, all three levels in one map.
    counts: HashMap<Prefix, usize>,
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
    /// A table of `cap` handshakes; `caps` per source, site and block.
    pub fn new(cap: usize, caps: [usize; 3]) -> Self {
        Self {
            cap,
            caps,
            next_id: 0,
            queue: VecDeque::new(),
            counts: HashMap::new(),
        }
    }

    fn count(&self, p: &Prefix) -> usize {
        self.counts.get(p).copied().unwrap_or(0)
    }

    /// Takes a place for a handshake from `ip`, evicting one when the table
    /// is full. Refused when one of `ip`'s networks holds its cap.
    fn insert(&mut self, ip: IpAddr) -> Result<(u64, Arc<Notify>, Option<Evicted>), Refusal> {
        let nets = prefixes(ip);
        for (level, net) in nets.iter().enumerate() {
            if self.count(net) >= self.caps[level] {
                return Err(if level == Level::Source as usize {
                    Refusal::SourceHandshakes
                } else {
                    Refusal::NetworkHandshakes
                });
            }
        }
        let evicted = if self.queue.len() >= self.cap {
            self.evict_one()
        } else {
            None
        };
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
        Ok((id, evict, evicted))
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
}

/// A slot in the half-open table, released on drop. `evicted` fires when a
/// newer connection took the slot.
pub struct HandshakeSlot {
    table: Arc<Mutex<HalfOpen>>,
    id: u64,
    evict: Arc<Notify>,
}

impl HandshakeSlot {
    /// Completes when this handshake has been evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

/// Takes a slot in `table` for a handshake from `ip`.
pub fn admit(
    table: &Arc<Mutex<HalfOpen>>,
    ip: IpAddr,
) -> Result<(HandshakeSlot, Option<Evicted>), Refusal> {
    let (id, evict, evicted) = lock(table).insert(ip)?;
    let slot = HandshakeSlot {
        table: Arc::clone(table),
        id,
        evict,
    };
    Ok((slot, evicted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn table(cap: usize, caps: [usize; 3]) -> Arc<Mutex<HalfOpen>> {
        Arc::new(Mutex::new(HalfOpen::new(cap, caps)))
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
