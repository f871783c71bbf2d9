//! Where to connect for `ssh HOST` (ssh's `%h` and `%p`), first rule that
//! applies:
//!
//! 1. `connect` (flag, `ZTSSH_CONNECT` or sidecar.toml): that address.
//! 2. HOST is an IP address: that address and `%p`.
//! 3. `%p` is not 22 (a `Port` line or `-p`): HOST's addresses and `%p`.
//!    An explicit port always wins over DNS.
//! 4. `%p` is 22 and `srv_discovery` is on (the default): the SRV record
//!    `_ztssh._tcp.HOST` names the proxies' hosts and ports, tried in the
//!    order RFC 2782 gives (lowest priority first, then by weight). A
//!    name with no SRV record, or a DNS that does not answer within
//!    `dns_timeout_secs`, falls back to rule 5; the error then says what
//!    the SRV lookup found.
//! 5. HOST's addresses and port 22.
//!
//! Names go through hickory's resolver, which reads /etc/hosts first, then
//! the DNS servers of resolv.conf, or those of `dns_servers` when set.
//! Nothing learned here is trusted: the server's licence is still checked
//! against HOST, so a forged SRV record can only point at a proxy that is
//! licensed for HOST anyway (or at one that fails the handshake).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::settings::Settings;

/// The port ssh passes when the user named none.
pub const SSH_DEFAULT_PORT: u16 = 22;
/// The SRV service label.
pub const SRV_PREFIX: &str = "_ztssh._tcp.";
/// Most SRV records considered, and most addresses tried in all.
const MAX_SRV: usize = 16;
const MAX_ADDRS: usize = 32;

/// The addresses to try, in order, and how they were found (for messages).
#[derive(Debug)]
pub struct Plan {
    /// Tried in order until one connects.
    pub addrs: Vec<SocketAddr>,
    /// e.g. `web1 port 22` or `SRV _ztssh._tcp.web1: p1.example:2222`.
    pub via: String,
    /// Why SRV was not used, when it was tried and failed.
    pub srv_note: Option<String>,
}

impl Plan {
    /// The message when no address connected.
    pub fn failed(&self, e: &std::io::Error) -> String {
        let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "; is the ztssh proxy on another port? Give ssh its port (`Port N` in ~/.ssh/config, \
             which `ztssh-sidecar setup --port N` writes, or ssh -p N)"
        } else {
            ""
        };
        let msg = format!("cannot connect to {}: {e}{hint}", self.via);
        with_note(msg, self.srv_note.as_deref())
    }
}

/// One SRV record, as discovery uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Share of the traffic among records of one priority.
    pub weight: u16,
    /// The proxy's port.
    pub port: u16,
    /// The proxy's host name (no final dot).
    pub target: String,
}

/// Works out where to connect (the rules above).
pub async fn plan(
    s: &Settings,
    host: &str,
    port: u16,
    say: &dyn Fn(String),
) -> Result<Plan, String> {
    if let Some(c) = &s.connect {
        let a = c
            .parse::<SocketAddr>()
            .map_err(|_| format!("connect = {c:?} is not an address like 192.0.2.7:2222"))?;
        return Ok(direct(vec![a], format!("{a} (connect)")));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let a = SocketAddr::new(ip, port);
        return Ok(direct(vec![a], a.to_string()));
    }
    let resolver = resolver(s)?;
    let limit = Duration::from_secs(s.dns_timeout_secs);
    let mut srv_note = None;
    if port == SSH_DEFAULT_PORT && s.srv_discovery {
        match lookup_srv(&resolver, host, limit).await {
            Ok(Some(records)) => return via_srv(&resolver, host, records, limit, say).await,
            Ok(None) => say(format!(
                "no SRV record {SRV_PREFIX}{host}; using port {port}"
            )),
            Err(e) => {
                say(format!("{e}; using {host} port {port}"));
                srv_note = Some(e);
            }
        }
    }
    let addrs = lookup_ip(&resolver, host, limit)
        .await
        .map_err(|e| with_note(e, srv_note.as_deref()))?;
    let mut p = direct(
        addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        format!("{host} port {port}"),
    );
    p.srv_note = srv_note;
    Ok(p)
}

