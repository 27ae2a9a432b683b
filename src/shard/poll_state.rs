//! A long-polling session's state (`shard::sio_poll`), kept in its slab entry in place of the
//! socket buffers a session does not have (`entry::Io`): data only, so the entry can name it.

use super::inbox::KeepAlive;
use crate::ConnId;

/// Where a session is in the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Packets move over GET and POST.
    Polling,
    /// A WebSocket answered the probe: GETs are answered with a noop, output waits.
    Probing,
    /// The WebSocket carries the session.
    Upgraded,
    /// The client sent the close packet with no poll waiting: a poll sent at the same time
    /// (on another connection, perhaps another shard) is answered with a noop, as it would
    /// have been had it come first; the session ends then, or after `close_timeout`.
    Closed,
}

/// A polling session's state beyond its entry (the entry holds the queue, user, limits): at
/// most 48 bytes, so that it takes no more of the entry than a socket's buffers do.
pub(crate) struct PollSession {
    pub(super) secret: u64,
    /// The GET waiting for output.
    pub(super) get: Option<Parked>,
    /// The WebSocket probing or carrying the session.
    pub(super) ws: MaybeConn,
    pub(super) stage: Stage,
    /// Its last GET was answered before a tick came (a busy session): the next one waits on its
    /// own entry until a tick finds it still waiting (`sio_poll_borrow`).
    pub(super) busy: bool,
}

/// A GET waiting on some shard's HTTP connection, and how to answer it.
pub(crate) struct Parked {
    /// Its connection — or the session's own id while the session holds that connection's
    /// socket (`sio_poll_borrow`).
    pub(super) conn: ConnId,
    /// Its `Origin`, behind a thin pointer (8 bytes in every session; browsers send one).
    #[allow(clippy::redundant_allocation)]
    pub(super) origin: Option<Box<Box<str>>>,
    pub(super) keep: KeepAlive,
    /// While borrowed: the socket's port (its address is the session's) and its slots in the
    /// connection caps (two bits of `flag::CAPS`).
    pub(super) port: u16,
    pub(super) caps: u8,
    /// The shard's tick count (`Polls::tick`, wrapping) when it parked.
    pub(super) tick: u8,
    /// It found no output and waited (its answer then tells whether the session is busy).
    pub(super) waited: bool,
}

/// An optional connection id in 8 bytes (`Option<ConnId>` takes 16): the id's bits plus one,
/// zero for none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MaybeConn(Option<std::num::NonZeroU64>);

impl MaybeConn {
    /// No connection.
    pub(crate) const NONE: MaybeConn = MaybeConn(None);

    /// The connection, if any.
    pub(crate) fn get(self) -> Option<ConnId> {
        self.0.map(|n| ConnId::from_raw(n.get() - 1))
    }

    /// Names `id`; returns what it named before.
    pub(crate) fn replace(&mut self, id: ConnId) -> Option<ConnId> {
        let old = self.get();
        self.0 = std::num::NonZeroU64::new(id.raw().wrapping_add(1));
        old
    }
}
