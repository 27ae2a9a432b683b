//! Socket.IO sessions kept for connection state recovery: the node's table of dropped
//! sessions (or the store's, see `sio_recover`), each shard's last positions of topics with
//! history, and what a closing connection leaves behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jobs::StoreJob;
use super::ShardState;
use crate::proto::socketio_recover as rec;
use crate::ConnId;

/// A dropped Socket.IO session, kept for `socketio_recovery`.
pub(crate) struct Session {
    pub(super) user: Option<Arc<str>>,
    pub(super) nsp: usize,
    pub(super) rooms: Vec<Box<str>>,
    /// Rooms with history: the last position queued to the connection.
    pub(super) positions: Vec<(Box<str>, Arc<str>, u64)>,
    pub(super) gone: Instant,
}

/// The node's dropped sessions by private session id — or, when `durable`, only the flag that
/// they go to the store instead (`Store::keeps_sio_sessions`).
#[derive(Default)]
pub(crate) struct SioSessions(Mutex<Table>, bool);

#[derive(Default)]
struct Table {
    map: HashMap<Box<str>, Session>,
    pruned: Option<Instant>,
}

impl SioSessions {
    /// The table of a node whose store keeps the sessions (`durable`) or not.
    pub(crate) fn new(durable: bool) -> Self {
        Self(Mutex::default(), durable)
    }

    /// The store keeps the sessions (`StoreJob::SioPut` / `SioTake`), not this table.
    pub(super) fn in_store(&self) -> bool {
        self.1
    }

    pub(super) fn put(&self, pid: Box<str>, s: Session, keep: Duration) {
        let Ok(mut t) = self.0.lock() else { return };
        let now = s.gone;
        // Expired sessions go at most once a second, so a storm of drops stays linear.
        if t.pruned
            .is_none_or(|p| now.duration_since(p) >= Duration::from_secs(1))
        {
            t.map.retain(|_, s| now.duration_since(s.gone) <= keep);
            t.pruned = Some(now);
        }
        t.map.insert(pid, s);
    }

    /// The live session `pid` if `mine` says it belongs to the caller; another user's stays
    /// kept (a leaked pid must not let someone else use up the owner's session).
    pub(super) fn take(
        &self,
        pid: &str,
        now: Instant,
        keep: Duration,
        mine: impl FnOnce(&Session) -> bool,
    ) -> Option<Session> {
        let mut t = self.0.lock().ok()?;
        let s = t.map.get(pid)?;
        if now.saturating_duration_since(s.gone) > keep {
            t.map.remove(pid);
            return None;
        }
        if !mine(s) {
            return None;
        }
        t.map.remove(pid)
    }
}

/// Per shard: the last stored publication (epoch, offset) of each topic with history delivered
/// here, or the position a subscribe to it was answered with.
#[derive(Default)]
pub(crate) struct Seen(HashMap<Arc<str>, (Arc<str>, u64)>);

impl Seen {
    pub(super) fn saw(&mut self, topic: &str, epoch: &Arc<str>, offset: u64) {
        match self.0.get_mut(topic) {
            Some(p) => *p = (epoch.clone(), offset),
            None => {
                self.0.insert(topic.into(), (epoch.clone(), offset));
            }
        }
    }
}

/// A private session id: 128 bits from the process's random hasher keys (as the store's
/// epochs), which only the session's own user can use anyway.
pub(super) fn new_pid(id: ConnId) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u64(id.raw());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}
impl ShardState {
    /// A Socket.IO connection is going away: each namespace still connected keeps its session
    /// (that namespace's rooms, with the positions of those with history).
    pub(super) fn sio_keep_sessions(&mut self, id: ConnId) {
        let Some(keep) = self.recovery_window() else {
            return;
        };
        let Some(s) = self.sio.get_mut(&id) else {
            return;
        };
        let connected = s.connected();
        let pids = std::mem::take(&mut s.recovery.pids);
        let Some(c) = self.conn(id) else { return };
        let user = c.user.clone();
        let now = self.now;
        for (nsp, pid) in pids {
            if connected & (1 << nsp) == 0 {
                continue;
            }
            let rooms = self.sio_rooms_of(id, nsp);
            let positions = rooms
                .iter()
                .filter_map(|r| {
                    let (e, o) = self.sio_seen.0.get(&**r)?;
                    Some((r.clone(), e.clone(), *o))
                })
                .collect();
            let session = Session {
                user: user.clone(),
                nsp,
                rooms,
                positions,
                gone: now,
            };
            if self.hub.sio_sessions.in_store() {
                let expires_ms = crate::store::now_ms()
                    .saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
                let job = StoreJob::SioPut {
                    pid,
                    session: self.sio_stored(&session, expires_ms).encode().into(),
                    expires_ms,
                };
                let _ = self.hub.submit_store(job, false);
                continue;
            }
            self.hub.sio_sessions.put(pid, session, keep);
        }
    }

    fn sio_stored(&self, s: &Session, expires_ms: u64) -> rec::StoredSession {
        rec::StoredSession {
            user: s.user.as_deref().map(str::to_string),
            nsp: self.hub.config.socketio_namespaces[s.nsp].to_string(),
            rooms: s.rooms.iter().map(|r| r.to_string()).collect(),
            positions: s
                .positions
                .iter()
                .map(|(r, e, o)| (r.to_string(), e.to_string(), *o))
                .collect(),
            expires_ms,
        }
    }
    /// Forgets the positions of topics nobody here subscribes to any more (the timer).
    pub(super) fn sio_prune_seen(&mut self) {
        let registry = &self.registry;
        self.sio_seen.0.retain(|t, _| {
            crate::proto::pattern::Pattern::parse(t).is_ok_and(|p| registry.subscriber_count(p) > 0)
        });
    }
}
