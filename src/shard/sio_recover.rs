//! Socket.IO connection state recovery on the shard (`proto::socketio_recover` is the wire
//! format): private session ids in the CONNECT answer, sessions kept when a connection drops,
//! and the reconnect that restores a session's rooms and replays what it missed from history.
//!
//! **Where the state lives.** A dropped connection's sessions (one per connected namespace, as
//! socket.io keeps one per socket) go to the node's table [`SioSessions`] — a mutex touched
//! only when a Socket.IO connection closes or resumes, never per message — for
//! `socketio_recovery` (socket.io's `maxDisconnectionDuration`). A session holds its user,
//! namespace, rooms, and for each room with history the position of the last publication of it
//! queued to the connection. That position comes from [`Seen`]: per shard, per topic with
//! history, the last stored publication delivered (or subscribe answered) here — one map
//! update per stored publication per shard, nothing per subscriber. The connection was
//! subscribed, so that publication was queued to it.
//!
//! **Resuming.** A CONNECT whose auth payload has `{pid, offset}` of a live session (same user,
//! same namespace, not expired) subscribes the rooms again; each room with history is
//! subscribed with `since` — the client's `offset` for the room it names (what the client
//! processed last, exact even when frames were lost in flight), the session's position for the
//! others — through the same held subscribe as `/ws` recovery, so the replay and the live
//! stream join without gap or duplicate. Replies come back as the missed events (each with its
//! offset); when every room answered, the CONNECT answer carries the old `pid` (the client's
//! `socket.recovered === true`) if every gap was covered, a new one otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::jobs::{Since, StoreJob};
use super::ShardState;
use crate::proto::socketio_map::{json_of_frame, request_id, split_id};
use crate::proto::socketio_recover::{self as rec, Resume, RECOVER_ACK};
use crate::ConnId;

/// A dropped Socket.IO session, kept for `socketio_recovery`.
pub(crate) struct Session {
    user: Option<Arc<str>>,
    nsp: usize,
    rooms: Vec<Box<str>>,
    /// Rooms with history: the last position queued to the connection.
    positions: Vec<(Box<str>, Arc<str>, u64)>,
    gone: Instant,
}

/// The node's dropped sessions by private session id.
#[derive(Default)]
pub(crate) struct SioSessions(Mutex<Table>);

#[derive(Default)]
struct Table {
    map: HashMap<Box<str>, Session>,
    pruned: Option<Instant>,
}

