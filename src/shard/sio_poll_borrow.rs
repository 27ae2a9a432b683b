//! A parked GET's socket lent to its session, so that an idle polling client costs one slab
//! entry, as a WebSocket client does (BENCHMARKS.md, "Polling client breakdown").
//!
//! A GET that parks on one of this shard's HTTP connections, with nothing of that connection in
//! flight, gives its socket (descriptor, TLS state, caps slots, port) to the session's entry and
//! its own entry is freed — when the shell next looks ([`ShardState::take_rewatch`], before it
//! waits), so bytes read after the GET's head stay with its connection. Not for a busy session
//! (its last GET that waited was answered before a tick came, `PollSession::busy`): its GETs are
//! answered soon, and each move costs the shell two `epoll_ctl`s or a cancel, the give-back as
//! many (13–25% of the long-polling fan-out's rate when every GET paid them). Its GET waits on
//! its own entry, and a tick that finds it still waiting ([`ShardState::lend_idle`]) has it lent
//! then; a GET that waited past a tick makes its session idle again. The shell watches the socket under the session's slot for readiness
//! only ([`Rewatch::Watch`]): nothing is read from it while the GET waits; input or an EOF
//! there gives it back at once ([`ShardState::lent_ready`]), so a client closing its parked
//! GET ends the session as before. To answer the GET (or end the session) the socket goes back
//! to a new HTTP entry first and is answered there as any parked GET is; the session's slot,
//! which its subscriptions, its user's list and its session id name, never moves.
//!
//! The shell must hold no operation on the socket when it changes entries: on epoll that is
//! always so; on io_uring the connection's armed receive is cancelled first
//! ([`Rewatch::Cancel`]) and the socket moves when that receive ends
//! ([`ShardState::recv_ended`]). Until then the GET waits on its own entry, as one parked on
//! another shard's connection always does.

use super::super::entry::Io;
use super::super::inbox::KeepAlive;
use super::super::{flag, ConnEntry, Phase, Rewatch, ShardState};
use super::{poll, Parked};
use crate::ConnId;

impl ShardState {
    /// At a tick: the sessions whose GET waits on another entry lend its socket before the
    /// shell next waits (see the module docs).
    pub(in crate::shard) fn lend_idle(&mut self) {
        self.polls.tick = self.polls.tick.wrapping_add(1);
        let waiting = self.conns.iter().filter_map(|(_, c)| match &c.io {
            Io::Poll(s) if s.get.as_ref().is_some_and(|p| p.conn != c.id) => Some(c.id),
            _ => None,
        });
        self.polls.lending.extend(waiting);
    }

    /// Sessions whose GET was found waiting at the last tick (the shell is about to wait): each takes
    /// its GET's socket now, or once the shell's receive on it ended.
    pub(in crate::shard) fn lend_parked(&mut self) {
        let mut lending = std::mem::take(&mut self.polls.lending);
        for &sid in &lending {
            let Some(from) = self.parked(sid).map(|p| p.conn) else {
                continue;
            };
            if from == sid || from.shard() != self.index {
                continue;
            }
            match self.lendable(sid, from) {
                Some(0) => self.borrow(sid, from),
                Some(_) => self.rewatch.push(Rewatch::Cancel(from)),
                None => {}
            }
        }
        lending.clear();
        self.polls.lending = lending;
    }

    /// The shell's operations in flight on `from`, if it can lend its socket to session `sid`
    /// once they ended: an HTTP connection waiting for its answer with nothing else going on (no
    /// output, no input kept, no TLS record to write, no send), from the session's address (the
    /// socket keeps only its port), to a session holding no socket.
    fn lendable(&self, sid: ConnId, from: ConnId) -> Option<u8> {
        let s = self.conn(sid)?;
        let c = self.conn(from)?;
        let busy = flag::SENDING | flag::RD_EOF | flag::WR_SHUT | flag::COUNTED | flag::DIRTY;
        let quiet = matches!(c.phase, Phase::Api)
            && c.flags & busy == 0
            && c.closing.is_none()
            && c.out.is_empty()
            && !c.wbuf_pending()
            && c.inbuf_empty()
            && c.user.is_none()
            && c.tls.as_ref().is_none_or(|t| !t.wants_write())
            && c.remote.ip() == s.remote.ip()
            && s.has(flag::POLL)
            && s.ops == 0
            && s.tls.is_none();
        let sending = c.ops > 1;
        (quiet && !sending).then_some(c.ops)
    }

