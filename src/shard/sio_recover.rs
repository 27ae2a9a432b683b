//! Socket.IO connection state recovery on the shard (`proto::socketio_recover` is the wire
//! format): private session ids in the CONNECT answer, sessions kept when a connection drops,
//! and the reconnect that restores a session's rooms and replays what it missed from history.
//!
//! **Where the state lives.** A dropped connection's sessions (one per connected namespace, as
//! socket.io keeps one per socket) go to the node's table
//! [`SioSessions`](super::sio_sessions::SioSessions) — a mutex touched only when a Socket.IO
//! connection closes or resumes, never per message — for `socketio_recovery` (socket.io's
//! `maxDisconnectionDuration`); or, with a store that keeps them (redb, Redis: they survive a
//! restart and are shared by a cluster), to the store thread as `StoreJob::SioPut`, and a
//! resume asks it with `StoreJob::SioTake`, holding the connection's input until
//! `Action::SioSession` answers. A clean shutdown closes every connection through
//! `begin_close`, so connected clients' sessions are kept too. A session holds its user,
//! namespace, rooms, and for each room with history the position of the last publication of it
//! queued to the connection. That position comes from [`Seen`](super::sio_sessions::Seen): per
//! shard, per topic with history, the last stored publication delivered (or subscribe answered)
//! here — one map update per stored publication per shard, nothing per subscriber. The
//! connection was subscribed, so that publication was queued to it.
//!
//! **Resuming.** A CONNECT whose auth payload has `{pid, offset}` of a live session (same user,
//! same namespace, not expired) subscribes the rooms again; each room with history is
//! subscribed with `since` — the client's `offset` for the room it names (what the client
//! processed last, exact even when frames were lost in flight), the session's position for the
//! others — through the same held subscribe as `/ws` recovery, so the replay and the live
//! stream join without gap or duplicate. Replies come back as the missed events (each with its
//! offset); when every room answered, the CONNECT answer carries the old `pid` (the client's
//! `socket.recovered === true`) if every gap was covered, a new one otherwise.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::jobs::{Since, StoreJob};
use super::sio_sessions::{new_pid, Session};
use super::ShardState;
use crate::proto::socketio_map::{json_of_frame, request_id, split_id};
use crate::proto::socketio_recover::{self as rec, Resume, RECOVER_ACK};
use crate::ConnId;

/// A connection's private sessions and the resume in progress.
#[derive(Default)]
pub(crate) struct ConnRecovery {
    /// `(namespace, pid)` of each connected namespace.
    pub(super) pids: Vec<(usize, Box<str>)>,
    /// A resume waiting for its rooms' answers (boxed: rare, and an idle connection keeps
    /// this struct).
    resuming: Option<Box<Resuming>>,
    /// While the store looks a session up: the Engine.IO messages received meanwhile (opcode,
    /// payload), handled in order after its answer.
    held: Option<std::collections::VecDeque<(u8, Box<[u8]>)>>,
}

/// Messages held while the store looks a session up, at most (then the connection fails).
const MAX_HELD: usize = 256;

struct Resuming {
    nsp: usize,
    pid: Box<str>,
    pending: usize,
    complete: bool,
}

impl ShardState {
    pub(super) fn recovery_window(&self) -> Option<Duration> {
        Some(self.hub.config.socketio_recovery).filter(|d| !d.is_zero())
    }

    /// A stored publication was delivered on this shard (recovery on, Socket.IO clients here).
    pub(super) fn sio_saw(&mut self, topic: &str, epoch: &Arc<str>, offset: u64) {
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
        if self.hub.sio_sessions.in_store() {
            // The store keeps the sessions: ask it, holding what the client sends meanwhile.
            let Some(resume) = rec::resume(auth) else {
                return Some(Some(self.sio_new_pid(id, nsp)));
            };
            let job = StoreJob::SioTake {
                conn: id,
                nsp,
                resume: Box::new(resume),
            };
            if self.hub.submit_store(job, false).is_err() {
                return Some(Some(self.sio_new_pid(id, nsp)));
            }
            if let Some(r) = self.sio_rec(id) {
                r.held.get_or_insert_with(Default::default);
            }
            return None;
        }
        let found = rec::resume(auth).and_then(|r| {
            let mine = |s: &Session| s.user == user && s.nsp == nsp;
            let s = self.hub.sio_sessions.take(&r.pid, self.now, keep, mine)?;
            Some((r, s))
        });
        let Some((resume, session)) = found else {
            return Some(Some(self.sio_new_pid(id, nsp)));
        };
        self.sio_resume_session(id, nsp, resume, session)
    }

