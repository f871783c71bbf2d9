//! Abuse limits that are fair to users behind NAT and to networks other
//! than the abuser's, against the real proxy and sshd (issue 13 item 3).
//! The prefix arithmetic for IPv6 is unit-tested in the proxy
//! (`halfopen`, `limits`): loopback IPv6 is only ::1. Here IPv4 stands in,
//! with its own nesting (address, /24, /16) over 127.0.0.0/8.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The protocol-level client needs proto's testkit hooks, which only test
// and bench targets get (a dev-dependency), so it is not in the library.
#[path = "../support/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::{Read, Write};
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_nat_source_survives_one_handshake_timeout() {
    let w = World::builder()
        .proxy_toml("handshake_timeout_secs = 1\n")
        .start();
    // One laptop behind the office NAT (127.0.0.1 here, like every user
    // of this world) sleeps in the middle of its handshake.
    let mut s = connect_from("127.0.0.1", w.proxy.port).expect("connect");
    s.write_all(b"SSH-2.0-").expect("a few bytes");
    w.proxy
        .wait_log("reason=\"timeout\"", Duration::from_secs(10));
    expect_closed(&mut s, Duration::from_secs(10));
    // Its colleagues behind the same address still get in.
    let out = run_bounded(w.ssh().arg("echo still-open"), T);
    assert_ok(&out, "ssh from the NAT after one timeout");
    assert!(String::from_utf8_lossy(&out.stdout).contains("still-open"));
    let log = w.proxy.log_text();
    assert!(!log.contains("event=\"source_penalised\""), "{log}");
}

#[test]
fn a_network_flood_cannot_evict_a_users_pending_handshake() {
    // Per-network caps as wide as the table: only the eviction rule stands
    // between the flood and the user.
    let w = World::builder()
        .proxy_toml(
            "max_handshakes = 8\nhandshake_timeout_secs = 60\n\
         [limits]\nhandshakes_per_source = 8\nhandshakes_per_56 = 8\nhandshakes_per_48 = 8\n",
        )
        .start();
    let port = w.proxy.port;
    // The user is half-way: messages 1 and 2 done, message 3 not sent yet.
    let mut user = connect_from("127.0.0.1", port).expect("user connects");
    user.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (verified, _) = client::hello(&mut user, w.pki.root_key()).expect("messages 1 and 2");
    // 40 idle sockets from one /24 of another /16: five times the table.
    const FLOOD: usize = 40;
    let flood: Vec<_> = (1..=FLOOD)
        .map(|i| connect_from(&format!("127.9.0.{i}"), port).expect("flood connects"))
        .collect();
    wait_until(Duration::from_secs(30), "the flood turned over", || {
        count(&w.proxy.log_text(), "reason=\"evicted\"") >= FLOOD - 7
    });
    // The user's handshake is still there: it finishes and is accepted.
    let (_, msg3) = client::client_auth(verified, &w.alice, "alice").expect("message 3");
    user.write_all(&msg3).expect("send message 3");
    let mut record = vec![0u8; 1024];
    user.read_exact(&mut record)
        .expect("the ACCEPT record: the user's handshake was not evicted");
    let log = w
        .proxy
        .wait_log("event=\"authorized\"", Duration::from_secs(10));
    let evicted: Vec<_> = log
        .lines()
        .filter(|l| l.contains("reason=\"evicted\""))
        .collect();
    assert!(
        evicted.iter().all(|l| l.contains("peer=127.9.0.")),
        "{evicted:#?}"
    );
    drop(flood);
}
