//! The soak's verdict: every end accounted for by a fault the run caused,
//! the figures printed, and the list of what failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ztssh_tests::percentile;

use crate::load::{self, How};
use crate::real::{Job, Kind, Outcome};
use crate::relay::UpstreamStats;
use crate::{Faults, POLL_SECS, Sizes, flood};

/// The proxy's descriptors and memory.
pub struct Mem {
    pub fds_base: usize,
    pub fds_back: usize,
    pub fd_margin: usize,
    pub rss_base: u64,
    pub rss_open: u64,
    pub rss_peak: u64,
    /// Every 5 s of the soak.
    pub rss_samples: Vec<u64>,
    pub rss_after: u64,
}

/// Everything the run saw.
pub struct Inputs<'a> {
    pub sizes: &'a Sizes,
    pub faults: &'a Faults,
    pub ends: &'a [load::End],
    pub jobs: &'a [Job],
    pub log: &'a str,
    pub counts: &'a load::Counts,
    pub flood: &'a flood::Counts,
    pub upstream: &'a UpstreamStats,
    pub relayed: usize,
    pub soaked: Duration,
    pub dropped: u64,
    pub tbf: &'a str,
    pub mem: Mem,
    pub proxy_alive: bool,
}

/// How far above its baseline the proxy's RSS may stay once every session
/// has ended: freed session memory the allocator keeps for reuse.
pub const RSS_MARGIN_KIB: u64 = 16 * 1024;
/// An sshd restart may take down a real session that began up to this
/// long after sshd was listening again (its handshake was under way).
const RESTART_GRACE: Duration = Duration::from_secs(3);

/// Prints the figures; returns what failed (empty: the soak passed).
pub fn judge(v: &Inputs<'_>) -> Vec<String> {
    let mut fail = Vec::new();
    synthetic(v, &mut fail);
    real(v, &mut fail);
    proxy_log(v, &mut fail);
    faults(v, &mut fail);
    memory(v, &mut fail);
    fail
}

fn banned<'a>(v: &Inputs<'a>) -> HashMap<&'a str, &'a crate::Ban> {
    v.faults
        .bans
        .iter()
        .map(|b| (b.principal.as_str(), b))
        .collect()
}

fn synthetic(v: &Inputs<'_>, fail: &mut Vec<String>) {
    let bans = banned(v);
    let n = v.sizes.n;
    let limit = Duration::from_secs(POLL_SECS + 1);
    let mut lat: Vec<Duration> = Vec::new();
    let (mut closed, mut false_kills) = (0usize, Vec::new());
    for e in v.ends {
        let ban = bans.get(e.principal.as_str());
        match (&e.how, ban) {
            (How::Told(r), Some(b)) if *r == format!("principal {} banned", e.principal) => {
                match b.landed {
                    Some(l) if e.at >= b.published => lat.push(e.at.saturating_duration_since(l)),
                    _ => false_kills.push(format!(
                        "{}: told {r:?} before its list could be fetched",
                        e.principal
                    )),
                }
            }
            (How::Closed, None) => closed += 1,
            (How::Closed, Some(_)) => {
                false_kills.push(format!(
                    "{}: banned, yet still open at the end",
                    e.principal
                ));
            }
            (How::Failed(why), _) => {
                false_kills.push(format!("{} at {}: {why}", e.principal, e.utc))
            }
            (How::Told(r), _) => {
                false_kills.push(format!("{} at {}: told {r:?}", e.principal, e.utc))
            }
        }
    }
    lat.sort();
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "  synthetic: {n} sessions, {} proofs answered, {} certificates renewed, {} renewals retried, {} handshakes retried",
        c(&v.counts.answered),
        c(&v.counts.renewed),
        c(&v.counts.renew_failed),
        c(&v.counts.open_retries)
    );
    println!(
        "  synthetic ends: {} banned and told, {closed} closed by the run at its end, {} false kills",
        lat.len(),
        false_kills.len()
    );
    if !lat.is_empty() {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        println!(
            "  ban: from the list landing on nginx to TERMINATE read by the client (through loss and the relay), {} sessions: p50 {}, p99 {}, max {} (limit: poll {POLL_SECS} s + 1 s)",
            lat.len(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(lat[lat.len() - 1])
        );
        if lat[lat.len() - 1] > limit {
            let late = lat.iter().filter(|d| **d > limit).count();
            fail.push(format!(
                "{late} banned sessions ended later than {limit:?} after their list landed"
            ));
        }
    }
    let want_banned = v.faults.bans.len() * crate::PER_PRINCIPAL;
    if lat.len() != want_banned {
        fail.push(format!(
            "{want_banned} sessions were banned, {} were told so",
            lat.len()
        ));
    }
    if v.ends.len() != n {
        fail.push(format!(
            "{} of {n} synthetic sessions never ended",
            n - v.ends.len()
        ));
    }
    for k in false_kills.iter().take(10) {
        fail.push(format!("false kill (synthetic): {k}"));
    }
    if false_kills.len() > 10 {
        fail.push(format!("... {} false kills in all", false_kills.len()));
    }
}