    /// Resumes a session found for a CONNECT (checked: same user, same namespace): as
    /// [`sio_session`](Self::sio_session) answers.
    fn sio_resume_session(
        &mut self,
        id: ConnId,
        nsp: usize,
        resume: Resume,
        session: Session,
    ) -> Option<Option<Box<str>>> {
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
            // Most clients connect one namespace: room for one, not `Vec`'s first four.
            r.pids.reserve_exact(1);
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
        self.sio_on_connect(id, done.nsp, None);
    }

    /// Holds an Engine.IO message while the store looks a session up: true when held (or the
    /// connection failed because too many were).
    pub(super) fn sio_hold_input(&mut self, id: ConnId, op: u8, msg: &[u8]) -> bool {
        let Some(q) = self.sio_rec(id).and_then(|r| r.held.as_mut()) else {
            return false;
        };
        if q.len() >= MAX_HELD {
            self.close(id, 1008, "too_many");
            return true;
        }
        q.push_back((op, msg.into()));
        true
    }

    /// The store answered a resume: the session (if it was kept, and is this connection's),
    /// then the CONNECT answer (now, or after the replay) and the messages held meanwhile.
    pub(super) fn sio_session_answer(
        &mut self,
        id: ConnId,
        nsp: usize,
        resume: Resume,
        session: Option<Bytes>,
    ) {
        let Some(held) = self.sio_rec(id).and_then(|r| r.held.take()) else {
            return;
        };
        let user = self.conn(id).and_then(|c| c.user.clone());
        let names = &self.hub.config.socketio_namespaces;
        let decoded = session.as_deref().and_then(rec::StoredSession::decode);
        let mine = decoded.as_ref().is_some_and(|s| {
            s.user.as_deref() == user.as_deref() && names.get(nsp) == Some(&s.nsp)
        });
        if let (Some(s), Some(bytes), false) = (&decoded, &session, mine) {
            if s.expires_ms > crate::store::now_ms() {
                // Someone else's session (a leaked pid): it stays its owner's, as it was.
                let job = StoreJob::SioPut {
                    pid: resume.pid.as_str().into(),
                    session: bytes.clone(),
                    expires_ms: s.expires_ms,
                };
                let _ = self.hub.submit_store(job, false);
            }
        }
        let found = decoded.filter(|_| mine).map(|s| Session {
            user: user.clone(),
            nsp,
            rooms: s.rooms.into_iter().map(Into::into).collect(),
            positions: s
                .positions
                .into_iter()
                .map(|(r, e, o)| (r.into(), e.into(), o))
                .collect(),
            gone: self.now,
        });
        let answer = match found {
            Some(s) => self.sio_resume_session(id, nsp, resume, s),
            None => Some(Some(self.sio_new_pid(id, nsp))),
        };
        if let Some(pid) = answer {
            self.sio_connect_answer(id, nsp, pid.as_deref());
            self.sio_on_connect(id, nsp, None);
        }
        let mut held = held;
        while let Some((op, msg)) = held.pop_front() {
            if self.conn(id).is_none_or(|c| c.closing.is_some()) {
                return;
            }
            self.sio_input(id, op, &msg);
            if let Some(q) = self.sio_rec(id).and_then(|r| r.held.as_mut()) {
                // Another resume began: the rest waits behind it, in order.
                for m in held.into_iter().rev() {
                    q.push_front(m);
                }
                return;
            }
        }
    }
}
