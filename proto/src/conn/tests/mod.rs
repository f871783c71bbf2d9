//! A [`ServerConn`] and a [`ClientConn`] in memory, on virtual time: a real
//! handshake, then every byte moved by hand, split wherever a test likes,
//! and every timer driven through `poll_timeout`/`handle_timeout`.
//!
//! Time: `t` is the virtual time in milliseconds. The proxy sees
//! `Now { unix: T0 + unix_offset + t / 1000, mono_ms: t }`; the sidecar sees
//! its own monotonic clock, `CLIENT_BASE + t`, unrelated to the proxy's, and
//! the Unix time `CLIENT_UNIX` (0), which its core must not read: both sides
//! take [`Now`] the same way, and a sidecar whose wall clock is wrong works
//! all the same.

use proptest::collection::vec;
use proptest::prelude::*;
use ssh_key::{HashAlg, PrivateKey};

use crate::conn::{
    CLOSE_GRACE_MS, ClientConn, ClientConnEvent, ClientEnd, HIGH_WATER, Now, RENEW_REPLY_MS,
    RENEW_RETRY_MS, ServerConn, ServerEvent, TERMINATE_GRACE_MS,
};
use crate::control::{Control, TerminateCode};
use crate::end::{EndKind, Ended, Termination};
use crate::frame::{Event, Transport};
use crate::identity::{ClientEvent, ClientIdentity, Timing};
use crate::identity_tests::Policy;
use crate::keys::{SigningKey, TestRng};
use crate::labels::SSHSIG_NAMESPACE_RENEW;
use crate::tests::{client_cfg, pki, run, user};

/// The proxy's Unix time at `t = 0` (before its offset).
const T0: u64 = 1_800_000_000;
/// The sidecar's monotonic clock at `t = 0`: unrelated to the proxy's.
const CLIENT_BASE: u64 = 987_654_321;
/// The sidecar's wall clock, always: far from the proxy's, and never read
/// by its core.
const CLIENT_UNIX: u64 = 0;
/// The frame size of every test tunnel.
const F: usize = 1024;
/// Data bytes in one record.
const D: usize = F - 20;

const TIMING: Timing = Timing {
    interval_secs: 30,
    deadline_secs: 10,
    cert_ttl_secs: 300,
};

/// Deterministic filler bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How the harness splits what it moves: `None` moves everything at once
/// through `handle_peer`/`handle_local`; otherwise the sizes are cycled
/// and bytes go through `recv_buf`/`local_buf` as a driver's reads do.
#[derive(Clone, Debug, Default)]
struct Cuts {
    s2c: Vec<usize>,
    c2s: Vec<usize>,
    local: Vec<usize>,
}

/// A ClientConn event without the random certificate serial.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Cert { ttl_secs: u64, renewed: bool },
    Other(ClientConnEvent),
}

struct Net {
    server: ServerConn,
    client: ClientConn,
    subca: SigningKey,
    policy: Policy,
    user: PrivateKey,
    /// Virtual time, ms.
    t: u64,
    /// The proxy's wall clock minus the true time, in seconds.
    unix_offset: i64,
    /// Whether the user's agent signs renewals.
    agent_signs: bool,
    /// The client reads nothing from the proxy.
    s2c_blocked: bool,
    /// The proxy reads nothing from the client.
    c2s_blocked: bool,
    /// sshd reads nothing.
    sshd_blocked: bool,
    /// ssh reads nothing.
    ssh_blocked: bool,
    cuts: Option<Cuts>,
    cut_at: [usize; 3],
    nonces: u64,
    /// What sshd and ssh received.
    sshd: Vec<u8>,
    ssh: Vec<u8>,
    /// Every event with the virtual time it came out.
    sev: Vec<(u64, ServerEvent)>,
    cev: Vec<(u64, ClientConnEvent)>,
    server_closed: bool,
    client_ended: bool,
}

