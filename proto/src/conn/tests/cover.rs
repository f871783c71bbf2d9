//! Cover traffic on the in-memory pair, on virtual time: what an observer
//! of record timestamps sees while a user types and once they stop.

use super::*;
use crate::conn::{COVER_CADENCE_MS, COVER_LINGER_MS, CoverTraffic};

/// When each record entered the wire, per direction.
#[derive(Default)]
struct Obs {
    s2c: Vec<u64>,
    c2s: Vec<u64>,
}

fn observe(n: &mut Net, o: &mut Obs) {
    for _ in 0..n.server.poll_transmit().len() / F {
        o.s2c.push(n.t);
    }
    for _ in 0..n.client.poll_transmit().len() / F {
        o.c2s.push(n.t);
    }
    n.pump();
}

/// `Net::run_until`, recording every record as it is sealed.
fn run_observed(n: &mut Net, o: &mut Obs, until: u64) {
    for _ in 0..1_000_000 {
        let Some(at) = n.next_timer().filter(|&at| at <= until) else {
            break;
        };
        n.t = n.t.max(at);
        if n.server.poll_timeout().is_some_and(|at| at <= n.t) {
            let (now, nonce) = (n.now(), n.nonce());
            n.server.handle_timeout(now, nonce);
        }
        if n.client
            .poll_timeout()
            .is_some_and(|at| at <= n.cm().mono_ms)
        {
            n.client.handle_timeout(n.cm());
        }
        observe(n, o);
    }
    n.t = n.t.max(until);
}

/// A keystroke and its echo.
fn key(n: &mut Net, o: &mut Obs, b: u8) {
    n.client.handle_local(&[b], n.cm());
    observe(n, o);
    n.server.handle_local(&[b], n.now());
    observe(n, o);
}

const QUIET: Timing = Timing {
    interval_secs: 3600,
    deadline_secs: 10,
    cert_ttl_secs: 3600,
};

fn pair(mode: CoverTraffic) -> Net {
    let mut n = started(QUIET, 0);
    n.server.set_cover_traffic(mode);
    n.client.set_cover_traffic(mode);
    n.t = 10_000;
    n
}

/// Types `keys` keystrokes at pseudo-random gaps of 60–400 ms from `seed`;
/// returns the time of the first and the last.
fn type_some(n: &mut Net, o: &mut Obs, keys: usize, seed: u64) -> (u64, u64) {
    let first = n.t;
    for i in 0..keys {
        if i > 0 {
            let gap = 60 + splitmix(seed + i as u64) % 341;
            let at = n.t + gap;
            run_observed(n, o, at);
        }
        key(n, o, b'a' + (i % 26) as u8);
    }
    (first, n.t)
}

fn intervals(stamps: &[u64], from: u64, to: u64) -> Vec<f64> {
    let w: Vec<u64> = stamps
        .iter()
        .copied()
        .filter(|&t| t >= from && t <= to)
        .collect();
    w.windows(2).map(|p| (p[1] - p[0]) as f64).collect()
}

/// Two-sample Kolmogorov–Smirnov test: the p-value (asymptotic
/// distribution, as in Numerical Recipes' `kstwo`).
fn ks_p(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 1e-9 {
        return 1.0;
    }
    let mut p = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let sign = if k as u64 % 2 == 1 { 1.0 } else { -1.0 };
        p += sign * 2.0 * (-2.0 * k * k * lambda * lambda).exp();
    }
    p.clamp(0.0, 1.0)
}

#[test]
fn the_ks_test_used_here_tells_different_samples_apart() {
    let a: Vec<f64> = (0..100).map(|i| f64::from(i % 10)).collect();
    let b: Vec<f64> = (0..100).map(|i| f64::from(i % 10) + 5.0).collect();
    assert!(ks_p(&a, &b) < 0.001);
    assert!(ks_p(&a, &a) > 0.99);
}

#[test]
fn with_cover_traffic_typing_and_idle_after_typing_look_the_same() {
    let mut n = pair(CoverTraffic::Interactive);
    let mut o = Obs::default();
    let (first, last) = type_some(&mut n, &mut o, 40, 7);
    let idle_end = last + COVER_LINGER_MS - 500;
    run_observed(&mut n, &mut o, last + COVER_LINGER_MS + 1000);
    for (dir, stamps) in [("to the client", &o.s2c), ("to the proxy", &o.c2s)] {
        let typing = intervals(stamps, first, last);
        let idle = intervals(stamps, last, idle_end);
        assert!(typing.len() > 100 && idle.len() > 100, "{dir}");
        let p = ks_p(&typing, &idle);
        assert!(p > 0.05, "{dir}: typing and idle differ, p = {p}");
        // One record every cadence, whatever was typed.
        assert!(
            typing
                .iter()
                .chain(&idle)
                .all(|&d| d == COVER_CADENCE_MS as f64)
        );
        // Then the window closes: nothing more once the linger is over.
        assert!(stamps.iter().all(|&t| t <= last + COVER_LINGER_MS), "{dir}");
    }
    // Every keystroke arrived, in order, both ways.
    let typed: Vec<u8> = (0..40).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(n.sshd, typed);
    assert_eq!(n.ssh, typed);
}

