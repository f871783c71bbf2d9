//! The watchers that ask the reload task ([`super::reload`]) for a new
//! authority: one on the revocation list file, one on the loaded list's
//! staleness deadline. They only ask; the reload task decides.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::ops::clock;
use crate::revocation::reload::{RELOAD_TIMEOUT, Request};
use crate::trust::authority::{self, Authority};

/// How often the revocation list file is checked for changes.
pub const CRL_POLL: Duration = Duration::from_millis(100);

/// Watches the loaded list's staleness deadline (next update plus grace)
/// and, the moment it passes, says what the policy now does and asks the
/// reload task to publish the authority again, so that `close-all` ends
/// live sessions at once rather than at their next challenge. Once per
/// list version; a new list re-arms it.
pub async fn watch_staleness(
    mut authority: watch::Receiver<Arc<Authority>>,
    requests: mpsc::Sender<Request>,
) {
    let mut fired: Option<u64> = None;
    loop {
        let (due, crl, staleness) = {
            let a = authority.borrow_and_update();
            (
                a.crl.as_ref().map(|c| a.staleness.due(c)),
                a.crl.as_ref().map(|c| (c.list_version, c.next_update)),
                a.staleness,
            )
        };
        let now = clock::unix();
        let wait = match (due, crl) {
            (Some(due), Some((version, _))) if now >= due && fired != Some(version) => {
                fired = Some(version);
                if let Some(c) = authority.borrow().crl.as_ref() {
                    authority::announce_stale(c, staleness, now);
                }
                if staleness.mode != ztssh_proto::trust::StaleMode::Warn
                    && requests.send(Request::Recheck).await.is_err()
                {
                    return;
                }
                None
            }
            (Some(due), Some(_)) if now < due => Some(Duration::from_secs(due - now)),
            _ => None,
        };
        let changed = match wait {
            Some(d) => tokio::select! {
                c = authority.changed() => c,
                () = tokio::time::sleep(d) => Ok(()),
            },
            None => authority.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Watches the revocation list file and asks for a reload the moment it
/// changes: inotify on its directory wakes the watcher as soon as a list is
/// written or renamed into place (a Kubernetes ConfigMap's `..data` swap
/// included), and a `stat` every [`CRL_POLL`] catches what inotify cannot
/// see (network filesystems). A change is a new inode, mtime or size; the
/// first check always asks, so a list written between the start-up load and
/// the watcher's start is not missed (the reload compares list versions, so
/// the same list again is a no-op). Every `stat` runs on the blocking pool.
pub async fn watch_crl_file(path: PathBuf, requests: mpsc::Sender<Request>) {
    watch_crl_file_every(path, requests, CRL_POLL).await;
}

/// Watches the access list file as [`watch_crl_file`] watches the
/// revocation list's.
pub async fn watch_access_file(path: PathBuf, requests: mpsc::Sender<Request>) {
    watch_file(path, requests, CRL_POLL, || {
        Request::Access(crate::revocation::access_pull::AccessUpdate::File)
    })
    .await;
}

/// Watches the `licence` file the same way, asking the reload task to
/// offer it to the licence in force the moment it changes.
pub async fn watch_licence_file(path: PathBuf, requests: mpsc::Sender<Request>) {
    watch_file(path, requests, CRL_POLL, || Request::Licence(None)).await;
}

async fn watch_crl_file_every(path: PathBuf, requests: mpsc::Sender<Request>, poll: Duration) {
    watch_file(path, requests, poll, || Request::RevocationList).await;
}

async fn watch_file(
    path: PathBuf,
    requests: mpsc::Sender<Request>,
    poll: Duration,
    ask: fn() -> Request,
) {
    use std::os::unix::fs::MetadataExt;
    fn stamp(p: &Path) -> Option<(u64, i64, i64, u64)> {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    }
    let path = Arc::new(path);
    // A `stat` that hangs (a dead network filesystem) is given up on; the
    // next tick tries again.
    let probe = |p: Arc<PathBuf>| async move {
        let work = tokio::task::spawn_blocking(move || stamp(&p));
        tokio::time::timeout(RELOAD_TIMEOUT, work)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    };
    let dir = DirWatch::new(&path);
    let mut last = None;
    let mut tick = tokio::time::interval(poll);
    loop {
        // inotify saw something: ask whatever the stamp says (a same-size
        // rewrite in place within one timestamp tick leaves it unchanged;
        // the reload compares list versions, so asking is cheap).
        let told = tokio::select! {
            _ = tick.tick() => false,
            () = dir.changed() => true,
        };
        let now = probe(Arc::clone(&path)).await;
        if now.is_none() || (now == last && !told) {
            continue;
        }
        last = now;
        if requests.send(ask()).await.is_err() {
            return;
        }
    }
}

/// inotify on the directory that holds a file, read by a thread of its
/// own (a blocking read: no raw descriptor is handed to the runtime).
/// `changed` resolves when anything in the directory was written, created,
/// renamed or removed; without inotify (it could not be set up, or the
/// watch broke) it never resolves and the poll alone keeps watching.
struct DirWatch(Option<Arc<tokio::sync::Notify>>);

impl DirWatch {
    fn new(file: &Path) -> Self {
        use nix::sys::inotify::{AddWatchFlags as W, InitFlags, Inotify};
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mask = W::IN_CLOSE_WRITE
            | W::IN_MOVED_TO
            | W::IN_CREATE
            | W::IN_DELETE
            | W::IN_ATTRIB
            | W::IN_DELETE_SELF
            | W::IN_MOVE_SELF;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(&dir, mask).map(|_| i))
            .map_err(std::io::Error::from);
        let notify = Arc::new(tokio::sync::Notify::new());
        let tell = Arc::clone(&notify);
        let spawned = inotify.and_then(|i| {
            std::thread::Builder::new()
                .name("ztssh-crl-watch".into())
                // Ends when the watch breaks; `notify_one` keeps a wake-up
                // for a watcher that is busy, so none is lost.
                .spawn(move || {
                    while i.read_events().is_ok() {
                        tell.notify_one();
                    }
                })
        });
        match spawned {
            Ok(_) => Self(Some(notify)),
            Err(e) => {
                warn!(event = "revocation_watch", dir = %dir.display(), error = %e,
                    "cannot watch the revocation list's directory with inotify; checking it every {}ms instead", CRL_POLL.as_millis());
                Self(None)
            }
        }
    }

    async fn changed(&self) {
        match &self.0 {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_written_between_the_startup_load_and_the_first_check_is_reloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crl.pem");
        // The proxy loaded this at start-up...
        std::fs::write(&path, "list version 1").expect("write");
        // ...and this replaced it before the watcher first looked.
        std::fs::write(&path, "list version 2, a little longer").expect("write");
        let (tx, mut rx) = mpsc::channel(4);
        let watcher = tokio::spawn(watch_crl_file(path, tx));
        let asked = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        watcher.abort();
        assert!(matches!(
            asked.ok().flatten(),
            Some(Request::RevocationList)
        ));
    }

    #[tokio::test]
    async fn a_list_renamed_into_place_is_seen_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, "list version 1").expect("write");
        let (tx, mut rx) = mpsc::channel(4);
        // A poll that never comes round again: only inotify can see the change.
        let hour = Duration::from_secs(3600);
        let watcher = tokio::spawn(watch_crl_file_every(path.clone(), tx, hour));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(
            first.ok().flatten(),
            Some(Request::RevocationList)
        ));
        let next = dir.path().join(".crl.pem.new");
        std::fs::write(&next, "list version 2, a little longer").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let asked = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        watcher.abort();
        assert!(matches!(
            asked.ok().flatten(),
            Some(Request::RevocationList)
        ));
    }
}