fn net_with(timing: Timing, unix_offset: i64, cuts: Option<Cuts>) -> Net {
    let pki = pki();
    let alice = user(1);
    let (session, authed) = run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let policy = Policy::default();
    let subca = SigningKey::generate(&mut TestRng);
    let now = Now {
        unix: T0.saturating_add_signed(unix_offset),
        mono_ms: 0,
    };
    let authorized = authed.authorize(&policy, now.unix).expect("authorized");
    let server = ServerConn::accept(authorized, "web1", &subca, &policy, timing, now, TestRng)
        .expect("accept");
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        subca.public(),
    );
    Net {
        server,
        client: ClientConn::new(session.transport, identity, TestRng),
        subca,
        policy,
        user: alice,
        t: 0,
        unix_offset,
        agent_signs: true,
        s2c_blocked: false,
        c2s_blocked: false,
        sshd_blocked: false,
        ssh_blocked: false,
        cuts,
        cut_at: [0; 3],
        nonces: 0,
        sshd: Vec::new(),
        ssh: Vec::new(),
        sev: Vec::new(),
        cev: Vec::new(),
        server_closed: false,
        client_ended: false,
    }
}

/// A pair that went through ACCEPT and the first CERT at `t = 0`.
fn net() -> Net {
    started(TIMING, 0)
}

fn started(timing: Timing, unix_offset: i64) -> Net {
    let mut n = net_with(timing, unix_offset, None);
    n.pump();
    assert_eq!(
        n.seen(),
        vec![
            (0, Seen::Other(ClientConnEvent::Accepted)),
            (
                0,
                Seen::Cert {
                    ttl_secs: timing.cert_ttl_secs,
                    renewed: false
                }
            ),
        ]
    );
    assert!(n.client.accepted());
    n.cev.clear();
    n
}

impl Net {
    fn now(&self) -> Now {
        Now {
            unix: (T0 + self.t / 1000).saturating_add_signed(self.unix_offset),
            mono_ms: self.t,
        }
    }

    /// The sidecar's clock: its own monotonic clock, and a wall clock its
    /// core does not read.
    fn cm(&self) -> Now {
        Now {
            unix: CLIENT_UNIX,
            mono_ms: CLIENT_BASE + self.t,
        }
    }

    fn nonce(&mut self) -> [u8; 32] {
        self.nonces += 1;
        let mut n = [0u8; 32];
        let mut x = self.nonces;
        for chunk in n.chunks_mut(8) {
            x = splitmix(x);
            chunk.copy_from_slice(&x.to_be_bytes());
        }
        n
    }

    fn cut(&mut self, which: usize) -> usize {
        let Some(cuts) = &self.cuts else {
            return usize::MAX;
        };
        let list = [&cuts.s2c, &cuts.c2s, &cuts.local][which];
        let n = list[self.cut_at[which] % list.len()];
        self.cut_at[which] += 1;
        n
    }

    /// Moves what the proxy has for the client, as far as the client reads.
    fn move_s2c(&mut self) -> bool {
        let mut moved = false;
        while !self.s2c_blocked && !self.server_closed && self.client.wants_peer() {
            let pending = self.server.poll_transmit().len();
            if pending == 0 {
                break;
            }
            let want = self.cut(0).min(pending);
            let (cm, now) = (self.cm(), self.now());
            let n = if self.cuts.is_some() {
                let buf = self.client.recv_buf();
                let n = want.min(buf.len());
                buf[..n].copy_from_slice(&self.server.poll_transmit()[..n]);
                self.client.handle_peer_read(n, cm);
                n
            } else {
                let chunk = self.server.poll_transmit()[..want].to_vec();
                self.client.handle_peer(&chunk, cm);
                want
            };
            self.server.transmitted(n, now);
            moved = true;
        }
        moved
    }

    /// Moves what the client has for the proxy, as far as the proxy reads.
    fn move_c2s(&mut self) -> bool {
        let mut moved = false;
        while !self.c2s_blocked && !self.client_ended && self.server.wants_peer() {
            let pending = self.client.poll_transmit().len();
            if pending == 0 {
                break;
            }
            let want = self.cut(1).min(pending);
            let (cm, now) = (self.cm(), self.now());
            let n = if self.cuts.is_some() {
                let buf = self.server.recv_buf();
                let n = want.min(buf.len());
                buf[..n].copy_from_slice(&self.client.poll_transmit()[..n]);
                self.server
                    .handle_peer_read(n, &self.subca, &self.policy, now);
                n
            } else {
                let chunk = self.client.poll_transmit()[..want].to_vec();
                self.server
                    .handle_peer(&chunk, &self.subca, &self.policy, now);
                want
            };
            self.client.transmitted(n, cm);
            moved = true;
        }
        moved
    }