    /// Session `sid` takes the socket of `from` (its parked GET's connection, which lends it),
    /// whose entry goes.
    fn borrow(&mut self, sid: ConnId, from: ConnId) {
        let Some(x) = self.conns.try_remove(from.slot() as usize) else {
            return;
        };
        self.polls.links.remove(&from);
        self.rewatch.push(Rewatch::Unwatch(x.fd));
        self.rewatch.push(Rewatch::Watch(sid));
        let caps = ((x.flags & flag::CAPS) >> flag::CAPS_SHIFT) as u8;
        let port = x.remote.port();
        if let Some(s) = self.conn_mut(sid) {
            s.fd = x.fd;
            s.tls = x.tls;
        }
        if let Some(p) = self
            .session(sid)
            .and_then(|s| s.get.as_mut())
            .filter(|p| p.conn == from)
        {
            p.conn = sid;
            p.port = port;
            p.caps = caps;
        }
    }

    /// A borrowed socket goes back to an HTTP connection of its own, waiting for the answer to
    /// `p` (which then names it); nothing when `p` is not borrowed.
    fn give_back(&mut self, sid: ConnId, p: &mut Parked) {
        if p.conn != sid {
            return;
        }
        let Some(s) = self.conn_mut(sid) else { return };
        let (fd, tls) = (std::mem::replace(&mut s.fd, -1), s.tls.take());
        let peer = s.remote.with_port(p.port);
        self.generation = self.generation.wrapping_add(1);
        let slot = self.conns.vacant_key() as u32;
        let id = ConnId::new(self.index, slot, self.generation);
        let perms = self.hub.config.guard.permissions.clone();
        let mut c = ConnEntry::new(id, fd, peer, perms, tls, self.stamp);
        c.phase = Phase::Api;
        c.flags = (u32::from(p.caps) << flag::CAPS_SHIFT) & flag::CAPS;
        match p.keep {
            KeepAlive::Close => {}
            KeepAlive::Http10 => c.set(flag::KEEP_ALIVE | flag::HTTP10 | flag::KEPT),
            KeepAlive::Http11 => c.set(flag::KEEP_ALIVE | flag::KEPT),
        }
        self.conns.insert(c);
        self.polls.links.insert(id, sid);
        self.rewatch.push(Rewatch::Unwatch(fd));
        self.rewatch.push(Rewatch::Unpoll(sid));
        self.rewatch.push(Rewatch::Watch(id));
        p.conn = id;
    }

    /// Whether `slot` is a session holding a borrowed socket (the shell watches it for
    /// readiness only).
    pub(crate) fn lent(&self, slot: u32) -> bool {
        self.conns
            .get(slot as usize)
            .is_some_and(|c| c.fd >= 0 && matches!(c.io, Io::Poll(_)))
    }

    /// The socket session `slot` borrowed has input or its EOF while the GET waits: it goes
    /// back to an HTTP connection of its own, which reads it (pipelined bytes wait for the
    /// answer there; an EOF ends the session, as for any parked GET whose connection closes).
    pub(crate) fn lent_ready(&mut self, slot: u32) {
        let Some(sid) = self.slot_id(slot) else {
            return;
        };
        if !self.parked(sid).is_some_and(|p| p.conn == sid) {
            return;
        }
        let Some(mut p) = self.session(sid).and_then(|s| s.get.take()) else {
            return;
        };
        self.give_back(sid, &mut p);
        if let Some(s) = self.session(sid) {
            s.get = Some(p);
        }
    }

    /// Answers the parked GET `p` of session `sid` with `body` (its socket given back first).
    pub(super) fn reply_parked(&mut self, sid: ConnId, mut p: Parked, body: &[u8]) {
        // Only a GET that waited says how busy its session is (one answered at once with
        // output already queued does not).
        let quick = p.tick == self.polls.tick;
        if let (true, Some(Io::Poll(s))) = (p.waited, self.conn_mut(sid).map(|c| &mut c.io)) {
            s.busy = quick;
        }
        self.give_back(sid, &mut p);
        let origin = p.origin.as_deref().map(|o| &**o);
        self.poll_reply(p.conn, (200, poll::TEXT), body, origin, p.keep);
    }

    /// io_uring: the receive armed on `slot` ended (EOF, an error, no buffer, or cancelled by a
    /// [`Rewatch::Cancel`]). Returns whether the shell arms another. A GET parked on it lends
    /// its socket to its session now; an entry done with its socket is released.
    pub(crate) fn recv_ended(&mut self, slot: u32) -> bool {
        if !self.polls.links.is_empty() {
            if let Some(id) = self.slot_id(slot) {
                if let Some(&sid) = self.polls.links.get(&id) {
                    let parked = self.parked(sid).is_some_and(|p| p.conn == id);
                    if parked && self.lendable(sid, id) == Some(0) {
                        self.borrow(sid, id);
                        return false;
                    }
                }
            }
        }
        if self.wants_input(slot) {
            return true;
        }
        self.release_if_done(slot);
        false
    }
}