impl SioSessions {
    fn put(&self, pid: Box<str>, s: Session, keep: Duration) {
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

    fn take(&self, pid: &str, now: Instant, keep: Duration) -> Option<Session> {
        let s = self.0.lock().ok()?.map.remove(pid)?;
        (now.saturating_duration_since(s.gone) <= keep).then_some(s)
    }
}

/// Per shard: the last stored publication (epoch, offset) of each topic with history delivered
/// here, or the position a subscribe to it was answered with.
#[derive(Default)]
pub(crate) struct Seen(HashMap<Arc<str>, (Arc<str>, u64)>);

impl Seen {
    fn saw(&mut self, topic: &Arc<str>, epoch: &Arc<str>, offset: u64) {
        match self.0.get_mut(topic) {
            Some(p) => *p = (epoch.clone(), offset),
            None => {
                self.0.insert(topic.clone(), (epoch.clone(), offset));
            }
        }
    }
}

/// A connection's private sessions and the resume in progress.
#[derive(Default)]
pub(crate) struct ConnRecovery {
    /// `(namespace, pid)` of each connected namespace.
    pids: Vec<(usize, Box<str>)>,
    /// A resume waiting for its rooms' answers (boxed: rare, and an idle connection keeps
    /// this struct).
    resuming: Option<Box<Resuming>>,
}

struct Resuming {
    nsp: usize,
    pid: Box<str>,
    pending: usize,
    complete: bool,
}

/// A private session id: 128 bits from the process's random hasher keys (as the store's
/// epochs), which only the session's own user can use anyway.
fn new_pid(id: ConnId) -> String {
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
    fn recovery_window(&self) -> Option<Duration> {
        Some(self.hub.config.socketio_recovery).filter(|d| !d.is_zero())
    }

    /// A stored publication was delivered on this shard (recovery on, Socket.IO clients here).
    pub(super) fn sio_saw(&mut self, topic: &Arc<str>, epoch: &Arc<str>, offset: u64) {
        if !self.sio.is_empty() && self.recovery_window().is_some() {
            self.sio_seen.saw(topic, epoch, offset);
        }
    }

    /// The session part of a CONNECT to namespace `nsp`: `Some(pid)` to answer now (`None` when
    /// recovery is off), or `None` when a resume waits for the store (the answer follows).
    pub(super) fn sio_session(
        &mut self,
        id: ConnId,
        nsp: usize,
        auth: Option<&serde_json::value::RawValue>,
    ) -> Option<Option<Box<str>>> {
        let Some(keep) = self.recovery_window() else {
            return Some(None);
        };
        let user = self.conn(id).and_then(|c| c.user.clone());
        let found = rec::resume(auth).and_then(|r| {
            let s = self.hub.sio_sessions.take(&r.pid, self.now, keep)?;
            (s.user == user && s.nsp == nsp).then_some((r, s))
        });
        let Some((resume, session)) = found else {
            return Some(Some(self.sio_new_pid(id, nsp)));
        };
        self.sio_register(id, nsp, resume.pid.clone().into());
        let resumed = self.sio_in_nsp(id, Some(nsp), |st| st.sio_resume(id, nsp, &resume, session));
        match resumed {
            (0, true) => Some(Some(resume.pid.into())),
            (0, false) => Some(Some(self.sio_new_pid(id, nsp))),
            (pending, complete) => {
                if let Some(r) = self.sio_rec(id) {
                    r.resuming = Some(Box::new(Resuming {
                        nsp,
                        pid: resume.pid.into(),
                        pending,
                        complete,
                    }));
                }
                None
            }
        }
    }

    fn sio_rec(&mut self, id: ConnId) -> Option<&mut ConnRecovery> {
        self.sio.get_mut(&id).map(|s| &mut s.recovery)
    }

    fn sio_register(&mut self, id: ConnId, nsp: usize, pid: Box<str>) {
        if let Some(r) = self.sio_rec(id) {
            r.pids.retain(|(n, _)| *n != nsp);
            r.pids.push((nsp, pid));
        }
    }

    fn sio_new_pid(&mut self, id: ConnId, nsp: usize) -> Box<str> {
        let pid: Box<str> = new_pid(id).into();
        self.sio_register(id, nsp, pid.clone());
        pid
    }

    /// Subscribes a session's rooms again; rooms with history with `since`. Returns how many
    /// answers to wait for and whether every gap can still be covered.
    fn sio_resume(&mut self, id: ConnId, nsp: usize, resume: &Resume, s: Session) -> (usize, bool) {
        let client = resume.offset.as_deref().and_then(rec::parse_offset);
        let mut pending = 0;
        let mut complete = true;
        for room in &s.rooms {
            let history = !room.ends_with('*')
                && self
                    .hub
                    .namespaces
                    .get(room)
                    .is_some_and(|n| n.has_history());
            if !history {
                complete &= self.subscribe(id, room).is_ok();
                continue;
            }
            let since = match client.filter(|o| o.topic == &**room) {
                Some(o) => Some((o.epoch.into(), o.offset)),
                None => s
                    .positions
                    .iter()
                    .find(|(t, _, _)| t == room)
                    .map(|(_, e, o)| (e.clone(), *o)),
            };
            let Some((epoch, offset)) = since else {
                // Nothing of it was ever seen here: where the client stopped is unknown.
                let _ = self.subscribe(id, room);
                complete = false;
                continue;
            };
            let token = match self.subscribe(id, room) {
                Ok(t) => t,
                Err(_) => {
                    complete = false;
                    continue;
                }
            };
            self.watch_stream(room);
            let t: Arc<str> = (&**room).into();
            self.hold(id, t.clone());
            let job = StoreJob::Subscribe {
                topic: t.clone(),
                conn: id,
                rid: Some(request_id(nsp, RECOVER_ACK)),
                since: Some(Since {
                    epoch: epoch.to_string().into(),
                    offset,
                }),
                held: true,
            };
            match token.and_then(|k| self.pending.get_mut(&k)) {
                Some(p) => p.then.push(job),
                None => {
                    if self.hub.submit_store(job, false).is_err() {
                        self.release(id, &t);
                        complete = false;
                        continue;
                    }
                }
            }
            pending += 1;
        }
        (pending, complete)
    }

    /// A subscribe answer reached connection `id`: remembers the position it covers and, for a
    /// resume's room, turns the reply into the missed events. Returns the frame to queue and,
    /// for a resume's room, whether its gap was covered.
    pub(super) fn sio_replay(
        &mut self,
        id: ConnId,
        topic: &Arc<str>,
        frame: Option<Bytes>,
        pos: Option<&(Arc<str>, u64)>,
    ) -> (Option<Bytes>, Option<bool>) {
        if let Some((e, o)) = pos {
            self.sio_saw(topic, e, *o);
        }
        let Some(nsp) = self
            .sio
            .get(&id)
            .and_then(|s| s.recovery.resuming.as_ref())
            .map(|r| r.nsp)
        else {
            return (frame, None);
        };
        let Some(json) = frame.as_deref().and_then(json_of_frame) else {
            return (frame, None);
        };
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(default)]
            id: Option<u64>,
        }
        let ours = serde_json::from_slice::<Id>(json)
            .ok()
            .and_then(|i| i.id)
            .is_some_and(|i| split_id(i) == (nsp, RECOVER_ACK));
        if !ours {
            return (frame, None);
        }
        let name = &self.hub.config.socketio_namespaces[nsp];
        let r = rec::replay(json, name);
        let frames = Some(r.frames).filter(|f| !f.is_empty());
        (frames, Some(r.complete))
    }

    /// One room of a resume answered: when it was the last, the CONNECT answer goes.
    pub(super) fn sio_room_recovered(&mut self, id: ConnId, complete: bool) {
        let Some(r) = self.sio_rec(id).and_then(|r| r.resuming.as_mut()) else {
            return;
        };
        r.complete &= complete;
        r.pending = r.pending.saturating_sub(1);
        if r.pending > 0 {
            return;
        }
        let Some(done) = self.sio_rec(id).and_then(|r| r.resuming.take()) else {
            return;
        };
        let done = *done;
        let pid = if done.complete {
            done.pid
        } else {
            self.sio_new_pid(id, done.nsp)
        };
        tracing::debug!(conn = %id, recovered = done.complete, "Socket.IO session resumed");
        self.sio_connect_answer(id, done.nsp, Some(&pid));
    }

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
            self.hub.sio_sessions.put(pid, session, keep);
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