    fn deliver(&mut self) -> bool {
        let mut moved = false;
        let n = self.server.poll_local().len();
        if !self.sshd_blocked && n > 0 {
            self.sshd.extend_from_slice(self.server.poll_local());
            self.server.delivered(n, self.now());
            moved = true;
        }
        let n = self.client.poll_local().len();
        if !self.ssh_blocked && n > 0 {
            self.ssh.extend_from_slice(self.client.poll_local());
            self.client.delivered(n, self.cm());
            moved = true;
        }
        moved
    }

    /// The user's agent signs what the sidecar asks it to.
    fn sign(&mut self) -> bool {
        let Some(data) = self.client.poll_sign() else {
            return false;
        };
        let sig = if self.agent_signs {
            use ssh_key::encoding::Encode;
            let sig = self
                .user
                .sign(SSHSIG_NAMESPACE_RENEW, HashAlg::Sha512, &data)
                .expect("sign");
            Ok(sig.encode_vec().expect("encode"))
        } else {
            Err("agent refused".to_owned())
        };
        self.client.handle_signature(sig, self.cm());
        true
    }

    /// Drains both event queues; a side that is over closes its socket,
    /// which the other side sees as end of stream.
    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.server.poll_event() {
            any = true;
            if ev == ServerEvent::Closed {
                self.server_closed = true;
                self.client.handle_peer_eof(self.cm());
            }
            self.sev.push((self.t, ev));
        }
        while let Some(ev) = self.client.poll_event() {
            any = true;
            if matches!(ev, ClientConnEvent::Ended(_)) {
                self.client_ended = true;
                if !self.server_closed {
                    self.server.handle_peer_eof(self.now());
                }
            }
            self.cev.push((self.t, ev));
        }
        any
    }

    /// Moves everything that can move now.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = self.move_s2c();
            moved |= self.move_c2s();
            moved |= self.deliver();
            moved |= self.sign();
            moved |= self.drain();
            if !moved {
                return;
            }
        }
        panic!("pump does not settle");
    }

    fn next_timer(&self) -> Option<u64> {
        let s = self.server.poll_timeout();
        let c = self
            .client
            .poll_timeout()
            .map(|at| at.saturating_sub(CLIENT_BASE));
        s.into_iter().chain(c).min()
    }

    /// Runs every timer due up to `until`, in order, then sets the clock to
    /// `until`. A timer that is still due right after it was handled would
    /// make a driver spin: that fails the test.
    fn run_until(&mut self, until: u64) {
        let mut same = 0;
        while let Some(at) = self.next_timer().filter(|&at| at <= until) {
            if at <= self.t {
                same += 1;
                assert!(
                    same < 4,
                    "a timer stays due at {} (driver would spin)",
                    self.t
                );
            } else {
                same = 0;
                self.t = at;
            }
            if self.server.poll_timeout().is_some_and(|at| at <= self.t) {
                let (now, nonce) = (self.now(), self.nonce());
                self.server.handle_timeout(now, nonce);
            }
            if self
                .client
                .poll_timeout()
                .is_some_and(|at| at <= self.cm().mono_ms)
            {
                self.client.handle_timeout(self.cm());
            }
            self.pump();
        }
        self.t = self.t.max(until);
        self.pump();
    }

    /// ssh writes to the sidecar.
    fn ssh_write(&mut self, data: &[u8]) {
        assert!(self.client.wants_local());
        let mut rest = data;
        while !rest.is_empty() {
            let cm = self.cm();
            if self.cuts.is_some() {
                let want = self.cut(2);
                let buf = self.client.local_buf();
                let n = want.min(buf.len()).min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.client.handle_local_read(n, cm);
                rest = &rest[n..];
            } else {
                self.client.handle_local(rest, cm);
                rest = &[];
            }
        }
        self.pump();
    }

    /// sshd writes to the proxy.
    fn sshd_write(&mut self, data: &[u8]) {
        assert!(self.server.wants_local());
        let mut rest = data;
        while !rest.is_empty() {
            let now = self.now();
            if self.cuts.is_some() {
                let want = self.cut(2);
                let buf = self.server.local_buf();
                let n = want.min(buf.len()).min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.server.handle_local_read(n, now);
                rest = &rest[n..];
            } else {
                self.server.handle_local(rest, now);
                rest = &[];
            }
        }
        self.pump();
    }

    fn server_events(&self) -> Vec<ServerEvent> {
        self.sev.iter().map(|(_, e)| e.clone()).collect()
    }

    /// The client's events, serials left out.
    fn seen(&self) -> Vec<(u64, Seen)> {
        self.cev
            .iter()
            .map(|(t, e)| {
                let s = match e {
                    ClientConnEvent::CertInstalled {
                        ttl_secs, renewed, ..
                    } => Seen::Cert {
                        ttl_secs: *ttl_secs,
                        renewed: *renewed,
                    },
                    other => Seen::Other(other.clone()),
                };
                (*t, s)
            })
            .collect()
    }

    fn terminated(&self) -> Option<(u64, Ended)> {
        self.sev.iter().find_map(|(t, e)| match e {
            ServerEvent::Terminated(end) => Some((*t, end.clone())),
            _ => None,
        })
    }
}

