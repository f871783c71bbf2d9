//! The proxy's policy parser. Invariants: a refused policy names a line of
//! the text and a one-line reason free of control characters; an accepted policy holds no network with
//! host bits set and no IPv4-mapped network (it is stored as IPv4), never
//! caps a principal at 0 sessions, reads back equal from its canonical
//! TOML, and judges an IPv4 peer and its IPv4-mapped form alike; a
//! principal check never admits a source the accept-time check refuses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use ztssh_proxy::trust::policy::Policy;

/// Pieces of policy files: tables, keys, values good and bad.
const TOKENS: &[&str] = &[
    "\n",
    "\n",
    " ",
    "[principals]\n",
    "[sources]\n",
    "[principal.alice]\n",
    "[principal.\"b@c\"]\n",
    "[principal.x.sources]\n",
    "[[principal]]\n",
    "allow = ",
    "deny = ",
    "sources = ",
    "max_sessions = ",
    "hours_utc = ",
    "principal.bob.",
    "principals.",
    "sources.",
    "principal = { ",
    "alice = { ",
    " }",
    "[",
    "]",
    ", ",
    "\"",
    "=",
    "#",
    "0",
    "1",
    "4294967296",
    "-1",
    "1.5",
    "true",
    "\"alice\"",
    "\"bob\"",
    "\"al ice\"",
    "\"-x\"",
    "\"10.0.0.0/8\"",
    "\"10.0.0.1/8\"",
    "\"10.0.0.1\"",
    "\"10.0.0.0/33\"",
    "\"0.0.0.0/0\"",
    "\"192.0.2.0/24\"",
    "\"2001:db8::/32\"",
    "\"2001:db8::1/32\"",
    "\"::ffff:10.0.0.0/104\"",
    "\"::ffff:10.0.0.1/104\"",
    "\"::ffff:0:0/95\"",
    "\"::1\"",
    "\"::/0\"",
    "\"08-18\"",
    "\"22-06\"",
    "\"8-8\"",
    "\"0-24\"",
    "\"23-24\"",
    "\"9 to 5\"",
    "\"25-3\"",
    "{}",
    "[]",
    "'10.0.0.0/8'",
    "\"\"\"",
    "\\u0041",
    // Parts to compose other networks and hours from.
    "\"",
    ".",
    "/",
    ":",
    "::",
    "-",
    "2",
    "9",
    "16",
    "24",
    "32",
    "64",
    "96",
    "128",
    "255",
    "ffff",
];

/// Bytes 253 and 254 make a quoted IPv4 or IPv6 network of the next 5 or
/// 17 bytes, with any prefix length up to a little past the longest.
fn network(b: u8, bytes: &mut std::slice::Iter<'_, u8>) -> Option<String> {
    let mut take = |n: usize| -> Vec<u8> { bytes.by_ref().take(n).copied().collect() };
    match b {
        254 => {
            let v = take(5);
            let a = Ipv4Addr::from(<[u8; 4]>::try_from(v.get(..4)?).ok()?);
            Some(format!("\"{a}/{}\"", v.get(4)? % 34))
        }
        253 => {
            let v = take(17);
            let a = Ipv6Addr::from(<[u8; 16]>::try_from(v.get(..16)?).ok()?);
            Some(format!("\"{a}/{}\"", v.get(16)? % 130))
        }
        _ => None,
    }
}

/// Peers and times to judge by: from the input's first bytes.
fn peers(data: &[u8], policy: &Policy) -> Vec<Ipv4Addr> {
    let mut v4: Vec<Ipv4Addr> = data
        .chunks_exact(4)
        .take(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect();
    for net in policy.networks() {
        if let IpAddr::V4(a) = net.addr() {
            v4.push(a);
        }
    }
    v4.push(Ipv4Addr::new(10, 0, 0, 1));
    v4
}

fuzz_target!(|data: &[u8]| {
    let text = match data.split_first() {
        Some((mode, rest)) if mode % 4 == 0 => String::from_utf8_lossy(rest).into_owned(),
        _ => ztssh_proto_fuzz::assemble(data, TOKENS, network),
    };
    let policy = match Policy::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            let line = e.line.expect("every mistake has a line");
            let lines = text.matches('\n').count() + 1;
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
            assert!(!e.reason.is_empty(), "{e:?}");
            assert!(!e.reason.chars().any(char::is_control), "{e:?}");
            return;
        }
    };
    for net in policy.networks() {
        assert_eq!(net.trunc(), *net, "host bits set in {net}");
        if let IpAddr::V6(a) = net.addr() {
            assert!(
                a.to_ipv4_mapped().is_none() || net.prefix_len() < 96,
                "IPv4-mapped network {net} kept as IPv6"
            );
        }
    }
    let canonical = policy.to_toml().expect("canonical form");
    assert_eq!(
        Policy::parse(&canonical).as_ref(),
        Ok(&policy),
        "{text:?} -> {canonical:?}"
    );
    let now = data
        .iter()
        .fold(0u64, |t, &b| t.wrapping_mul(31).wrapping_add(u64::from(b)));
    for principal in ["alice", "bob", "b@c", "x", "mallory"] {
        assert_ne!(policy.max_sessions(principal), Some(0));
        for v4 in peers(data, &policy) {
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let v4 = IpAddr::V4(v4);
            let verdict = policy.check(principal, v4, now);
            assert_eq!(verdict, policy.check(principal, mapped, now));
            assert_eq!(policy.admit_source(v4), policy.admit_source(mapped));
            if verdict.is_ok() {
                assert!(policy.admit_source(v4).is_ok());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        if policy.check(principal, v6, now).is_ok() {
            assert!(policy.admit_source(v6).is_ok());
        }
    }
});