#[test]
fn without_cover_traffic_the_observer_sees_every_keystroke() {
    let mut n = pair(CoverTraffic::Off);
    let mut o = Obs::default();
    let (first, last) = type_some(&mut n, &mut o, 40, 7);
    run_observed(&mut n, &mut o, last + COVER_LINGER_MS);
    // One record per keystroke each way, and nothing while idle: typing
    // and idle are told apart at once, and so is the keystroke count.
    assert_eq!(o.c2s.len(), 40);
    assert_eq!(o.s2c.len(), 40);
    assert!(intervals(&o.c2s, last + 1, last + COVER_LINGER_MS).is_empty());
    let typing = intervals(&o.c2s, first, last);
    assert!(typing.iter().any(|&d| d != typing[0]));
}

#[test]
fn the_keystroke_count_does_not_change_the_record_count() {
    // Over the same span, 10 keystrokes or 60 give the same records.
    let count = |keys: usize| {
        let mut n = pair(CoverTraffic::Interactive);
        let mut o = Obs::default();
        let start = n.t;
        for i in 0..keys {
            let at = start + (i as u64 * 6000) / keys as u64;
            run_observed(&mut n, &mut o, at);
            key(&mut n, &mut o, b'x');
        }
        run_observed(&mut n, &mut o, start + 6000);
        let c2s = o.c2s.iter().filter(|&&t| t < start + 6000).count();
        let s2c = o.s2c.iter().filter(|&&t| t < start + 6000).count();
        (c2s, s2c)
    };
    let few = count(10);
    assert_eq!(few, count(60));
    assert_eq!(few.0, (6000 / COVER_CADENCE_MS) as usize);
}

#[test]
fn bulk_transfers_are_not_held_for_the_cadence() {
    let mut n = pair(CoverTraffic::Interactive);
    let mut o = Obs::default();
    key(&mut n, &mut o, b'l');
    let soon = n.t + 5;
    run_observed(&mut n, &mut o, soon);
    // 1 MB from sshd goes out at once, in full records, after the
    // keystroke's echo.
    let at = n.t;
    let big = bytes(3, 1_000_000);
    let mut o2 = Obs::default();
    for chunk in big.chunks(200_000) {
        n.server.handle_local(chunk, n.now());
        observe(&mut n, &mut o2);
    }
    assert!(o2.s2c.len() >= 1_000_000 / D);
    assert!(o2.s2c.iter().all(|&t| t == at));
    let mut want = vec![b'l'];
    want.extend_from_slice(&big);
    assert_eq!(n.ssh, want);
}

/// Bytes on the wire for one interactive minute: 5 keystrokes a second
/// for 60 s, each echoed. The figures in docs/BENCHMARKS.md come from
/// this test (`cargo test --release -p ztssh-proto cover_cost -- --nocapture`).
#[test]
fn cover_cost_of_an_interactive_minute() {
    let minute = |mode| {
        let mut n = pair(mode);
        let mut o = Obs::default();
        let start = n.t;
        for i in 0..300u64 {
            run_observed(&mut n, &mut o, start + i * 200);
            key(&mut n, &mut o, b'k');
        }
        run_observed(&mut n, &mut o, start + 60_000 + COVER_LINGER_MS + 100);
        (o.c2s.len() * F, o.s2c.len() * F)
    };
    let off = minute(CoverTraffic::Off);
    let on = minute(CoverTraffic::Interactive);
    println!(
        "interactive minute, F = {F}: cover off {} + {} bytes, cover interactive {} + {} bytes (to the proxy + to the client)",
        off.0, off.1, on.0, on.1
    );
    assert_eq!(off, (300 * F, 300 * F));
    // One record per cadence from the first keystroke to the linger's end.
    let ticks = ((60_000 - 200 + COVER_LINGER_MS) / COVER_CADENCE_MS + 1) as usize;
    assert_eq!(on, (ticks * F, ticks * F));
}
