//! The rekey ratchet of one tunnel on a schedule (see [`crate::rekey`] for
//! the messages and the key derivation): when this side starts one, how a
//! peer's REKEY records are answered, and the timers that close a peer
//! that does not complete one.

use zeroize::Zeroizing;

use super::link::Link;
use crate::ProtoError;
use crate::rekey::{self, Chain, RekeyMsg};

/// How long a rekey under way may go without progress once our INIT (or
/// REPLY) was handed to the socket: no byte from the peer and none taken by
/// the socket. Then the session ends. The timer does not run while records
/// queued before the INIT are still being written (a slow link), which
/// the write bound covers.
pub const REKEY_REPLY_MS: u64 = 60_000;
/// How long a rekey under way may take at most, however the link makes
/// progress, from when our INIT (or REPLY) was handed to the socket: a peer
/// that reads and sends but never answers is closed.
pub const REKEY_MAX_MS: u64 = 600_000;
/// A peer's INIT must come at least this many record bytes (sent and
/// received) after our last key switch...
pub const MIN_REKEY_GAP_BYTES: u64 = 512 * 1024;
/// ...or at least this long after it; otherwise it is refused. Both are half
/// the smallest [`RekeyPolicy`] (1 MiB, 1 s), and an honest initiator's
/// count is never above ours (it restarts no earlier than our switch), so
/// no allowed policy trips it.
pub const MIN_REKEY_GAP_MS: u64 = 500;
/// Default `rekey_after_secs`.
pub const DEFAULT_REKEY_AFTER_SECS: u64 = 3600;
/// Default `rekey_after_bytes` (1 GiB).
pub const DEFAULT_REKEY_AFTER_BYTES: u64 = 1 << 30;

/// When this side starts a rekey: after `after_secs` on one set of keys or
/// `after_bytes` of records (both directions) under them, whichever first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Seconds on one set of keys.
    pub after_secs: u64,
    /// Record bytes, sent and received, on one set of keys.
    pub after_bytes: u64,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        Self {
            after_secs: DEFAULT_REKEY_AFTER_SECS,
            after_bytes: DEFAULT_REKEY_AFTER_BYTES,
        }
    }
}

impl RekeyPolicy {
    /// Checks the bounds: 1 s to 1 day, 1 MiB to
    /// [`crate::frame::MAX_REKEY_AFTER_BYTES`].
    pub fn new(after_secs: u64, after_bytes: u64) -> Result<Self, String> {
        if !(1..=86_400).contains(&after_secs) {
            return Err(format!(
                "rekey_after_secs = {after_secs}: must be between 1 and 86400"
            ));
        }
        let max = crate::frame::MAX_REKEY_AFTER_BYTES;
        if !((1 << 20)..=max).contains(&after_bytes) {
            return Err(format!(
                "rekey_after_bytes = {after_bytes}: must be between 1048576 (1 MiB) and {max} (16 GiB)"
            ));
        }
        Ok(Self {
            after_secs,
            after_bytes,
        })
    }
}

/// Where a rekey stands. Its `Debug` names the state only (one holds a
/// key).
enum RekeyState {
    Idle,
    /// Our INIT is queued; the peer's REPLY switches both directions.
    /// (Boxed: the ML-KEM secret is kilobytes, which a session that is
    /// not rekeying should not carry.)
    AwaitingReply(Box<rekey::Pending>, Wait),
    /// Our REPLY is queued and our direction switched; the peer's FINISH
    /// switches its direction to this key.
    AwaitingFinish(Zeroizing<[u8; 32]>, Wait),
}

impl std::fmt::Debug for RekeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "Idle",
            Self::AwaitingReply(..) => "AwaitingReply",
            Self::AwaitingFinish(..) => "AwaitingFinish",
        })
    }
}

/// The timer of a rekey under way (see [`REKEY_REPLY_MS`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Wait {
    /// Bytes of the transmit queue, up to the end of our INIT or REPLY,
    /// not yet handed to the socket.
    unsent: usize,
    /// When the last of them was.
    sent_at: Option<u64>,
    /// The last progress: bytes taken by the socket or read from the peer.
    progress_at: u64,
}

impl Wait {
    fn new(unsent: usize, mono_ms: u64) -> Self {
        Self {
            unsent,
            sent_at: (unsent == 0).then_some(mono_ms),
            progress_at: mono_ms,
        }
    }

    /// When the rekey ends the session, once our message is out.
    fn deadline(&self) -> Option<u64> {
        self.sent_at.map(|sent| {
            let idle = self.progress_at.max(sent).saturating_add(REKEY_REPLY_MS);
            idle.min(sent.saturating_add(REKEY_MAX_MS))
        })
    }

