//! Socket.IO rooms per namespace.
//!
//! A room is a topic the *connection* is subscribed to (one subscription in the registry,
//! whichever namespaces want it), and each room also has the set of namespaces it was joined
//! in: a join while the connection handles an event of namespace `N` (the default `join`
//! event, or a handler's `ctx.join`; a handler on the pool counts for the namespace of the
//! connection's latest event) adds `N`; a `leave` there removes `N`, and the subscription goes
//! only when no namespace is left. Rooms joined outside any event (the JWT `topics` claim,
//! `on_connect`, the HTTP API, `ServerHandle`) belong to the home namespace (the first one
//! connected). A publication is emitted once on each namespace holding a matching room.
//!
//! Cost: rooms of the home namespace only — by far the common case — keep nothing here and
//! the connection's flags say so ([`flag::SIO_ROOMS`] unset), so delivery looks nothing up.
//! Only a connection with a room in another namespace has entries, and its deliveries match
//! its subscriptions against the topic to find the namespaces.

use super::{flag, ConnEntry, ShardState};
use crate::proto::pattern::Pattern;
use crate::ConnId;

/// A Socket.IO connection's rooms whose namespaces are not just the home one.
#[derive(Default)]
pub(crate) struct NspRooms {
    /// Pattern → namespace bits (bit `i`: the `i`-th configured namespace).
    rooms: Vec<(Box<str>, u128)>,
    /// The namespace of the connection's latest event.
    last: u8,
}

impl NspRooms {
    /// The namespaces of room `pattern` (the home one unless recorded otherwise).
    pub(super) fn mask(&self, pattern: &str, home: usize) -> u128 {
        self.rooms
            .iter()
            .find(|(p, _)| &**p == pattern)
            .map_or(1 << home, |(_, m)| *m)
    }

    fn set(&mut self, pattern: &str, mask: u128, home: usize) {
        self.rooms.retain(|(p, _)| &**p != pattern);
        if mask != 0 && mask != 1 << home {
            self.rooms.push((pattern.into(), mask));
        }
    }
}

/// The namespaces a publication on `topic` goes to for connection `c` (home namespace `home`):
/// those of its rooms matching the topic.
pub(super) fn topic_mask(rooms: &NspRooms, c: &ConnEntry, home: usize, topic: &str) -> u128 {
    let mut mask = 0;
    for s in &c.subs {
        if Pattern::parse(s).is_ok_and(|p| p.matches(topic)) {
            mask |= rooms.mask(s, home);
        }
    }
    if mask == 0 {
        1 << home
    } else {
        mask
    }
}

impl ShardState {
    /// Runs `f` with namespace `nsp` (when given) as the context of connection `id`'s joins and
    /// leaves.
    pub(super) fn sio_in_nsp<R>(
        &mut self,
        id: ConnId,
        nsp: Option<usize>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let Some(nsp) = nsp else { return f(self) };
        if let Some(s) = self.sio.get_mut(&id) {
            s.rooms.last = nsp as u8;
        }
        let prev = self.sio_ctx.replace((id, nsp));
        let r = f(self);
        self.sio_ctx = prev;
        r
    }

    /// The namespace of a Socket.IO connection's latest event (what a pool handler's join of
    /// the connection counts for); `None` for other connections.
    pub(super) fn sio_last_nsp(&self, id: ConnId) -> Option<usize> {
        self.sio.get(&id).map(|s| usize::from(s.rooms.last))
    }

    /// `(namespace, home)` when `id` joins or leaves inside an event of a namespace.
    fn sio_nsp_of(&self, id: ConnId) -> Option<(usize, usize)> {
        let (cid, nsp) = self.sio_ctx?;
        let home = self.conn(id).filter(|_| cid == id)?.sio_home()?;
        Some((nsp, home))
    }

    fn sio_rooms_flag(&mut self, id: ConnId) {
        let any = self.sio.get(&id).is_some_and(|s| !s.rooms.rooms.is_empty());
        if let Some(c) = self.conn_mut(id) {
            if any {
                c.set(flag::SIO_ROOMS);
            } else {
                c.clear(flag::SIO_ROOMS);
            }
        }
    }

    /// Connection `id` subscribed to `pattern` (`had`: it already was).
    pub(super) fn sio_room_added(&mut self, id: ConnId, pattern: &str, had: bool) {
        let Some((nsp, home)) = self.sio_nsp_of(id) else {
            return;
        };
        let Some(s) = self.sio.get_mut(&id) else {
            return;
        };
        let mask = if had {
            s.rooms.mask(pattern, home) | 1 << nsp
        } else {
            1 << nsp
        };
        s.rooms.set(pattern, mask, home);
        self.sio_rooms_flag(id);
    }

    /// Connection `id` leaves `pattern`: true when another namespace still holds the room, so
    /// the subscription stays.
    pub(super) fn sio_room_kept(&mut self, id: ConnId, pattern: &str) -> bool {
        if !self.conn(id).is_some_and(|c| c.has(flag::SIO)) {
            return false;
        }
        let ctx = self.sio_nsp_of(id);
        let home = self.conn(id).and_then(ConnEntry::sio_home).unwrap_or(0);
        let Some(s) = self.sio.get_mut(&id) else {
            return false;
        };
        let mask = match ctx {
            Some((nsp, _)) => s.rooms.mask(pattern, home) & !(1 << nsp),
            None => 0,
        };
        s.rooms.set(pattern, mask, home);
        self.sio_rooms_flag(id);
        mask != 0
    }

    /// The rooms of namespace `nsp` of connection `id` (for its recovery session).
    pub(super) fn sio_rooms_of(&self, id: ConnId, nsp: usize) -> Vec<Box<str>> {
        let Some(c) = self.conn(id) else {
            return Vec::new();
        };
        let home = c.sio_home().unwrap_or(0);
        let rooms = self.sio.get(&id).map(|s| &s.rooms);
        c.subs
            .iter()
            .filter(|p| rooms.map_or(1 << home, |r| r.mask(p, home)) & (1 << nsp) != 0)
            .cloned()
            .collect()
    }
}