/// Reads `chunk` bytes of what the proxy has for the client every
/// `every_ms` until the proxy closes (at most `max` reads).
fn trickle(n: &mut Net, chunk: usize, every_ms: u64, max: usize) {
    for _ in 0..max {
        n.run_until(n.t + every_ms);
        if n.server_closed {
            return;
        }
        let len = n.server.poll_transmit().len().min(chunk);
        let part = n.server.poll_transmit()[..len].to_vec();
        n.client.handle_peer(&part, n.cm());
        n.server.transmitted(len, n.now());
    }
}

fn ended(kind: EndKind, reason: &str) -> ServerEvent {
    ServerEvent::Terminated(Ended::new(kind, reason))
}

mod cover;
mod data;
mod identity;
mod kills;
mod rekey;
mod renewal;

/// A connection's `Debug` (an `expect_err`, a `{:?}` in a log line) shows
/// no session bytes: not the queues for sshd and ssh, nor what was read
/// from them, nor data held for a cover tick.
#[test]
fn a_connections_debug_never_shows_session_bytes() {
    let mut n = net();
    n.sshd_blocked = true;
    n.ssh_blocked = true;
    n.s2c_blocked = true;
    let (up, down) = (b"hunter2 typed at ssh", b"secret printed by sshd");
    let t = n.cm();
    n.client.handle_local(up, t);
    let now = n.now();
    n.server.handle_local(down, now);
    n.pump();
    // The client's bytes wait for sshd, the proxy's in its queue.
    assert!(n.sshd.is_empty() && n.ssh.is_empty());
    for shown in [format!("{:?}", n.server), format!("{:?}", n.client)] {
        for secret in [&up[..], &down[..]] {
            let as_debug = format!("{:?}", &secret[..6]);
            let inner = &as_debug[1..as_debug.len() - 1];
            assert!(!shown.contains(inner), "{shown}");
        }
        assert!(shown.contains("Queue"), "{shown}");
    }
}

/// What one idle session's core holds in place (issue 26): the connection
/// itself, without the buffers it allocates only while bytes pass. A
/// rekey's ML-KEM secret is boxed, so a session that is not rekeying does
/// not carry it.
#[test]
fn an_idle_connection_holds_no_rekey_state_in_place() {
    let server = std::mem::size_of::<crate::conn::ServerConn>();
    let client = std::mem::size_of::<crate::conn::ClientConn>();
    eprintln!("ServerConn {server} B, ClientConn {client} B");
    assert!(server <= 4096, "ServerConn is {server} bytes");
    assert!(client <= 4096, "ClientConn is {client} bytes");
}
