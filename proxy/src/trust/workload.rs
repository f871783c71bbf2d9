//! Workload identity in force: the issuers whose platform tokens vouch for
//! a principal (`[[workload_issuer]]`, with the key sets pinned or pulled
//! so far), and the record of tokens already used, which outlives every
//! reload so that a token read from a log opens no second session.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use prometheus::{IntCounterVec, Opts};
use ztssh_proto::time::UnixTime;
use ztssh_proto::trust::workload::{
    Issuers, KeyId, KeysInForce, RefusalKind, Refused, ReplayCache, TokenVerified,
};

/// Tokens remembered at once: each stays until it expires (at most
/// `max_token_lifetime_secs`). A full record refuses new tokens rather
/// than forget a live one.
pub const REPLAY_CAPACITY: usize = 100_000;

/// Tokens refused, by reason (registered by the metrics module).
pub static TOKENS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let v = IntCounterVec::new(
        Opts::new(
            "ztssh_workload_tokens_refused_total",
            "Workload tokens refused, at login or during a session, by reason.",
        ),
        &["reason"],
    )
    .unwrap_or_else(|e| panic!("metric ztssh_workload_tokens_refused_total: {e}"));
    for kind in RefusalKind::ALL {
        v.with_label_values(&[kind.label()]);
    }
    v
});

/// The record of tokens used, shared by every authority this process
/// publishes.
pub type Replay = Arc<Mutex<ReplayCache>>;

/// A new, empty record.
pub fn new_replay() -> Replay {
    Arc::new(Mutex::new(ReplayCache::new(REPLAY_CAPACITY)))
}

/// The issuers in force and the record of tokens used.
#[derive(Debug, Clone)]
pub struct WorkloadInForce {
    /// The issuers, with their key sets.
    pub issuers: Issuers,
    /// Tokens used on this proxy.
    pub replay: Replay,
}

impl WorkloadInForce {
    /// Records `token`'s first use by `key`; a use by another key is
    /// refused.
    pub fn first_use(
        &self,
        token: &TokenVerified,
        key: &KeyId,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first_use(token.id(), *key, token.expires(), now)
    }

    /// The same issuers with `name`'s key set replaced (a pull brought
    /// it); `None` when no issuer has that name any more.
    pub fn with_keys(&self, name: &str, keys: KeysInForce) -> Option<Self> {
        let mut issuers = self.issuers.clone();
        issuers.set_keys(name, keys).then(|| Self {
            issuers,
            replay: Arc::clone(&self.replay),
        })
    }

    /// After a reload read the tables again: each issuer whose keys come
    /// from a URL keeps the set its pull brought (a pinned file was read
    /// again).
    pub fn keep_pulled_keys(&mut self, current: &Self) {
        let pulled: Vec<(String, KeysInForce)> = current
            .issuers
            .list()
            .iter()
            .filter_map(|i| {
                let keys = i.keys.as_ref().filter(|k| k.max_age_secs.is_some())?;
                Some((i.name.clone(), keys.clone()))
            })
            .collect();
        for (name, keys) in pulled {
            let unpinned = self.issuers.get(&name).is_some_and(|i| i.keys.is_none());
            if unpinned {
                self.issuers.set_keys(&name, keys);
            }
        }
    }
}
