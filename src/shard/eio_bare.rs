//! The bare Engine.IO endpoint (`Config::engineio`): Engine.IO sessions with no Socket.IO layer.
//!
//! A bare session is a Socket.IO connection in another mode, not other code: the same upgrade,
//! OPEN packet, long-polling, upgrade from polling and heartbeats (`shard::sio`,
//! `shard::sio_poll`), with the entry's flag `EIO_BARE`. Where the Socket.IO layer would
//! begin (a `4...` message read as a Socket.IO packet, its CONNECT admitting the connection),
//! a bare session instead is admitted at its handshake, as a `/ws` upgrade is (origin, token,
//! `on_connect`), and each message is dispatched as an envelope on the endpoint's topic
//! (`proto::engineio_bare`); on the way out, `packed_for` and the fan-out turn envelopes into
//! Engine.IO messages of their data.

use super::{flag, ShardState};
use crate::policy::guard::Admitted;
use crate::proto::engineio::Data;
use crate::proto::engineio_bare as bare;
use crate::proto::handshake::{HttpError, RequestHead};
use crate::ConnId;

impl ShardState {
    /// Whether `path` is the bare Engine.IO endpoint's (with or without its trailing slash).
    pub(super) fn is_eio_bare_path(&self, path: &str) -> bool {
        self.hub.config.engineio.as_ref().is_some_and(|e| {
            path == e.path || (e.path.ends_with('/') && path == &e.path[..e.path.len() - 1])
        })
    }

    /// A bare session's handshake on entry `id` (its WebSocket, or its polling session):
    /// checked as a `/ws` upgrade is (origin, the token from `?token=` or `Authorization`,
    /// then `on_connect` with the endpoint's path and the query).
    pub(super) fn eio_bare_admit(
        &mut self,
        id: ConnId,
        head: &RequestHead,
    ) -> Result<Admitted, HttpError> {
        let mut admitted = self.hub.config.guard.admit(head)?;
        let request = (head.path.as_str(), head.query.as_deref(), None);
        self.connect_hook(id, request, &mut admitted)?;
        Ok(admitted)
    }

    /// A bare session is open (its OPEN packet queued): nothing more to wait for, so it is
    /// pinged every interval from now on (`tick`), and it joins the token's and `on_connect`'s
    /// `topics`.
    pub(super) fn eio_bare_opened(&mut self, id: ConnId, topics: &[String]) {
        let now = self.stamp;
        if let Some(c) = self.conn_mut(id) {
            c.set(flag::EIO_BARE | flag::SIO_NSP);
            c.accepted = now;
        }
        self.connected(id, topics);
    }

    /// One message of a bare session, text or binary: dispatched as a `/ws` message on the
    /// endpoint's topic (`{"topic":T,"event":"message","data":..}`).
    pub(super) fn eio_message(&mut self, id: ConnId, data: Data<'_>) {
        let hub = self.hub.clone();
        let Some(endpoint) = &hub.config.engineio else {
            return;
        };
        let env = bare::envelope_from_message(&endpoint.topic, &data);
        self.dispatch(id, &env);
    }
}
