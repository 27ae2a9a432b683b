//! Sockets from an embedding server (the `axum` feature, `crate::axum`): a WebSocket upgraded by
//! hyper joins the shard as if it had been accepted and upgraded here, and an SSE request is
//! served through one end of a socket pair as a native request.
//!
//! A WebSocket takes two steps, because the connection's id (its client id, which `on_connect`
//! sees) and its slot in the connection caps must exist before the `101` is answered — a refusal
//! must still be an HTTP status — while the socket exists only after it:
//!
//! 1. [`Adoption::Reserve`]: an entry without a socket (`fd == -1`, phase `Discard`, nothing
//!    subscribed, no user, so nothing is ever queued to it) runs `on_connect` and takes the
//!    permit; the reply carries the id and the (hook-amended) admission back.
//! 2. [`Adoption::Attach`]: the upgraded socket joins that entry, which is then upgraded like a
//!    native one (`connected()`: server-side topics, inbox sync); `fd: None` (the upgrade
//!    failed) drops the reservation.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use bytes::Bytes;

use super::{flag, ConnKind, Phase, ShardState};
use crate::policy::guard::Admitted;
use crate::proto::handshake::{HttpError, RequestHead};
use crate::ConnId;

/// What an embedding server hands a shard (through [`ShardMsg::Adopt`](super::inbox::ShardMsg)).
pub(crate) enum Adoption {
    /// Reserve an entry for a WebSocket about to be upgraded; answered on `reply`.
    Reserve {
        remote: SocketAddr,
        head: RequestHead,
        admitted: Admitted,
        reply: tokio::sync::oneshot::Sender<Result<(ConnId, Admitted), HttpError>>,
    },
    /// The upgraded socket of a reservation (owned from here on), with the bytes read past
    /// the request head; `None` drops the reservation.
    Attach {
        id: ConnId,
        fd: Option<RawFd>,
        admitted: Admitted,
        pre_read: Bytes,
    },
    /// A socket (owned from here on) that starts as a new connection whose first bytes are
    /// `pre_read` (a request head): the SSE bridge.
    Fresh {
        fd: RawFd,
        remote: SocketAddr,
        pre_read: Bytes,
    },
}

impl std::fmt::Debug for Adoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adoption::Reserve { remote, .. } => write!(f, "Reserve({remote})"),
            Adoption::Attach { id, fd, .. } => write!(f, "Attach({id}, {fd:?})"),
            Adoption::Fresh { fd, remote, .. } => write!(f, "Fresh({fd}, {remote})"),
        }
    }
}

impl ShardState {
    pub(super) fn adopt(&mut self, a: Adoption) {
        match a {
            Adoption::Reserve {
                remote,
                head,
                mut admitted,
                reply,
            } => {
                let r = self.reserve(remote, &head, &mut admitted);
                let id = r.as_ref().ok().copied();
                if reply.send(r.map(|id| (id, admitted))).is_err() {
                    // The embedding server's request is gone: so is the reservation.
                    if let Some(id) = id {
                        self.drop_reservation(id);
                    }
                }
            }
            Adoption::Attach {
                id,
                fd,
                admitted,
                pre_read,
            } => match fd {
                Some(fd) => self.attach(id, fd, admitted, pre_read),
                None => self.drop_reservation(id),
            },
            Adoption::Fresh {
                fd,
                remote,
                mut pre_read,
            } => {
                let slot = self.accept(fd, remote);
                if let Some(c) = self.conns.get_mut(slot as usize) {
                    // The embedding server terminated TLS, if any.
                    c.tls = None;
                }
                self.adopted.push(slot);
                if !pre_read.is_empty() {
                    // `on_input` unmasks in place: the bytes need to be ours.
                    let mut buf = std::mem::take(&mut pre_read).to_vec();
                    self.on_input(slot, &mut buf);
                }
            }
        }
    }

    fn reserve(
        &mut self,
        remote: SocketAddr,
        head: &RequestHead,
        admitted: &mut Admitted,
    ) -> Result<ConnId, HttpError> {
        if self.hub.is_stopping() || self.shutting_down {
            return Err(HttpError::new(503, "server is shutting down"));
        }
        self.hub.config.guard.admit_address(remote.ip())?;
        let slot = self.accept(-1, remote);
        let id = self.conns[slot as usize].id;
        if let Some(c) = self.conn_mut(id) {
            c.tls = None;
            c.phase = Phase::Discard;
        }
        let r = self
            .connect_hook(id, (&head.path, head.query.as_deref(), None), admitted)
            .and_then(|()| self.take_permit(id));
        if let Err(e) = r {
            if matches!(e.status, 401 | 403) {
                tracing::info!(peer = %remote, status = e.status, reason = %e.message, "upgrade refused");
            }
            self.drop_reservation(id);
            return Err(e);
        }
        Ok(id)
    }

    fn attach(&mut self, id: ConnId, fd: RawFd, mut admitted: Admitted, pre_read: Bytes) {
        let Some(c) = self
            .conn_mut(id)
            .filter(|c| c.fd < 0 && c.closing.is_none())
        else {
            // Dropped meanwhile (shutdown): the socket is ours to close.
            // SAFETY: the descriptor was handed over to this shard and nothing else uses it.
            unsafe { libc::close(fd) };
            return;
        };
        c.fd = fd;
        let slot = id.slot();
        let topics = std::mem::take(&mut admitted.topics);
        self.upgrade(id, Phase::Ws(ConnKind::PubSub), admitted);
        self.adopted.push(slot);
        self.connected(id, &topics);
        if let Some(c) = self.conn_mut(id) {
            let user = c.user.as_deref().unwrap_or("-");
            tracing::debug!(conn = %id, peer = %c.remote, user, "connected (adopted)");
        }
        if !pre_read.is_empty() {
            let mut buf = pre_read.to_vec();
            self.on_input(slot, &mut buf);
        }
    }

    /// Removes a reservation that never got its socket (no-op for any other entry).
    pub(super) fn drop_reservation(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id).filter(|c| c.fd < 0) else {
            return;
        };
        c.set(flag::RD_EOF | flag::WR_SHUT);
        self.begin_close(id);
        self.release_if_done(id.slot());
    }
}
