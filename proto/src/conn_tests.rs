//! A [`ServerConn`] and a [`ClientConn`] in memory, on virtual time: a real
//! handshake, then every byte moved by hand, split wherever a test likes,
//! and every timer driven through `poll_timeout`/`handle_timeout`.
//!
//! Time: `t` is the virtual time in milliseconds. The proxy sees
//! `Now { unix: T0 + unix_offset + t / 1000, mono_ms: t }`; the sidecar sees
//! only its own monotonic clock, `CLIENT_BASE + t`. By construction the
//! sidecar never gets a Unix time: [`ClientConn::new`] takes none and every
//! one of its calls takes a monotonic millisecond count.

use crate::keys::TestRng;
use proptest::collection::vec;
use proptest::prelude::*;
use ssh_key::{HashAlg, PrivateKey};

use crate::conn::{
    CLOSE_GRACE_MS, ClientConn, ClientConnEvent, ClientEnd, HIGH_WATER, Now, RENEW_REPLY_MS,
    RENEW_RETRY_MS, ServerConn, ServerEvent, TERMINATE_GRACE_MS,
};
use crate::control::Control;
use crate::end::{EndKind, Ended};
use crate::frame::{Event, Transport};
use crate::identity::{ClientEvent, ClientIdentity, Timing};
use crate::identity_tests::Policy;
use crate::keys::SigningKey;
use crate::labels::SSHSIG_NAMESPACE_RENEW;
use crate::tests::{client_cfg, pki, run, user};