fn direct(addrs: Vec<SocketAddr>, via: String) -> Plan {
    Plan {
        addrs,
        via,
        srv_note: None,
    }
}

fn with_note(e: String, note: Option<&str>) -> String {
    match note {
        Some(n) => format!("{e} (and {n})"),
        None => e,
    }
}

/// The system resolver, or one asking only `dns_servers`; either reads
/// /etc/hosts first.
fn resolver(s: &Settings) -> Result<TokioResolver, String> {
    let mut b = if s.dns_servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let mut cfg = ResolverConfig::from_name_servers(Vec::new());
        for text in &s.dns_servers {
            cfg.add_name_server(name_server(text)?);
        }
        TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default())
    };
    let o = b.options_mut();
    o.timeout = Duration::from_secs(s.dns_timeout_secs.max(1));
    o.attempts = 1;
    b.build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// `"192.0.2.53"` or `"192.0.2.53:5353"` or `"[2001:db8::53]:53"`.
fn name_server(text: &str) -> Result<NameServerConfig, String> {
    let addr = text
        .parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!(
                "dns_servers entry {text:?} is not an address like 192.0.2.53 or 192.0.2.53:5353"
            )
        })?;
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    Ok(ns)
}

/// `Ok(None)`: the name has no SRV record (NXDOMAIN or no answer).
async fn lookup_srv(
    r: &TokioResolver,
    host: &str,
    limit: Duration,
) -> Result<Option<Vec<Srv>>, String> {
    let name = format!("{SRV_PREFIX}{host}");
    let found = tokio::time::timeout(limit, r.srv_lookup(name.as_str()))
        .await
        .map_err(|_| {
            format!(
                "the SRV lookup of {name} got no answer within {}s",
                limit.as_secs()
            )
        })?;
    let lookup = match found {
        Ok(l) => l,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
        Err(e) => return Err(format!("the SRV lookup of {name} failed: {e}")),
    };
    let records: Vec<Srv> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(srv) => Some(Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
            }),
            _ => None,
        })
        .take(MAX_SRV)
        .collect();
    Ok((!records.is_empty()).then_some(records))
}

async fn lookup_ip(r: &TokioResolver, host: &str, limit: Duration) -> Result<Vec<IpAddr>, String> {
    let found = tokio::time::timeout(limit, r.lookup_ip(host))
        .await
        .map_err(|_| {
            format!(
                "cannot resolve {host}: no answer within {}s",
                limit.as_secs()
            )
        })?
        .map_err(|e| {
            if e.is_no_records_found() || e.is_nx_domain() {
                format!("cannot resolve {host}: no such host (neither /etc/hosts nor DNS knows it)")
            } else {
                format!("cannot resolve {host}: {e}")
            }
        })?;
    let ips: Vec<IpAddr> = found.iter().take(MAX_ADDRS).collect();
    if ips.is_empty() {
        return Err(format!("{host} has no addresses"));
    }
    Ok(ips)
}

