//! Workload identity in force: the issuers whose platform tokens vouch for
//! a principal (`[[workload_issuer]]`, with the key sets pinned or pulled
//! so far), and the record of tokens already used, which outlives every
//! reload and, kept in `workload_token_record`, every restart: a token
//! read from a log opens no session.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tracing::{info, warn};

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

/// Lines appended past the last whole write before the record is written
/// whole again (by the housekeeping task).
const COMPACT_AFTER: usize = REPLAY_CAPACITY / 4;

/// Bytes of the record file read at start: a full record (about 206 bytes
/// a line) and the lines appended before it is written whole again, with
/// room to spare (a test ties these together).
const MAX_REPLAY_FILE: u64 = 64 << 20;

/// The record of tokens used, shared by every authority this process
/// publishes.
pub type Replay = Arc<ReplayRecord>;

/// The tokens used (with the key that first presented each), in memory
/// and, once [`ReplayRecord::keep_in`] opened it, appended to the file
/// `workload_token_record` names as each is first used: a restart reads it
/// back, so a token used before it still opens nothing for another key.
#[derive(Debug)]
pub struct ReplayRecord {
    cache: Mutex<ReplayCache>,
    file: Mutex<Option<Kept>>,
}

#[derive(Debug)]
struct Kept {
    path: PathBuf,
    file: std::fs::File,
    /// Lines appended since the file was last written whole.
    appended: usize,
}

/// A new, empty record, kept in memory until [`ReplayRecord::keep_in`].
pub fn new_replay() -> Replay {
    Arc::new(ReplayRecord {
        cache: Mutex::new(ReplayCache::new(REPLAY_CAPACITY)),
        file: Mutex::new(None),
    })
}

impl ReplayRecord {
    /// Reads back the record kept in `path` (the tokens still live),
    /// writes it again whole without the expired ones, and appends every
    /// first use from now on. Called once the proxy runs as its own user,
    /// so the file is that user's (0600).
    pub fn keep_in(&self, path: &Path, now: UnixTime) -> Result<(), String> {
        let path = path.to_owned();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match ztssh_keyfile::read_regular(&path, MAX_REPLAY_FILE) {
            Ok(bytes) => {
                let bad = cache.restore(&String::from_utf8_lossy(&bytes), now);
                if bad > 0 {
                    warn!(event = "workload_record_unreadable_lines", path = %path.display(), lines = bad,
                        "{bad} line(s) of {} do not read and were left out", path.display());
                }
            }
            Err(e) if !path.exists() => drop(e),
            Err(e) => return Err(format!("the workload token record: {e}")),
        }
        let kept = Self::write_whole(&path, &cache)?;
        info!(event = "workload_record", path = %path.display(), tokens = cache.len(),
            "workload tokens used and still live: {}", cache.len());
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
        Ok(())
    }

    fn write_whole(path: &Path, cache: &ReplayCache) -> Result<Kept, String> {
        Self::write_text(path, &cache.lines())
    }

    fn write_text(path: &Path, text: &str) -> Result<Kept, String> {
        let shown = path.display();
        ztssh_keyfile::write_atomic(
            path,
            text.as_bytes(),
            0o600,
            ztssh_keyfile::Existing::Replace,
        )
        .map_err(|e| format!("cannot write the workload token record {shown}: {e}"))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the workload token record {shown}: {e}"))?;
        Ok(Kept {
            path: path.to_owned(),
            file,
            appended: 0,
        })
    }

    /// Records `token`'s first use by `key` (a use by another key is
    /// refused), and appends it to the file when it is new.
    fn first_use(&self, token: &TokenVerified, key: &KeyId, now: UnixTime) -> Result<(), Refused> {
        let line = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            let new = !cache.holds(&token.id());
            let owner = ztssh_proto::trust::workload::owner_id(token.iss(), token.rule());
            cache.first_use(token.id(), *key, owner, token.expires(), now)?;
            if new { cache.line(&token.id()) } else { None }
        };
        // Appended outside the cache's lock: a whole write under way holds
        // the file's lock only (a line then lands in the new file, or twice,
        // which reading back takes as once).
        if let Some(line) = line {
            self.append(&line);
        }
        Ok(())
    }

    /// Writes the record whole again, without the expired tokens, once it
    /// holds as many lines past the last such write as a full record: the
    /// housekeeping task calls it off the runtime's workers, so the file
    /// never grows without bound and no handshake waits on the write. A
    /// failure is logged and tried again at the next call.
    pub fn compact(&self, now: UnixTime) {
        let due = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|k| k.appended >= COMPACT_AFTER);
        if !due {
            return;
        }
        // The lines under the cache's lock, then the file's lock for the
        // write, the cache's released: first uses go on meanwhile, and
        // their lines wait for the new file.
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.prune_expired(now);
        let text = cache.lines();
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        drop(cache);
        let Some(kept) = slot.as_mut() else { return };
        match Self::write_text(&kept.path, &text) {
            Ok(k) => *kept = k,
            Err(e) => warn!(event = "workload_record_failed", error = %e, "{e}"),
        }
    }

    fn append(&self, line: &str) {
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(kept) = slot.as_mut() else { return };
        match kept.file.write_all(line.as_bytes()) {
            Ok(()) => kept.appended += 1,
            Err(e) => {
                warn!(event = "workload_record_failed", path = %kept.path.display(), error = %e,
                "cannot append to the workload token record {}: {e}; a restart forgets this token's use",
                kept.path.display())
            }
        }
    }
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
    /// Refuses `token` if another key used it, recording nothing.
    pub fn check_use(
        &self,
        token: &TokenVerified,
        key: &KeyId,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.replay
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(&token.id(), key, now)
    }

    /// Records `token`'s first use by `key`; a use by another key is
    /// refused.
    pub fn first_use(
        &self,
        token: &TokenVerified,
        key: &KeyId,
        now: UnixTime,
    ) -> Result<(), Refused> {
        self.replay.first_use(token, key, now)
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// The read bound at start holds a full record and every line appended
    /// before the next whole write, with room to spare.
    #[test]
    fn a_full_record_and_its_appends_fit_the_read_bound() {
        let mut cache = ReplayCache::new(4);
        cache
            .first_use([0xff; 32], [0xff; 32], [0xff; 32], u64::MAX - 1, 0)
            .expect("first use");
        let longest = cache.line(&[0xff; 32]).expect("line").len() as u64;
        let most = (REPLAY_CAPACITY + COMPACT_AFTER) as u64 * longest;
        assert!(
            most * 3 / 2 <= MAX_REPLAY_FILE,
            "{most} > {MAX_REPLAY_FILE}"
        );
    }
}