    /// `n` bytes were written to the peer (or read from it, `n` = 0).
    pub(super) fn progress(&mut self, n: usize, mono_ms: u64) {
        self.unsent = self.unsent.saturating_sub(n);
        if self.unsent == 0 && self.sent_at.is_none() {
            self.sent_at = Some(mono_ms);
        }
        self.progress_at = self.progress_at.max(mono_ms);
    }
}

/// The rekey ratchet of one tunnel (see [`crate::rekey`]).
#[derive(Debug)]
pub(super) struct Rekeyer {
    chain: Chain,
    is_client: bool,
    pub(super) policy: RekeyPolicy,
    state: RekeyState,
    /// Rekeys completed (both directions switched).
    pub(super) epoch: u64,
    /// When the current keys started (monotonic ms); the sidecar's core
    /// learns its clock at the first call that passes it.
    pub(super) since_ms: Option<u64>,
    /// Record bytes sent and received under them.
    pub(super) bytes: u64,
    /// Rekeys completed and not yet reported as events.
    pub(super) unreported: u32,
    /// When our send key last switched (or the session started): a peer's
    /// INIT too soon after it is refused.
    pub(super) switched_ms: Option<u64>,
    /// Record bytes written and read since.
    pub(super) switched_bytes: u64,
    /// Whether that check is on (tests that force rekeys turn it off).
    pub(super) guard: bool,
}

impl Rekeyer {
    /// A ratchet at epoch 0 on the handshake's chain; `mono_ms` is the
    /// clock, if this side knows it yet.
    pub(super) fn new(chain: Chain, is_client: bool, mono_ms: Option<u64>) -> Self {
        Self {
            chain,
            is_client,
            policy: RekeyPolicy::default(),
            state: RekeyState::Idle,
            epoch: 0,
            since_ms: mono_ms,
            bytes: 0,
            unreported: 0,
            switched_ms: mono_ms,
            switched_bytes: 0,
            guard: true,
        }
    }

    /// The timer of the rekey under way, if any.
    pub(super) fn wait_mut(&mut self) -> Option<&mut Wait> {
        match &mut self.state {
            RekeyState::Idle => None,
            RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) => Some(w),
        }
    }

    /// Our send key switched: the gap a peer's next INIT must leave
    /// starts now.
    fn switched(&mut self, mono_ms: u64) {
        self.switched_ms = Some(mono_ms);
        self.switched_bytes = 0;
    }

    /// When the current keys are due for a rekey by age (none until the
    /// clock is known).
    fn due_by_time(&self) -> Option<u64> {
        self.since_ms
            .map(|t| t.saturating_add(self.policy.after_secs.saturating_mul(1000)))
    }

    /// Both directions are on the new keys: count it and restart the
    /// schedule.
    fn completed(&mut self, mono_ms: u64) {
        self.state = RekeyState::Idle;
        self.epoch += 1;
        self.since_ms = Some(mono_ms);
        self.bytes = 0;
        self.unreported = self.unreported.saturating_add(1);
    }
}

impl rekey::NewKeys {
    /// (send, receive) keys for this side.
    fn split(&self, is_client: bool) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        let (c2s, s2c) = (self.c2s.clone(), self.s2c.clone());
        if is_client { (c2s, s2c) } else { (s2c, c2s) }
    }
}