/// The SRV targets' addresses, in RFC 2782 order.
async fn via_srv(
    r: &TokioResolver,
    host: &str,
    records: Vec<Srv>,
    limit: Duration,
    say: &dyn Fn(String),
) -> Result<Plan, String> {
    // RFC 2782: a single record with target "." means "not offered here".
    if records.len() == 1 && records[0].target.is_empty() {
        return Err(format!(
            "{host} says it offers no ztssh service (SRV record {SRV_PREFIX}{host} has target \".\")"
        ));
    }
    let ordered = order(records, &mut random_below);
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    let mut failures = Vec::new();
    for rec in ordered.iter().filter(|r| !r.target.is_empty()) {
        match lookup_ip(r, &rec.target, limit).await {
            Ok(ips) => {
                names.push(format!("{}:{}", rec.target, rec.port));
                addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, rec.port)));
            }
            Err(e) => failures.push(e),
        }
        if addrs.len() >= MAX_ADDRS {
            break;
        }
    }
    addrs.truncate(MAX_ADDRS);
    if addrs.is_empty() {
        return Err(format!(
            "SRV record {SRV_PREFIX}{host} names no reachable proxy: {}",
            failures.join("; ")
        ));
    }
    let via = format!("SRV {SRV_PREFIX}{host}: {}", names.join(", "));
    say(via.clone());
    Ok(direct(addrs, via))
}

/// Orders SRV records as RFC 2782 says: by priority, lowest first; within
/// one priority, a weighted random draw without replacement (records of
/// weight 0 have a small chance of coming first). `below(n)` returns a
/// uniform number in `0..n`.
pub fn order(mut records: Vec<Srv>, below: &mut dyn FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(n);
        // Weight 0 first, as the RFC's selection algorithm does.
        let mut group: Vec<Srv> = group.to_vec();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = below(total + 1);
            let mut sum = 0u32;
            let i = group
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(i));
        }
        rest = tail;
    }
    out
}

/// A uniform number in `0..n` (n ≥ 1) from the OS's random source.
fn random_below(n: u32) -> u32 {
    let x = u32::from_le_bytes(ztssh_proto::keys::random_bytes::<4>(
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    ));
    // Modulo bias is at most n / 2^32 with n ≤ 16 × 65,535 + 1: negligible
    // for spreading load.
    x % n.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 2222,
            target: target.into(),
        }
    }

    fn targets(v: &[Srv]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let recs = vec![srv(20, 100, "c"), srv(10, 0, "a"), srv(10, 0, "b")];
        for seed in 0..50u32 {
            let mut x = seed;
            let mut below = |n: u32| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                x % n
            };
            let got = order(recs.clone(), &mut below);
            assert_eq!(got.len(), 3);
            assert_eq!(got[2].target, "c", "priority 20 after both priority 10");
        }
    }

    #[test]
    fn weight_decides_the_order_within_a_priority() {
        let recs = vec![srv(10, 1, "light"), srv(10, 9, "heavy")];
        // The draw picks the first record whose running weight sum
        // reaches it: 0..=1 lands on light, 2..=10 on heavy.
        assert_eq!(
            targets(&order(recs.clone(), &mut |_| 1)),
            ["light", "heavy"]
        );
        assert_eq!(
            targets(&order(recs.clone(), &mut |_| 2)),
            ["heavy", "light"]
        );
        // Over every possible first draw, heavy comes first 9 times in 11.
        let heavy_first = (0..=10u32)
            .filter(|d| {
                let mut first = Some(*d);
                let got = order(recs.clone(), &mut |n| first.take().unwrap_or(n - 1));
                got[0].target == "heavy"
            })
            .count();
        assert_eq!(heavy_first, 9);
    }

    #[test]
    fn zero_weights_are_all_kept() {
        let recs = vec![srv(0, 0, "a"), srv(0, 0, "b"), srv(0, 0, "c")];
        let got = order(recs, &mut |_| 0);
        assert_eq!(targets(&got), ["a", "b", "c"]);
    }

    #[test]
    fn name_servers_take_an_address_with_or_without_a_port() {
        let ns = name_server("127.0.0.53").unwrap();
        assert_eq!(ns.ip, "127.0.0.53".parse::<IpAddr>().unwrap());
        assert!(ns.connections.iter().all(|c| c.port == 53));
        let ns = name_server("[::1]:5353").unwrap();
        assert!(ns.connections.iter().all(|c| c.port == 5353));
        let e = name_server("dns.example").unwrap_err();
        assert!(e.contains("not an address like 192.0.2.53"), "{e}");
    }
}
