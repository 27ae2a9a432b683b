//! Socket.IO namespaces being connected: the CONNECT packet's auth payload checked as the `/ws`
//! upgrade checks `?token=` (then `on_connect` and the connect proxy), the connection admitted
//! at its first CONNECT, and the CONNECT or CONNECT_ERROR answer. The packets themselves are
//! read in `sio`; a connect proxy's answer comes back through `sio_proxy`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{flag, ShardState};
use crate::proto::engineio as eio;
use crate::proto::handshake::HttpError;
use crate::proto::socketio::{self as sio, Kind};
use crate::proto::socketio_map as map;
use crate::ConnId;

/// The auth payload of a CONNECT packet (`io(url, {auth: {token}})`).
#[derive(Deserialize)]
struct Auth<'a> {
    #[serde(borrow, default)]
    token: Option<std::borrow::Cow<'a, str>>,
}

impl ShardState {
    /// CONNECT to a configured namespace: the first one checks the auth payload's token as the
    /// `/ws` upgrade checks `?token=` (user, permissions, the `topics` claim joined here), then
    /// asks the connect proxy when one is configured (`sio_proxy`).
    pub(super) fn sio_connect(&mut self, id: ConnId, nsp: usize, auth: Option<&RawValue>) {
        let name = self.hub.config.socketio_namespaces[nsp].clone();
        let token = auth
            .and_then(|a| serde_json::from_str::<Auth<'_>>(a.get()).ok())
            .and_then(|a| a.token);
        let authed = self.sio.get(&id).is_some_and(|s| s.authed);
        let proxy = self.proxy_for(crate::config::proxy::ProxyKind::Connect, "");
        let mut topics = Vec::new();
        // With a connect proxy the backend named the user at the first CONNECT: the others'
        // auth payloads are not checked again.
        if !authed || (token.is_some() && proxy.is_none()) {
            let mut admitted = match self.hub.config.guard.admit_token(token.as_deref()) {
                Ok(a) => a,
                Err(e) => return self.sio_connect_error(id, &name, &e),
            };
            if !authed {
                // `on_connect` decides as for `/ws`, with the auth payload to read.
                let request = (eio::PATH, None, auth.map(RawValue::get));
                if let Err(e) = self.connect_hook(id, request, &mut admitted) {
                    return self.sio_connect_error(id, &name, &e);
                }
                if let Some(ep) = proxy {
                    return self.sio_connect_proxy(id, nsp, auth, admitted, ep);
                }
            }
            let Some(c) = self.conn(id) else { return };
            if authed && c.user != admitted.user {
                let e = HttpError::new(401, "unauthorized: the token names another user");
                return self.sio_connect_error(id, &name, &e);
            }
            if !authed {
                topics = self.sio_admit(id, admitted);
            }
        }
        self.sio_joined(id, nsp, !authed, &topics, auth);
    }

    /// The first CONNECT is admitted: the connection takes the user and permissions; returns
    /// the topics to join.
    pub(super) fn sio_admit(
        &mut self,
        id: ConnId,
        admitted: crate::policy::guard::Admitted,
    ) -> Vec<String> {
        let Some(c) = self.conn_mut(id) else {
            return Vec::new();
        };
        c.user = admitted.user.clone();
        c.perms = admitted.permissions;
        if let Some(u) = admitted.user {
            let ids = self.users.entry(u.clone()).or_default();
            ids.push(id);
            // As for `/ws` (`conn::upgrade`): the shard's first connection of the user
            // is a webhook fact, its last one (`output`) too.
            if ids.len() == 1 {
                self.webhook_user(&u, true);
            }
        }
        admitted.topics
    }

    /// Namespace `nsp` is connected: the CONNECT packet answers (or a resume of the session the
    /// `auth` payload names starts), and at the first one the connection joins `topics`.
    pub(super) fn sio_joined(
        &mut self,
        id: ConnId,
        nsp: usize,
        first: bool,
        topics: &[String],
        auth: Option<&RawValue>,
    ) {
        let now = self.stamp;
        if let Some(c) = self.conn_mut(id).filter(|c| !c.has(flag::SIO_NSP)) {
            // Engine.IO pings every interval from now on (see `tick`).
            c.set(flag::SIO_NSP);
            c.accepted = now;
        }
        if let Some(s) = self.sio.get_mut(&id) {
            if s.connected == 0 {
                // The first namespace is the home: publications are emitted on it.
                if let Some(c) = self.conns.get_mut(id.slot() as usize) {
                    c.flags = (c.flags & !flag::SIO_HOME)
                        | (((nsp as u32) << flag::SIO_HOME_SHIFT) & flag::SIO_HOME);
                }
            }
            s.connected |= 1 << nsp;
            s.authed = true;
        }
        // Connection state recovery: a new private session, or the old one resumed (whose
        // answer waits for the store when rooms with history replay what was missed).
        let session = self.sio_session(id, nsp, auth);
        if let Some(pid) = &session {
            self.sio_connect_answer(id, nsp, pid.as_deref());
        }
        if first {
            self.connected(id, topics);
        }
        // A resume waiting for the store runs it after its answer (`sio_recover`).
        if session.is_some() {
            self.sio_on_connect(id, nsp, auth);
        }
    }

    /// The application's `on_socketio_connect` handler for namespace `nsp` of `id`, just
    /// connected (its CONNECT answer queued): its sends and joins are that namespace's.
    pub(super) fn sio_on_connect(&mut self, id: ConnId, nsp: usize, auth: Option<&RawValue>) {
        let Some(handler) = self.hub.hooks.on_socketio_connect.clone() else {
            return;
        };
        let Some(c) = self.conn(id).filter(|c| c.closing.is_none()) else {
            return;
        };
        let who = (c.user.clone(), c.remote.addr());
        let hub = self.hub.clone();
        let name = &hub.config.socketio_namespaces[nsp];
        let msg = crate::Message::new(name, "connect", auth, None);
        self.sio_in_nsp(id, Some(nsp), |st| st.run_inline(id, &*handler, &msg, who));
    }

    /// The CONNECT answer `{"sid"[,"pid"]}` on namespace `nsp`.
    pub(super) fn sio_connect_answer(&mut self, id: ConnId, nsp: usize, pid: Option<&str>) {
        let name = &self.hub.config.socketio_namespaces[nsp];
        let sid = format!("{}-{nsp}", self.hub.client_id(id));
        let mut out = vec![b'4'];
        sio::encode(Kind::Connect, name, None, None, &mut out);
        out.extend_from_slice(b"{\"sid\":");
        sio::push_json_string(&sid, &mut out);
        if let Some(pid) = pid {
            out.extend_from_slice(b",\"pid\":");
            sio::push_json_string(pid, &mut out);
        }
        out.push(b'}');
        self.enqueue(id, map::engine_frame(&out));
    }

    /// CONNECT_ERROR `{message, data: {code, status}}`: the client's `connect_error`.
    fn sio_connect_error(&mut self, id: ConnId, nsp: &str, e: &HttpError) {
        tracing::info!(conn = %id, reason = %e.message, "Socket.IO connect refused");
        let code = if e.status == 401 {
            "unauthorized"
        } else {
            "forbidden"
        };
        let data = format!("{{\"code\":\"{code}\",\"status\":{}}}", e.status);
        let mut out = vec![b'4'];
        sio::encode_connect_error(nsp, &e.message, Some(&data), &mut out);
        self.enqueue(id, map::engine_frame(&out));
    }
}
