//! A client network namespace for benches that need a slow, lossy client
//! leg: joined to this namespace by a veth pair, with a rate limit on both
//! ends (`tc` `tbf`) and random packet loss in both directions (an
//! nftables `numgen random` drop rule inside the namespace). The kernels
//! this runs on may have no `netem` (no delay qdisc): a delay is added by a
//! userspace relay in the bench instead.
//!
//! Made with the real `ip`, `tc` and `nft` (iproute2, nftables; root).
//! Dropping a [`NetNs`] deletes the namespace and the veth pair, also when
//! a bench panics while it is alive.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{assert_ok, run_bounded};

const T: Duration = Duration::from_secs(20);

/// How the client leg is shaped.
#[derive(Clone, Copy, Debug)]
pub struct Shaping {
    /// The `tbf` rate on each end of the veth pair, in kbit/s.
    pub rate_kbit: u32,
    /// TCP packets dropped at random, per 1,000, in each direction.
    pub loss_per_mille: u32,
}

/// A network namespace `ztsoak-PID` joined to this one by a veth pair on
/// 10.N.0.0/16 (N from the PID): this end is 10.N.0.1, the namespace's end
/// 10.N.0.2 plus the extra source addresses asked for.
pub struct NetNs {
    pub name: String,
    host_if: String,
    net: u8,
    sources: usize,
}

impl NetNs {
    /// Creates the namespace, the veth pair, `sources` extra addresses in
    /// the namespace ([`NetNs::source`]), the rate limits and the loss rule.
    pub fn create(shaping: Shaping, sources: usize) -> Self {
        assert!(sources <= 250 * 250, "at most 62,500 source addresses");
        let pid = std::process::id();
        let me = Self {
            name: format!("ztsoak-{pid}"),
            host_if: format!("zsa{}", pid % 1_000_000),
            net: 64 + (pid % 128) as u8,
            sources,
        };
        let peer = format!("zsb{}", pid % 1_000_000);
        let host = format!("{}/16", me.host_addr());
        must(Command::new("ip").args(["netns", "add", &me.name]));
        must(Command::new("ip").args([
            "link",
            "add",
            &me.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &me.name,
        ]));
        must(Command::new("ip").args(["addr", "add", &host, "dev", &me.host_if]));
        must(Command::new("ip").args(["link", "set", &me.host_if, "up"]));
        // One `ip -batch` for the namespace's addresses (hundreds of them).
        let mut batch = format!(
            "addr add {}/16 dev {peer}\nlink set {peer} up\nlink set lo up\n",
            me.client_addr()
        );
        for i in 0..sources {
            batch.push_str(&format!("addr add {}/16 dev {peer}\n", me.source(i)));
        }
        let dir = tempfile::tempdir().expect("tmp");
        let batch_file = dir.path().join("addrs");
        std::fs::write(&batch_file, batch).expect("batch");
        must(me.exec("ip").arg("-batch").arg(&batch_file));
        // tbf on both ends: this end shapes what reaches the clients, the
        // namespace's end what they send. The burst holds a whole GSO
        // segment (64 KiB), or tbf would drop it.
        let rate = format!("{}kbit", shaping.rate_kbit);
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "128kb", "latency", "400ms",
        ];
        must(
            Command::new("tc")
                .args(["qdisc", "add", "dev", &me.host_if])
                .args(tbf),
        );
        must(me.exec("tc").args(["qdisc", "add", "dev", &peer]).args(tbf));
        let loss = shaping.loss_per_mille;
        let rules = format!(
            "table inet ztsoak {{\n\
             chain out {{ type filter hook output priority 0; policy accept; \
               meta l4proto tcp numgen random mod 1000 < {loss} counter drop; }}\n\
             chain in {{ type filter hook input priority 0; policy accept; \
               meta l4proto tcp numgen random mod 1000 < {loss} counter drop; }}\n\
             }}\n"
        );
        let rules_file = dir.path().join("rules.nft");
        std::fs::write(&rules_file, rules).expect("rules");
        must(me.exec("nft").arg("-f").arg(&rules_file));
        me
    }

    /// This namespace's end of the pair (where relays listen for it).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 1)
    }

    /// The namespace's own end.
    pub fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 2)
    }

    /// Extra source address `i` in the namespace (10.N.1.1 on).
    pub fn source(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.sources, "source {i} of {}", self.sources);
        Ipv4Addr::new(10, self.net, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
    }

    /// The file a thread opens to join the namespace (`setns`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip netns exec NAME program`: add the program's arguments.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Packets the loss rule dropped so far (both directions), and what
    /// `tc` says each `tbf` sent and dropped.
    pub fn counters(&self) -> (u64, String) {
        let out = run_bounded(
            self.exec("nft").args(["list", "table", "inet", "ztsoak"]),
            T,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let dropped = text
            .split("packets ")
            .skip(1)
            .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        let host = run_bounded(
            Command::new("tc").args(["-s", "qdisc", "show", "dev", &self.host_if]),
            T,
        );
        let tbf = String::from_utf8_lossy(&host.stdout)
            .lines()
            .find(|l| l.trim_start().starts_with("Sent"))
            .unwrap_or("")
            .trim()
            .to_owned();
        (dropped, tbf)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // this end; the second command is for a namespace half made.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .output();
    }
}

fn must(cmd: &mut Command) {
    let what = format!("{cmd:?}");
    assert_ok(&run_bounded(cmd, T), &what);
}