/// Whether a failed job ran across an sshd restart.
fn across_restart(v: &Inputs<'_>, start: Instant, end: Instant) -> bool {
    v.faults
        .sshd
        .iter()
        .any(|(down, up)| start <= *up + RESTART_GRACE && end >= *down)
}

fn real(v: &Inputs<'_>, fail: &mut Vec<String>) {
    let mut ok: BTreeMap<&str, usize> = BTreeMap::new();
    let mut caused = 0usize;
    let name = |k: Kind| match k {
        Kind::Upload => "upload",
        Kind::Download => "download",
        Kind::Interactive => "interactive",
    };
    for j in v.jobs {
        match &j.outcome {
            Outcome::Intact => *ok.entry(name(j.kind)).or_default() += 1,
            Outcome::Corrupt(e) => fail.push(format!("data not intact (worker {}): {e}", j.worker)),
            Outcome::Failed(_) if across_restart(v, j.start, j.end) => caused += 1,
            Outcome::Failed(e) => fail.push(format!(
                "false kill (ssh worker {}, {}, {}-{} UTC, no sshd restart during it): {e}",
                j.worker,
                name(j.kind),
                j.utc.0,
                j.utc.1
            )),
        }
    }
    println!(
        "  real ssh: {} workers, {} sessions: intact {ok:?} ({} KiB up or down each bulk, {} lines typed each interactive); {caused} ended by an sshd restart",
        v.sizes.workers,
        v.jobs.len(),
        v.sizes.bulk >> 10,
        v.sizes.lines
    );
    for k in [Kind::Upload, Kind::Download, Kind::Interactive] {
        if !ok.contains_key(name(k)) {
            fail.push(format!("no {} session finished intact", name(k)));
        }
    }
}

/// `key=value` in a log line (quotes stripped).
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let v = rest.split_whitespace().next()?;
    Some(v.trim_matches('"'))
}

fn proxy_log(v: &Inputs<'_>, fail: &mut Vec<String>) {
    let bans = banned(v);
    let mut table: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in v.log.lines() {
        let Some(at) = line.find("event=\"session_") else {
            continue;
        };
        let tail = &line[at..];
        if !(tail.starts_with("event=\"session_terminated\"")
            || tail.starts_with("event=\"session_closed\""))
        {
            continue;
        }
        let p = field(tail, "principal").unwrap_or("?");
        let r = field(tail, "reason").unwrap_or("?").to_owned();
        let who = if p == "alice" { "ssh" } else { "synthetic" };
        let caused = match (who, r.as_str()) {
            ("synthetic", "principal_banned") => bans.contains_key(p),
            ("synthetic", "normal") => !bans.contains_key(p),
            // sshd went away (restarted): the proxy says its side ended.
            ("ssh", "normal" | "upstream_io" | "upstream_unavailable") => true,
            _ => false,
        };
        if !caused {
            fail.push(format!("false kill in the proxy log: {line}"));
        }
        *table.entry((who.to_owned(), r)).or_default() += 1;
    }
    println!("  proxy log, sessions ended by reason: {table:?}");
    let count = |e: &str| v.log.matches(&format!("event=\"{e}\"")).count();
    println!(
        "  proxy log: {} reloads, {} list fetch failures (nginx down), {} lists loaded, {} handshakes failed, {} connections refused",
        count("reload"),
        count("crl_fetch_failed"),
        count("crl_loaded"),
        count("handshake_failed"),
        count("connection_refused")
    );
    if v.log.contains("panicked") {
        fail.push("the proxy panicked (its log says so)".into());
    }
    if !v.proxy_alive {
        fail.push("the proxy is gone".into());
    }
    if count("crl_fetch_failed") == 0 {
        fail.push("the proxy never saw nginx down (no crl_fetch_failed)".into());
    }
}