/// The proxy's Unix time at `t = 0` (before its offset).
const T0: u64 = 1_800_000_000;
/// The sidecar's monotonic clock at `t = 0`: unrelated to the proxy's.
const CLIENT_BASE: u64 = 987_654_321;
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
    let server =
        ServerConn::accept(authorized, "web1", &subca, &policy, timing, now).expect("accept");
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        subca.public(),
    );
    Net {
        server,
        client: ClientConn::new(session.transport, identity),
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

    /// The sidecar's monotonic clock.
    fn cm(&self) -> u64 {
        CLIENT_BASE + self.t
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
                self.client.handle_peer_eof();
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
            if self.client.poll_timeout().is_some_and(|at| at <= self.cm()) {
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

fn ended(kind: EndKind, reason: &str) -> ServerEvent {
    ServerEvent::Terminated(Ended::new(kind, reason))
}

// ------------------------------------------------------------ data, close

#[test]
fn data_both_ways_across_any_split_then_half_closes_and_a_normal_close() {
    let cuts = Cuts {
        s2c: vec![1, 1023, 7, 1025, 3000, 2, 4096, 511],
        c2s: vec![5, 2048, 1, 999, 1024, 17, 6000],
        local: vec![1, 1004, 1005, 3, 70_000, 200],
    };
    for cuts in [None, Some(cuts)] {
        let mut n = net_with(TIMING, 0, cuts);
        n.pump();
        let up = bytes(1, 150_000);
        let down = bytes(2, 220_000);
        n.ssh_write(&up[..100_000]);
        n.sshd_write(&down[..120_000]);
        n.ssh_write(&up[100_000..]);
        assert_eq!(n.sshd, up);
        // The client half-closes; what it sent before reaches sshd first.
        n.sshd_blocked = true;
        n.ssh_write(b"last words");
        n.client.handle_local_eof(n.cm());
        n.pump();
        assert_eq!(n.sev, vec![(0, ServerEvent::PeerClosed)]);
        assert!(!n.server.local_finished(), "sshd still has data to get");
        n.sshd_blocked = false;
        n.pump();
        assert!(n.server.local_finished());
        assert_eq!(n.sshd[up.len()..], b"last words"[..]);
        // sshd's direction still works.
        n.sshd_write(&down[120_000..]);
        assert_eq!(n.ssh, down);
        // sshd closes: the tunnel closes once everything was written.
        n.ssh_blocked = true;
        n.sshd_write(b"bye");
        n.server.handle_local_eof(n.now());
        n.pump();
        assert_eq!(
            n.server_events(),
            vec![ServerEvent::PeerClosed, ServerEvent::Closed]
        );
        // The proxy closed TCP after its CLOSE: a normal end for the
        // client, and what ssh has not read yet is still delivered.
        assert_eq!(
            n.seen(),
            vec![
                (0, Seen::Other(ClientConnEvent::Accepted)),
                (
                    0,
                    Seen::Cert {
                        ttl_secs: 300,
                        renewed: false
                    }
                ),
                (0, Seen::Other(ClientConnEvent::PeerClosed)),
                (0, Seen::Other(ClientConnEvent::Ended(None))),
            ]
        );
        assert!(!n.client.local_finished());
        assert_eq!(n.client.poll_local(), b"bye");
        n.ssh_blocked = false;
        n.pump();
        assert!(n.client.local_finished());
        assert_eq!(n.ssh[down.len()..], b"bye"[..]);
        assert!(n.server.poll_transmit().is_empty());
        assert_eq!(n.server.poll_timeout(), None);
    }
}

#[test]
fn sshd_closing_first_then_the_client_closes() {
    let mut n = net();
    n.sshd_write(b"motd");
    n.server.handle_local_eof(n.now());
    n.pump();
    assert_eq!(n.ssh, b"motd");
    assert!(n.client.local_finished());
    // The client may still send before it closes its side.
    n.t = 500;
    n.ssh_write(b"exit\n");
    n.client.handle_local_eof(n.cm());
    n.pump();
    assert_eq!(n.sshd, b"exit\n");
    assert_eq!(
        n.sev,
        vec![(500, ServerEvent::PeerClosed), (500, ServerEvent::Closed)]
    );
    assert_eq!(
        n.seen(),
        vec![
            (0, Seen::Other(ClientConnEvent::PeerClosed)),
            (500, Seen::Other(ClientConnEvent::Ended(None))),
        ]
    );
}

#[test]
fn close_grace_starts_once_everything_before_the_close_was_written() {
    // sshd writes a lot and closes; the client reads slowly (but all of
    // it within the write bound) and never sends its own CLOSE.
    let mut n = net();
    n.s2c_blocked = true;
    let down = bytes(3, 200_000);
    n.t = 1000;
    n.sshd_write(&down);
    n.server.handle_local_eof(n.now());
    let mut t = 1000;
    while !n.server.poll_transmit().is_empty() {
        t += 500;
        n.run_until(t);
        let len = n.server.poll_transmit().len().min(20_000);
        let chunk = n.server.poll_transmit()[..len].to_vec();
        n.client.handle_peer(&chunk, n.cm());
        n.server.transmitted(len, n.now());
        n.pump();
    }
    assert!(t > 1000 + CLOSE_GRACE_MS, "the flush outlasts the grace");
    assert_eq!(n.ssh, down, "nothing queued before the CLOSE is dropped");
    assert!(n.client.local_finished());
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    // The grace runs from the moment the CLOSE was written.
    n.s2c_blocked = false;
    n.run_until(t + CLOSE_GRACE_MS - 1);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(t + CLOSE_GRACE_MS);
    assert_eq!(n.sev, vec![(t + CLOSE_GRACE_MS, ServerEvent::Closed)]);
    assert_eq!(
        n.cev.last(),
        Some(&(t + CLOSE_GRACE_MS, ClientConnEvent::Ended(None)))
    );
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

#[test]
fn after_sshd_closes_a_client_reading_a_trickle_ends_at_the_flush_bound() {
    // 200 KB left for the client when sshd closes; it reads 1 KB every
    // 500 ms (progress, so never a stalled queue), which would take 100 s.
    // No challenge falls due meanwhile (one would queue behind the 200 KB
    // and end the session as proof_late first).
    let timing = Timing {
        interval_secs: 3600,
        deadline_secs: 10,
        cert_ttl_secs: 3600,
    };
    let mut n = started(timing, 0);
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(12, 200_000));
    n.server.handle_local_eof(n.now());
    assert_eq!(n.server.poll_timeout(), Some(11_000), "the stall check");
    trickle(&mut n, 1000, 500, 200);
    let reason =
        "client did not read sshd's last output within 60s of sshd closing; connection closed";
    assert_eq!(
        n.sev,
        vec![
            (61_000, ended(EndKind::ClientStalled, reason)),
            (61_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev.last(),
        Some(&(61_000, ClientConnEvent::Ended(Some(ClientEnd::Lost))))
    );
}

#[test]
fn after_sshd_closes_a_slow_steady_client_gets_the_whole_tail() {
    // The same 200 KB read at 1 KB every 60 ms (about 17 KB/s, a poor
    // mobile link): 12 s, past the 10 s write bound but within the flush
    // bound, so the client gets everything and the session ends normally.
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(12, 200_000));
    n.server.handle_local_eof(n.now());
    trickle(&mut n, 1000, 60, 1000);
    assert!(
        !n.sev
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::Terminated(_))),
        "{:?}",
        n.sev
    );
    assert!(
        n.cev.iter().any(|(_, e)| *e == ClientConnEvent::PeerClosed),
        "the client read the CLOSE: {:?}",
        n.cev
    );
}

// ------------------------------------------------------------------ kills

/// Kills a session whose client stopped reading after `written` bytes of
/// `sshd_bytes` from sshd (after ACCEPT and CERT), and checks the proxy's
/// side: the decision at once, nothing more for sshd whatever the client
/// sends, and at most the rest of the record being written plus exactly
/// one TERMINATE in the transmit queue.
fn kill_a_client_that_reads_nothing(written: usize, sshd_bytes: usize) -> Net {
    let mut n = net();
    let written_before = 2 * F; // ACCEPT and CERT
    // Data from the client that sshd has not read yet.
    n.sshd_blocked = true;
    n.ssh_write(&bytes(4, 3000));
    assert_eq!(n.server.poll_local().len(), 3000);
    // The client stops reading; sshd keeps writing.
    n.s2c_blocked = true;
    n.t = 2000;
    n.sshd_write(&bytes(5, sshd_bytes));
    assert_eq!(n.server.poll_transmit().len(), sshd_bytes.div_ceil(D) * F);
    let part = n.server.poll_transmit()[..written].to_vec();
    n.client.handle_peer(&part, n.cm());
    n.server.transmitted(written, n.now());

    n.t = 2500;
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    let kill = ended(EndKind::PrincipalBanned, "principal alice banned");
    assert_eq!(n.server.poll_event(), Some(kill));
    assert_eq!(n.server.poll_event(), None);
    assert_eq!(
        n.server.ended().map(|e| e.kind),
        Some(EndKind::PrincipalBanned)
    );
    assert!(n.server.poll_local().is_empty());
    // Every record already sealed stays (its nonce is spent), then one
    // TERMINATE; nothing for sshd.
    let sealed = written_before + sshd_bytes.div_ceil(D) * F;
    assert_eq!(
        n.server.poll_transmit().len(),
        sealed - written_before - written + F,
        "written {written}"
    );
    assert!(!n.server.wants_peer() && !n.server.wants_local());

    // The client keeps sending DATA records: none reaches sshd.
    for i in 0..5 {
        n.client.handle_local(&bytes(6 + i, 5000), n.cm());
        let wire = n.client.poll_transmit().to_vec();
        n.server.handle_peer(&wire, &n.subca, &n.policy, n.now());
        n.client.transmitted(wire.len(), n.cm());
        n.server.delivered(0, n.now());
        assert!(n.server.poll_local().is_empty());
    }
    n.server.handle_timeout(n.now(), [1; 32]);
    assert!(n.server.poll_local().is_empty());
    assert_eq!(n.server.poll_event(), None);
    assert!(n.sshd.is_empty());
    n
}

/// The client reads again: it gets the rest of the record it was in the
/// middle of, then the TERMINATE, and nothing reaches ssh.
fn the_client_reads_the_terminate(mut n: Net) {
    let wire = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&wire, n.cm());
    n.server.transmitted(wire.len(), n.now());
    assert_eq!(n.server.poll_event(), Some(ServerEvent::Closed));
    assert_eq!(n.server.poll_timeout(), None);
    let mut evs = Vec::new();
    while let Some(e) = n.client.poll_event() {
        evs.push(e);
    }
    assert_eq!(
        evs,
        vec![ClientConnEvent::Ended(Some(ClientEnd::Terminated(
            "principal alice banned".into()
        )))]
    );
    assert!(n.client.poll_local().is_empty());
    assert!(n.ssh.is_empty());
}

#[test]
fn a_ban_ends_a_session_whose_client_reads_nothing_at_once() {
    // Bytes of the proxy's transmit queue written before the ban: none,
    // whole records, and records plus part of one.
    for written in [0, 3 * F, 3 * F + 500, 1, 7 * F - 1] {
        kill_a_client_that_reads_nothing(written, 100_000);
    }
}

#[test]
fn the_client_opens_the_terminate_behind_a_partly_written_record() {
    // Nothing but the record being written was queued.
    for (written, sshd_bytes) in [(300, 500), (F - 1, 500), (0, 0), (F + 7, 2 * D)] {
        let n = kill_a_client_that_reads_nothing(written, sshd_bytes);
        the_client_reads_the_terminate(n);
    }
}

#[test]
fn the_client_opens_the_terminate_after_unwritten_records_were_dropped() {
    for written in [0, 3 * F, 3 * F + 500, 1, 7 * F - 1] {
        let n = kill_a_client_that_reads_nothing(written, 100_000);
        the_client_reads_the_terminate(n);
    }
}

#[test]
fn a_kill_after_the_grace_drops_the_terminate_and_closes() {
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    assert_eq!(n.server.poll_transmit().len(), F);
    // The TERMINATE gets a second to leave, then the tunnel closes.
    assert_eq!(n.server.poll_timeout(), Some(2000));
    n.run_until(2000);
    assert_eq!(
        n.server_events(),
        vec![
            ended(EndKind::PrincipalBanned, "principal alice banned"),
            ServerEvent::Closed
        ]
    );
    assert_eq!(n.sev[1].0, 2000);
    assert!(n.server.poll_transmit().is_empty());
}

#[test]
fn a_kills_grace_runs_from_the_decision_however_the_client_reads() {
    // A backlog for a client that stopped reading, then a ban: the client
    // reads 100 bytes every 200 ms, progress that never reaches the
    // TERMINATE. The connection still closes one grace after the ban.
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(11, 100_000));
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    n.pump();
    assert_eq!(n.server.poll_timeout(), Some(1000 + TERMINATE_GRACE_MS));
    trickle(&mut n, 100, 200, 100);
    let close = 1000 + TERMINATE_GRACE_MS;
    assert_eq!(
        n.sev,
        vec![
            (
                1000,
                ended(EndKind::PrincipalBanned, "principal alice banned")
            ),
            (close, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev,
        vec![(close, ClientConnEvent::Ended(Some(ClientEnd::Lost)))]
    );
    assert!(n.sshd.is_empty());
}

#[test]
fn a_test_client_in_manual_mode_ends_at_terminate_and_takes_no_more() {
    let mut n = net_with(TIMING, 0, None);
    n.client.set_manual(true);
    let wire = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&wire, n.cm());
    n.server.transmitted(wire.len(), n.now());
    n.policy.banned.borrow_mut().push("alice".into());
    n.server.recheck(&n.policy, n.now());
    let terminate = n.server.poll_transmit().to_vec();
    n.client.handle_peer(&terminate, n.cm());
    // The TERMINATE is handed to the test, and the session is over: the
    // client opens nothing after it.
    let evs: Vec<ClientConnEvent> = std::iter::from_fn(|| n.client.poll_event()).collect();
    assert!(
        matches!(
            evs.as_slice(),
            [
                ClientConnEvent::Control(Control::Accept { .. }),
                ClientConnEvent::Control(Control::Cert { .. }),
                ClientConnEvent::Control(Control::Terminate { .. }),
                ClientConnEvent::Ended(Some(ClientEnd::Terminated(reason))),
            ] if reason == "principal alice banned"
        ),
        "{evs:?}"
    );
    assert!(n.client.is_done() && !n.client.wants_peer());
    // More bytes than its receive buffer holds come back at once, unread.
    n.client
        .handle_peer(&vec![0u8; 4 * crate::conn::MAX_BATCH], n.cm());
    assert_eq!(n.client.poll_event(), None);
}

/// A proxy and a hand-driven client (its own sealer, opener and identity),
/// so that the client can send what an honest sidecar never would.
struct RawClient {
    server: ServerConn,
    transport: Transport,
    identity: ClientIdentity,
    subca: SigningKey,
    policy: Policy,
}

impl RawClient {
    fn new() -> Self {
        let pki = pki();
        let alice = user(1);
        let (session, authed) =
            run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
        let policy = Policy::default();
        let subca = SigningKey::generate(&mut TestRng);
        let now = Now {
            unix: T0,
            mono_ms: 0,
        };
        let authorized = authed.authorize(&policy, T0).expect("authorized");
        let server =
            ServerConn::accept(authorized, "web1", &subca, &policy, TIMING, now).expect("accept");
        let identity = ClientIdentity::new(
            session.handshake_hash,
            "alice",
            session.session_key,
            subca.public(),
        );
        let mut me = Self {
            server,
            transport: session.transport,
            identity,
            subca,
            policy,
        };
        let evs = me.read(0);
        assert!(matches!(evs[0], Event::Control(Control::Accept { .. })));
        let Event::Control(cert) = &evs[1] else {
            panic!("{evs:?}")
        };
        assert!(matches!(
            me.identity.handle(cert, 0),
            Ok(ClientEvent::CertInstalled { .. })
        ));
        me
    }

    fn now(mono_ms: u64) -> Now {
        Now {
            unix: T0 + mono_ms / 1000,
            mono_ms,
        }
    }

    /// Everything the proxy sent, opened.
    fn read(&mut self, mono_ms: u64) -> Vec<Event> {
        let wire = self.server.poll_transmit().to_vec();
        self.server.transmitted(wire.len(), Self::now(mono_ms));
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let used = self
            .transport
            .opener
            .open_all(&wire, &mut data, &mut events)
            .expect("open");
        assert_eq!(used, wire.len());
        events
    }

    /// Runs to the first challenge and returns the genuine proof.
    fn challenge(&mut self) -> (u64, Control) {
        let at = self.server.poll_timeout().expect("a timer");
        assert_eq!(at, TIMING.interval_secs * 1000);
        self.server.handle_timeout(Self::now(at), [3; 32]);
        assert_eq!(
            self.server.poll_event(),
            Some(ServerEvent::Challenged { seq: 1 })
        );
        let evs = self.read(at);
        let Some(Event::Control(ch)) = evs.first() else {
            panic!("{evs:?}")
        };
        let Ok(ClientEvent::Reply(proof)) = self.identity.handle(ch, at) else {
            panic!("no proof")
        };
        (at, proof)
    }

    /// Seals `batch` and hands it to the proxy in one read.
    fn send(&mut self, batch: &[Rec], at: u64) {
        let mut wire = Vec::new();
        for rec in batch {
            let sealer = &mut self.transport.sealer;
            match rec {
                Rec::Data(d) => sealer.seal_data(d, &mut wire),
                Rec::Ctl(m) => sealer.seal_control(m, &mut wire),
            }
            .expect("seal");
        }
        self.server
            .handle_peer(&wire, &self.subca, &self.policy, Self::now(at));
    }
}

/// A record a hand-driven client sends.
enum Rec {
    Data(&'static [u8]),
    Ctl(Control),
}

#[test]
fn data_in_the_batch_of_a_forged_proof_or_after_it_never_reaches_sshd() {
    let mut c = RawClient::new();
    let (at, proof) = c.challenge();
    let Control::Proof { seq, cert, mut sig } = proof else {
        panic!()
    };
    sig[17] ^= 4;
    let forged = Control::Proof { seq, cert, sig };
    c.send(
        &[Rec::Data(b"before"), Rec::Ctl(forged), Rec::Data(b"after")],
        at + 5,
    );
    assert_eq!(
        c.server.poll_event(),
        Some(ended(
            EndKind::ProofBadSignature,
            "proof signature invalid (relayed from another connection?)"
        ))
    );
    assert_eq!(c.server.poll_event(), None);
    assert!(c.server.poll_local().is_empty());
    c.send(&[Rec::Data(b"later")], at + 6);
    assert!(c.server.poll_local().is_empty());
    assert_eq!(c.server.poll_event(), None);
    // What was sent: one TERMINATE with the reason.
    let evs = c.read(at + 6);
    assert_eq!(
        evs,
        vec![Event::Control(Control::Terminate {
            code: crate::control::TerminateCode::IdentityRevoked,
            reason: "proof signature invalid (relayed from another connection?)".into()
        })]
    );
    assert_eq!(c.server.poll_event(), Some(ServerEvent::Closed));

    // The same batch with the genuine proof delivers all of its data.
    let mut c = RawClient::new();
    let (at, proof) = c.challenge();
    c.send(
        &[Rec::Data(b"before"), Rec::Ctl(proof), Rec::Data(b"after")],
        at + 5,
    );
    assert_eq!(c.server.poll_event(), Some(ServerEvent::ProofOk { seq: 1 }));
    assert_eq!(c.server.poll_local(), b"beforeafter");
}

#[test]
fn data_in_the_batch_of_a_late_or_revoked_proof_never_reaches_sshd() {
    for revoked in [false, true] {
        let mut n = net();
        n.c2s_blocked = true;
        n.t = 29_000;
        n.ssh_write(b"before");
        if revoked {
            let serial = n.server.identity().serial();
            n.policy.revoked.borrow_mut().push(serial);
        }
        // The challenge goes out at 30 s and is answered at once, but the
        // proxy reads the answer only after the deadline (or not at all
        // in time to matter: the serial was revoked meanwhile).
        n.run_until(30_000);
        assert_eq!(n.sev, vec![(30_000, ServerEvent::Challenged { seq: 1 })]);
        n.ssh_write(b"after");
        assert_eq!(n.client.poll_transmit().len(), 3 * F);
        n.t = if revoked { 31_000 } else { 40_000 };
        n.c2s_blocked = false;
        n.sshd_blocked = true;
        n.move_c2s();
        let want = if revoked {
            ended(EndKind::SerialRevoked, "certificate revoked")
        } else {
            ended(
                EndKind::ProofLate,
                "proof for challenge 1 arrived after the deadline",
            )
        };
        assert_eq!(n.server.poll_event(), Some(want));
        assert!(n.server.poll_local().is_empty());
        n.sshd_blocked = false;
        n.ssh_write(b"later");
        n.pump();
        assert!(n.sshd.is_empty(), "{:?}", n.sshd);
        assert!(matches!(
            n.cev.last(),
            Some((_, ClientConnEvent::Ended(Some(ClientEnd::Terminated(_)))))
        ));
    }
}

// ------------------------------------------------------------ write bound

#[test]
fn a_client_that_reads_nothing_ends_at_the_write_bound() {
    let mut n = net();
    n.s2c_blocked = true;
    n.t = 1000;
    n.sshd_write(&bytes(7, 5000));
    assert_eq!(n.server.poll_timeout(), Some(11_000));
    // Some progress at 4 s restarts the bound.
    n.t = 4000;
    let part = n.server.poll_transmit()[..100].to_vec();
    n.client.handle_peer(&part, n.cm());
    n.server.transmitted(100, n.now());
    assert_eq!(n.server.poll_timeout(), Some(14_000));
    n.run_until(13_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(14_000);
    assert_eq!(
        n.sev,
        vec![
            (
                14_000,
                ended(
                    EndKind::ClientStalled,
                    "client read nothing for 10s; connection closed"
                )
            ),
            (14_000, ServerEvent::Closed),
        ]
    );
    // No TERMINATE for a client that does not read.
    assert!(n.server.poll_transmit().is_empty());
    assert_eq!(
        n.cev,
        vec![(14_000, ClientConnEvent::Ended(Some(ClientEnd::Lost)))]
    );
}

#[test]
fn sshd_reading_nothing_ends_at_the_write_bound() {
    let mut n = net();
    n.sshd_blocked = true;
    n.t = 2000;
    n.ssh_write(&bytes(8, 3000));
    assert_eq!(n.server.poll_timeout(), Some(12_000));
    n.t = 5000;
    n.sshd.extend_from_slice(&n.server.poll_local()[..1000]);
    n.server.delivered(1000, n.now());
    assert_eq!(n.server.poll_timeout(), Some(15_000));
    n.run_until(14_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    n.run_until(15_000);
    let reason = "sshd read nothing for 10s; connection closed";
    assert_eq!(
        n.sev,
        vec![
            (15_000, ended(EndKind::UpstreamStalled, reason)),
            (15_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev,
        vec![(
            15_000,
            ClientConnEvent::Ended(Some(ClientEnd::Terminated(reason.into())))
        )]
    );
    assert_eq!(n.sshd, bytes(8, 3000)[..1000]);
}

#[test]
fn ssh_not_reading_neither_ends_the_session_nor_spins_the_sidecar() {
    // ssh suspended (~^Z) while a little output arrives: the session goes
    // on, and the sidecar's timers do not fire in a loop.
    let mut n = net();
    n.ssh_blocked = true;
    n.sshd_write(b"output while ssh is stopped");
    n.run_until(120_000);
    assert!(n.terminated().is_none(), "{:?}", n.sev);
    assert!(
        n.sev
            .iter()
            .any(|(_, e)| *e == ServerEvent::ProofOk { seq: 3 })
    );
    assert_eq!(n.client.poll_local(), b"output while ssh is stopped");
    n.ssh_blocked = false;
    n.pump();
    assert_eq!(n.ssh, b"output while ssh is stopped");
}

// ------------------------------------------------- challenges and renewals

#[test]
fn many_challenges_and_renewals_on_the_sidecars_own_timers() {
    // The proxy's wall clock is 290 s off either way; the sidecar has none.
    let mut logs = Vec::new();
    for offset in [-290, 0, 290] {
        let mut n = started(TIMING, offset);
        n.run_until(999_999);
        assert!(n.terminated().is_none(), "{:?}", n.terminated());
        let count = |f: &dyn Fn(&ServerEvent) -> bool| n.sev.iter().filter(|(_, e)| f(e)).count();
        let challenged = count(&|e| matches!(e, ServerEvent::Challenged { .. }));
        let proved = count(&|e| matches!(e, ServerEvent::ProofOk { .. }));
        let renewed: Vec<u64> = n
            .sev
            .iter()
            .filter(|(_, e)| *e == ServerEvent::Renewed)
            .map(|(t, _)| *t)
            .collect();
        // ~30 s apart (±10 %) for 1000 s.
        assert!((30..=38).contains(&challenged), "{challenged}");
        assert_eq!(proved, challenged);
        // Renewal two thirds into each 300 s certificate, on the
        // sidecar's monotonic clock.
        assert_eq!(renewed, vec![200_000, 400_000, 600_000, 800_000]);
        let installed: Vec<u64> = n
            .seen()
            .iter()
            .filter(|(_, s)| {
                *s == Seen::Cert {
                    ttl_secs: 300,
                    renewed: true,
                }
            })
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(installed, renewed);
        let answered = n
            .cev
            .iter()
            .filter(|(_, e)| matches!(e, ClientConnEvent::Answered { .. }))
            .count();
        let acked = n
            .cev
            .iter()
            .filter(|(_, e)| matches!(e, ClientConnEvent::Acked { .. }))
            .count();
        assert_eq!((answered, acked), (proved, proved));
        assert_eq!(n.server.identity().renewals(), 4);
        assert_eq!(n.server.identity().proofs(), proved as u64);
        assert_eq!(n.server.identity().principal(), "alice");
        let serial = n.server.identity().serial();
        assert_eq!(n.client.identity().cert().map(|c| c.serial), Some(serial));
        let cert = n.client.identity().cert().expect("cert");
        assert_eq!(
            cert.not_before,
            T0.saturating_add_signed(offset) + 800,
            "issued on the proxy's clock"
        );
        logs.push((n.seen(), n.server_events()));
    }
    // Whatever the proxy's clock says, the sidecar does the same thing at
    // the same moments.
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

#[test]
fn a_renewal_answered_late_is_retried_refused_as_early_and_the_late_cert_installs() {
    // A write bound longer than the renewal reply wait, and no challenges.
    let timing = Timing {
        interval_secs: 3600,
        deadline_secs: 30,
        cert_ttl_secs: 300,
    };
    let mut n = started(timing, 0);
    n.run_until(199_999);
    // The client reads nothing from 200 s to 221 s: the proxy renews at
    // once, but its CERT waits unread.
    n.s2c_blocked = true;
    n.run_until(221_000);
    n.s2c_blocked = false;
    n.pump();
    n.run_until(500_000);
    let renewal: Vec<(u64, ServerEvent)> = n
        .sev
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::RenewRefused { .. } | ServerEvent::Renewed))
        .cloned()
        .collect();
    let retry = 200_000 + RENEW_REPLY_MS + RENEW_RETRY_MS;
    assert_eq!(
        renewal,
        vec![
            (200_000, ServerEvent::Renewed),
            // The retry is for a certificate already replaced: 20 s into
            // the new one's life, ignored.
            (
                retry,
                ServerEvent::RenewRefused {
                    reason: "renewal 20s into a certificate's life; at most one per 75s".into(),
                    nth: 1
                }
            ),
            // The next renewal is timed from the late CERT's arrival.
            (221_000 + 200_000, ServerEvent::Renewed),
        ]
    );
    let failed: Vec<(u64, ClientConnEvent)> = n
        .cev
        .iter()
        .filter(|(_, e)| matches!(e, ClientConnEvent::RenewalFailed { .. }))
        .cloned()
        .collect();
    assert_eq!(
        failed,
        vec![(
            200_000 + RENEW_REPLY_MS,
            ClientConnEvent::RenewalFailed {
                error: "the proxy did not answer within 15s".into(),
                left_secs: 85
            }
        )]
    );
    let renewed = Seen::Cert {
        ttl_secs: 300,
        renewed: true,
    };
    assert!(n.seen().contains(&(221_000, renewed)));
    assert!(n.terminated().is_none(), "{:?}", n.terminated());
    assert_eq!(n.server.identity().renewals(), 2);
    let serial = n.server.identity().serial();
    assert_eq!(n.client.identity().cert().map(|c| c.serial), Some(serial));
}

#[test]
fn certificate_expiry_without_renewal_ends_the_session_at_expiry() {
    // Challenges far rarer than the certificate's life, and an agent that
    // refuses every renewal.
    let timing = Timing {
        interval_secs: 3600,
        ..TIMING
    };
    let mut n = started(timing, 0);
    n.agent_signs = false;
    assert_eq!(n.server.poll_timeout(), Some(300_000));
    n.run_until(299_999);
    assert!(n.sev.is_empty(), "{:?}", n.sev);
    let failed: Vec<(u64, ClientConnEvent)> = n
        .cev
        .iter()
        .filter(|(_, e)| matches!(e, ClientConnEvent::RenewalFailed { .. }))
        .take(2)
        .cloned()
        .collect();
    assert_eq!(
        failed,
        vec![
            (
                200_000,
                ClientConnEvent::RenewalFailed {
                    error: "agent refused".into(),
                    left_secs: 100
                }
            ),
            (
                200_000 + RENEW_RETRY_MS,
                ClientConnEvent::RenewalFailed {
                    error: "agent refused".into(),
                    left_secs: 95
                }
            ),
        ]
    );
    n.run_until(300_000);
    let reason = "client certificate for alice expired (renewal failed?)";
    assert_eq!(
        n.sev,
        vec![
            (300_000, ended(EndKind::CertExpired, reason)),
            (300_000, ServerEvent::Closed),
        ]
    );
    assert_eq!(
        n.cev.last(),
        Some(&(
            300_000,
            ClientConnEvent::Ended(Some(ClientEnd::Terminated(reason.into())))
        ))
    );
}

// ----------------------------------------------------------- backpressure

#[test]
fn backpressure_stops_reading_the_side_that_fills_a_queue() {
    let mut n = net();
    // The client's own transmit queue: ssh is read only below HIGH_WATER.
    n.c2s_blocked = true;
    n.sshd_blocked = true;
    let up = bytes(9, HIGH_WATER + 100_000);
    n.client.handle_local(&up, n.cm());
    assert!(!n.client.wants_local());
    // The proxy reads the client until sshd's queue passes HIGH_WATER.
    let mut fed = 0;
    while n.server.wants_peer() {
        let len = n.client.poll_transmit().len().min(50 * F);
        assert!(len > 0, "the client ran out before the proxy stopped");
        let chunk = n.client.poll_transmit()[..len].to_vec();
        n.server.handle_peer(&chunk, &n.subca, &n.policy, n.now());
        n.client.transmitted(len, n.cm());
        fed += len;
    }
    let queued = n.server.poll_local().len();
    assert!(
        (HIGH_WATER..HIGH_WATER + 50 * D).contains(&queued),
        "{queued}"
    );
    assert_eq!(queued, fed / F * D);
    assert!(
        n.client.wants_local(),
        "the client's queue drained below HIGH_WATER"
    );
    // sshd reads a little: below HIGH_WATER the proxy reads again.
    n.server.delivered(queued - HIGH_WATER, n.now());
    assert!(!n.server.wants_peer(), "exactly HIGH_WATER is still full");
    n.server.delivered(1, n.now());
    assert!(n.server.wants_peer());
    // And everything arrives in order.
    n.sshd_blocked = false;
    n.c2s_blocked = false;
    n.sshd.extend_from_slice(&up[..queued - HIGH_WATER + 1]);
    n.pump();
    assert_eq!(n.sshd, up);

    // The proxy's transmit queue: sshd is read only below HIGH_WATER.
    n.s2c_blocked = true;
    n.server.handle_local(&bytes(10, HIGH_WATER), n.now());
    assert!(!n.server.wants_local());
    let len = n.server.poll_transmit().len() - HIGH_WATER + 1;
    let chunk = n.server.poll_transmit()[..len].to_vec();
    n.client.handle_peer(&chunk, n.cm());
    n.server.transmitted(len, n.now());
    assert!(n.server.wants_local());
}

// ------------------------------------------------------------- proptest

/// One step of a session, as a test sees it.
#[derive(Clone, Debug)]
enum Step {
    Ssh(Vec<u8>),
    Sshd(Vec<u8>),
    /// Time passes (ms), with every timer on the way.
    Wait(u64),
    SshEof,
    SshdEof,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => vec(any::<u8>(), 1..6000).prop_map(Step::Ssh),
        4 => vec(any::<u8>(), 1..6000).prop_map(Step::Sshd),
        4 => (0u64..150_000).prop_map(Step::Wait),
        1 => Just(Step::SshEof),
        1 => Just(Step::SshdEof),
    ]
}

type Outcome = (Vec<u8>, Vec<u8>, Vec<(u64, ServerEvent)>, Vec<(u64, Seen)>);

/// Plays `steps` on a fresh pair; returns what sshd and ssh received and
/// every event, plus what was written each way.
fn play(steps: &[Step], cuts: Option<Cuts>) -> (Outcome, Vec<u8>, Vec<u8>) {
    let mut n = net_with(TIMING, 0, cuts);
    n.pump();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut ssh_eof, mut sshd_eof) = (false, false);
    for s in steps {
        if n.server_closed || n.client_ended {
            break;
        }
        match s {
            Step::Ssh(d) if !ssh_eof => {
                n.ssh_write(d);
                up.extend_from_slice(d);
            }
            Step::Sshd(d) if !sshd_eof => {
                n.sshd_write(d);
                down.extend_from_slice(d);
            }
            Step::Wait(ms) => n.run_until(n.t + ms),
            Step::SshEof if !ssh_eof => {
                ssh_eof = true;
                n.client.handle_local_eof(n.cm());
                n.pump();
            }
            Step::SshdEof if !sshd_eof => {
                sshd_eof = true;
                n.server.handle_local_eof(n.now());
                n.pump();
            }
            _ => {}
        }
    }
    let seen = n.seen();
    ((n.sshd, n.ssh, n.sev, seen), up, down)
}

proptest! {
    // Each case runs two real handshakes: few cases.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_the_wire_gives_the_same_plaintext_and_events(
        steps in vec(step(), 1..20),
        s2c in vec(1usize..5000, 1..12),
        c2s in vec(1usize..5000, 1..12),
        local in vec(1usize..3000, 1..12),
    ) {
        let (whole, up, down) = play(&steps, None);
        let (split, up2, down2) = play(&steps, Some(Cuts { s2c, c2s, local }));
        prop_assert_eq!(&up, &up2);
        prop_assert_eq!(&down, &down2);
        prop_assert_eq!(&split, &whole);
        let (sshd, ssh, sev, _) = &whole;
        // Nothing was lost or made up, and no session was killed.
        prop_assert!(!sev.iter().any(|(_, e)| matches!(e, ServerEvent::Terminated(_))), "{:?}", sev);
        prop_assert!(up.starts_with(sshd));
        prop_assert!(down.starts_with(ssh));
        if !sev.iter().any(|(_, e)| *e == ServerEvent::Closed) {
            prop_assert_eq!(sshd, &up);
            prop_assert_eq!(ssh, &down);
        }
    }
}

/// A client whose handshake the proxy answers with `terminate` before any
/// ACCEPT; `hold` as the sidecar sets it when another key may follow.
fn refused_client(hold: bool, code: crate::control::TerminateCode) -> ClientConn {
    let pki = pki();
    let alice = user(1);
    let (session, mut authed) =
        run(&pki, client_cfg(&pki, "web1"), &alice, &alice).expect("handshake");
    let identity = ClientIdentity::new(
        session.handshake_hash,
        "alice",
        session.session_key,
        SigningKey::generate(&mut TestRng).public(),
    );
    let mut client = ClientConn::new(session.transport, identity);
    client.hold_until_accepted(hold);
    assert_eq!(
        client.wants_local(),
        !hold,
        "ssh's bytes wait only when held"
    );
    let mut wire = Vec::new();
    let msg = Control::Terminate {
        code,
        reason: "principal alice is not authorized with key K on web1".into(),
    };
    authed
        .transport
        .sealer
        .seal_control(&msg, &mut wire)
        .expect("seal");
    client.handle_peer(&wire, CLIENT_BASE);
    client
}

#[test]
fn a_key_refused_before_accept_is_its_own_end_and_ssh_bytes_wait_while_held() {
    use crate::control::TerminateCode;
    let reason = "principal alice is not authorized with key K on web1".to_owned();
    let mut c = refused_client(true, TerminateCode::NotAuthorized);
    let mut ends = Vec::new();
    while let Some(ev) = c.poll_event() {
        ends.push(ev);
    }
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::KeyRefused(
            reason.clone()
        )))),
        "{ends:?}"
    );
    // Any other refusal is not about the key: no other key is tried.
    let mut c = refused_client(false, TerminateCode::PolicyDenied);
    let mut ends = Vec::new();
    while let Some(ev) = c.poll_event() {
        ends.push(ev);
    }
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::Refused(reason)))),
        "{ends:?}"
    );
}

#[test]
fn a_revoked_key_before_accept_lets_the_sidecar_try_its_next_key() {
    use crate::end::EndKind;
    // A revoked user key is refused like an unauthorized one; a banned
    // principal or a revoked licence is not about the key.
    let reason = "principal alice is not authorized with key K on web1".to_owned();
    let mut c = refused_client(true, EndKind::UserKeyRevoked.code());
    let ends: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::KeyRefused(
            reason.clone()
        )))),
        "{ends:?}"
    );
    for kind in [EndKind::PrincipalBanned, EndKind::LicenceRevoked] {
        let mut c = refused_client(true, kind.code());
        let ends: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(
            ends.contains(&ClientConnEvent::Ended(Some(ClientEnd::Refused(
                reason.clone()
            )))),
            "{kind:?}: {ends:?}"
        );
    }
}

#[test]
fn a_held_client_reads_ssh_once_accepted() {
    let mut n = net_with(TIMING, 0, None);
    n.client.hold_until_accepted(true);
    assert!(!n.client.wants_local());
    n.pump();
    assert!(n.client.accepted());
    assert!(n.client.wants_local());
}

#[path = "rekey_tests.rs"]
mod rekey_tests;

#[path = "cover_tests.rs"]
mod cover_tests;

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