impl Link {
    /// Acts on a complete REKEY message from the peer.
    pub(super) fn on_rekey(&mut self, msg: RekeyMsg, mono_ms: u64) -> Result<(), ProtoError> {
        let rk = &mut self.rk;
        let state = std::mem::replace(&mut rk.state, RekeyState::Idle);
        match (msg, state) {
            // Both sides started at once: the client's INIT wins. The
            // client ignores the server's (the server answers the
            // client's); the server drops its own and answers.
            (RekeyMsg::Init(_), RekeyState::AwaitingReply(pending, at)) if rk.is_client => {
                rk.state = RekeyState::AwaitingReply(pending, at);
                Ok(())
            }
            (RekeyMsg::Init(init), RekeyState::Idle | RekeyState::AwaitingReply(..)) => {
                // Each INIT costs an ML-KEM encapsulation and an X25519
                // multiplication: a peer that asks far more often than any
                // allowed policy would is refused.
                let since = rk
                    .switched_ms
                    .map_or(u64::MAX, |t| mono_ms.saturating_sub(t));
                if rk.guard && rk.switched_bytes < MIN_REKEY_GAP_BYTES && since < MIN_REKEY_GAP_MS {
                    return Err(ProtoError::PeerMisbehaved(
                        "REKEY INIT too soon: less than 512 KiB and 0.5 s after the last rekey",
                    ));
                }
                let (keys, reply) =
                    rekey::respond(&rk.chain, rk.epoch, !rk.is_client, &init, &mut *self.rng.0)?;
                let (tx, rx) = keys.split(rk.is_client);
                // The REPLY goes under the old key; our records after it
                // under the new one.
                self.note_tx(mono_ms);
                self.sealer.seal_rekey(&reply, &mut self.tx.buf)?;
                self.sealer.install(&tx)?;
                let wait = Wait::new(self.tx.len(), mono_ms);
                let rk = &mut self.rk;
                rk.chain = keys.chain;
                rk.switched(mono_ms);
                rk.state = RekeyState::AwaitingFinish(rx, wait);
                Ok(())
            }
            (RekeyMsg::Reply(reply), RekeyState::AwaitingReply(pending, _)) => {
                let keys = pending.complete(&rk.chain, rk.epoch, rk.is_client, &reply)?;
                let (tx, rx) = keys.split(rk.is_client);
                // The peer's records after its REPLY are under the new key;
                // ours after the FINISH.
                self.opener.install(&rx)?;
                self.note_tx(mono_ms);
                self.sealer
                    .seal_rekey(&RekeyMsg::Finish, &mut self.tx.buf)?;
                self.sealer.install(&tx)?;
                self.rk.chain = keys.chain;
                self.rk.switched(mono_ms);
                self.rk.completed(mono_ms);
                Ok(())
            }
            (RekeyMsg::Finish, RekeyState::AwaitingFinish(rx, _)) => {
                self.opener.install(&rx)?;
                self.rk.completed(mono_ms);
                Ok(())
            }
            (RekeyMsg::Init(_), RekeyState::AwaitingFinish(..)) => Err(ProtoError::PeerMisbehaved(
                "REKEY INIT before the FINISH of the last rekey",
            )),
            (RekeyMsg::Reply(_), _) => Err(ProtoError::PeerMisbehaved("unexpected REKEY REPLY")),
            (RekeyMsg::Finish, _) => Err(ProtoError::PeerMisbehaved("unexpected REKEY FINISH")),
        }
    }

    /// Starts a rekey if one is due and none is under way (and the session
    /// is not ending).
    pub(super) fn maybe_rekey(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        let both_closed = self.both_closed();
        let rk = &mut self.rk;
        rk.since_ms.get_or_insert(mono_ms);
        rk.switched_ms.get_or_insert(mono_ms);
        if !matches!(rk.state, RekeyState::Idle) || both_closed {
            return Ok(());
        }
        if rk.bytes < rk.policy.after_bytes && rk.due_by_time().is_none_or(|t| mono_ms < t) {
            return Ok(());
        }
        let (pending, init) = rekey::start(&mut *self.rng.0);
        self.note_tx(mono_ms);
        self.sealer.seal_rekey(&init, &mut self.tx.buf)?;
        self.rk.state =
            RekeyState::AwaitingReply(Box::new(pending), Wait::new(self.tx.len(), mono_ms));
        Ok(())
    }

    /// Starts a rekey now, whatever the schedule (tests and fuzzers).
    #[cfg(any(test, feature = "testkit"))]
    pub(super) fn force_rekey(&mut self, mono_ms: u64) -> Result<(), ProtoError> {
        self.rk.bytes = self.rk.policy.after_bytes;
        let (closed_l, closed_p) = (self.local_closed, self.peer_closed);
        self.local_closed = false;
        self.peer_closed = false;
        let r = self.maybe_rekey(mono_ms);
        self.local_closed = closed_l;
        self.peer_closed = closed_p;
        r
    }

    /// When the rekey timer next fires: a due rekey, or the bound on one
    /// under way.
    pub(super) fn rekey_deadline(&self) -> Option<u64> {
        let rk = &self.rk;
        match rk.state {
            RekeyState::Idle if self.both_closed() => None,
            RekeyState::Idle => rk.due_by_time(),
            RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) => w.deadline(),
        }
    }

    /// Drives the rekey timers; an error ends the session.
    pub(super) fn rekey_timeout(&mut self, mono_ms: u64) -> Result<(), String> {
        if let RekeyState::AwaitingReply(_, w) | RekeyState::AwaitingFinish(_, w) = self.rk.state {
            let Some(sent) = w.sent_at else {
                return Ok(());
            };
            if mono_ms >= sent.saturating_add(REKEY_MAX_MS) {
                return Err(format!(
                    "the peer did not complete a rekey within {}s",
                    REKEY_MAX_MS / 1000
                ));
            }
            if w.deadline().is_some_and(|at| mono_ms >= at) {
                return Err(format!(
                    "the peer made no progress on a rekey for {}s",
                    REKEY_REPLY_MS / 1000
                ));
            }
            return Ok(());
        }
        self.maybe_rekey(mono_ms).map_err(|e| e.to_string())
    }
}