fn faults(v: &Inputs<'_>, fail: &mut Vec<String>) {
    let f = v.faults;
    let fl = v.flood;
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let restarts: Vec<String> = f
        .sshd
        .iter()
        .map(|(d, u)| format!("{:.1} s", (*u - *d).as_secs_f64()))
        .collect();
    let outage: Vec<String> = f
        .nginx
        .iter()
        .map(|(d, u)| {
            u.map_or("never back".into(), |u| {
                format!("{:.1} s", (u - *d).as_secs_f64())
            })
        })
        .collect();
    println!(
        "  faults over {:.0} s: {} SIGHUPs, {} bans, sshd restarts {restarts:?}, nginx down {outage:?}",
        v.soaked.as_secs_f64(),
        f.sighups,
        f.bans.len()
    );
    println!(
        "  flood: {} cycles, {} idle sockets ({} dropped by the proxy within 15 s), {} garbage handshakes, {} connects refused",
        c(&fl.cycles),
        c(&fl.idle_opened),
        c(&fl.idle_dropped),
        c(&fl.garbage_sent),
        c(&fl.refused)
    );
    println!(
        "  network: {} connections relayed ({} ms each way), {} TCP packets dropped by the loss rule ({}/1000 each way), host-side tbf: {}",
        v.relayed,
        crate::DELAY.as_millis(),
        v.dropped,
        crate::SHAPING.loss_per_mille,
        v.tbf
    );
    println!(
        "  upstream: {} connections to sshd, {} synthetic ones closed",
        v.upstream.ssh.load(Ordering::SeqCst),
        v.upstream.sink_closed.load(Ordering::SeqCst)
    );
    let mut need = |ok: bool, what: &str| {
        if !ok {
            fail.push(format!("fault not exercised: {what}"));
        }
    };
    need(f.sighups > 0, "SIGHUP");
    need(!f.bans.is_empty(), "a ban");
    need(f.sshd.len() == 2, "two sshd restarts");
    need(
        f.nginx.len() == 1 && f.nginx[0].1.is_some(),
        "nginx stopped and started",
    );
    need(
        f.bans.iter().any(|b| b.landed != Some(b.published)),
        "a ban published while nginx was down",
    );
    need(
        c(&fl.idle_opened) > 0 && c(&fl.garbage_sent) > 0,
        "the flood",
    );
    need(v.dropped > 0, "packet loss");
    need(v.relayed > 0, "the delay relay");
}

fn memory(v: &Inputs<'_>, fail: &mut Vec<String>) {
    let m = &v.mem;
    println!(
        "  proxy: {} descriptors before, {} after every session ended (margin {}); RSS {} KiB before, {} with the sessions open, {} peak, {} after (margin {} KiB)",
        m.fds_base,
        m.fds_back,
        m.fd_margin,
        m.rss_base,
        m.rss_open,
        m.rss_peak,
        m.rss_after,
        RSS_MARGIN_KIB
    );
    println!(
        "  proxy RSS every 5 s of the soak, KiB: {:?}",
        m.rss_samples
    );
    if m.fds_back > m.fds_base + m.fd_margin {
        fail.push(format!(
            "the proxy holds {} descriptors after every session ended, {} before",
            m.fds_back, m.fds_base
        ));
    }
    if m.rss_after > m.rss_base + RSS_MARGIN_KIB {
        fail.push(format!(
            "the proxy's RSS is {} KiB after every session ended, {} before (margin {RSS_MARGIN_KIB})",
            m.rss_after, m.rss_base
        ));
    }
}
