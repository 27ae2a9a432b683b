//! New epochs after a reboot that may have lost answered writes (`[store] sync = "interval"`).
//!
//! # Why
//! In interval mode a batch is answered once its log record is in the kernel's page cache. A
//! process crash loses nothing, but a kernel crash or power loss can drop the log's unsynced
//! tail: the offsets (and message ids) it held would be handed out again under the same epoch,
//! and a client that saw a lost publication at offset N would take its replacement at N for
//! the one it already has — a silent gap on recovery. A new epoch instead tells every client
//! that its position is void (`4010` / `recovered: false`), which is the truth.
//!
//! # How
//! While the store runs in interval mode, the file [`MARKER`] in the store directory holds the
//! kernel's boot id (`/proc/sys/kernel/random/boot_id`), written and synced before the first
//! answer. A clean close syncs the log and removes it. At open, a marker left behind means the
//! last run did not close cleanly: from the same boot (a process crash) the page cache kept
//! every write and nothing changes; from another boot — or when the boot id cannot be read —
//! every stream gets a new epoch and the store a new id (the inbox epoch, and the epoch of
//! topics never written), and the log starts again under that id. Offsets and ids go on from
//! what survived; only the epochs change.

use std::path::{Path, PathBuf};

use redb::ReadableTable;

use super::{codec, err, RedbStore, META, STREAMS};
use crate::store::{new_epoch, StoreError};

/// The marker's file name inside the store directory.
pub const MARKER: &str = "ringhub.unsynced";

/// Where the kernel tells the id of the current boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, if the kernel tells it.
pub(super) fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What a marker left by the last run says, given this boot's id: whether answered writes may
/// have been lost (no marker: a clean close; the same boot: a process crash, nothing lost).
pub(super) fn writes_may_be_lost(marker: Option<&str>, boot: Option<&str>) -> bool {
    match (marker, boot) {
        (None, _) => false,
        (Some(m), Some(b)) => m.trim() != b,
        (Some(_), None) => true,
    }
}

/// The marker's path beside the database file `db_path`.
pub(super) fn marker_path(db_path: &Path) -> PathBuf {
    db_path.with_file_name(MARKER)
}

fn io(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes the marker with `boot` and makes it (and its name) durable.
pub(super) fn write_marker(db_path: &Path, boot: &str) -> Result<(), StoreError> {
    let path = marker_path(db_path);
    std::fs::write(&path, boot).map_err(|e| io(&path, "writing", e))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&path, "syncing", e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, "syncing", e))?;
    }
    Ok(())
}

/// Removes the marker (nothing answered is unsynced any more). A removal lost in a crash only
/// costs a needless epoch change at the next open after a reboot.
pub(super) fn remove_marker(db_path: &Path) {
    let path = marker_path(db_path);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "store: removing the marker failed")
        }
    }
}

impl RedbStore {
    /// At open, after the log's replay: reads the last run's marker and, when answered writes
    /// may have been lost, gives every stream and the store new epochs. Removes the marker
    /// (interval mode writes it again, `set_sync_interval`).
    pub(super) fn check_unsynced_marker(&mut self, boot: Option<&str>) -> Result<(), StoreError> {
        let path = marker_path(&self.path);
        let marker = match std::fs::read_to_string(&path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path, "reading", e)),
        };
        if writes_may_be_lost(marker.as_deref(), boot) {
            let streams = self.new_epochs()?;
            tracing::warn!(
                file = %path.display(),
                streams,
                "store: the last run (sync = \"interval\") did not close cleanly and the machine \
                 has restarted since: answered writes of its last interval may be lost, so every \
                 stream and inbox starts a new epoch (clients recover from scratch)"
            );
        }
        if marker.is_some() {
            remove_marker(&self.path);
        }
        Ok(())
    }

    /// Draws a new store id and a new epoch for every stream, durably, and starts the log again
    /// under the new id. Returns how many streams changed.
    fn new_epochs(&mut self) -> Result<usize, StoreError> {
        // Whatever the replay left in the open transaction becomes durable first.
        let lsn = self.wal.lsn;
        self.checkpoint(lsn)?;
        let store_id = new_epoch();
        let tx = self.db.begin_write().map_err(err)?;
        let mut changed = 0;
        {
            let mut t = tx.open_table(STREAMS).map_err(err)?;
            let mut rows = Vec::new();
            for item in t.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let (top, _) = codec::decode_stream(v.value())?;
                rows.push((k.value().to_owned(), top));
            }
            let mut buf = Vec::new();
            for (topic, top) in rows {
                buf.clear();
                codec::encode_stream(&mut buf, top, &new_epoch());
                t.insert(topic.as_str(), buf.as_slice()).map_err(err)?;
                changed += 1;
            }
            let mut meta = tx.open_table(META).map_err(err)?;
            meta.insert("store_id", store_id.as_bytes()).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.store_id = Box::from(&*store_id);
        self.streams.clear();
        self.wal.start(&self.store_id)?;
        Ok(changed)
    }
}

impl Drop for RedbStore {
    /// A clean close in interval mode: the log synced, the marker goes (the `Wal`'s own drop
    /// then finds nothing to sync). A broken store keeps its marker.
    fn drop(&mut self) {
        if self.wal.policy.every().is_none() || self.broken.is_some() {
            return;
        }
        match self.wal.sync_due(true) {
            Ok(_) if !self.wal.policy.unsynced() => remove_marker(&self.path),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "store: syncing the write-ahead log at close failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writes_may_be_lost;

    #[test]
    fn only_a_marker_from_another_or_an_unknown_boot_means_loss() {
        assert!(!writes_may_be_lost(None, Some("b1")), "clean close");
        assert!(!writes_may_be_lost(None, None), "clean close");
        assert!(
            !writes_may_be_lost(Some("b1\n"), Some("b1")),
            "process crash"
        );
        assert!(writes_may_be_lost(Some("b1"), Some("b2")), "reboot");
        assert!(writes_may_be_lost(Some("b1"), None), "boot unknown");
        assert!(
            writes_may_be_lost(Some("unknown"), Some("b1")),
            "written unknown"
        );
    }
}
