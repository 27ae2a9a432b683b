//! The shard's clock-driven side: the [`tick`](ShardState::tick) that pings quiet connections,
//! times out idle, half-received and stuck ones and ends the drain delay, how often it must run,
//! and the graceful shutdown it (or a `Shutdown` message) starts.

use std::time::{Duration, Instant};

use super::{flag, IoReq, Phase, ShardState};
use crate::proto::envelope;
use crate::ConnId;

/// Interval of SSE heartbeat comments.
const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

impl ShardState {
    /// Stops for good: the shell closes the listener; every connection is told 1001.
    pub(super) fn shut_down(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let ids: Vec<(ConnId, bool, bool)> = self
            .conns
            .iter()
            .map(|(_, c)| (c.id, matches!(c.phase, Phase::Ws(_)), c.between_requests()))
            .collect();
        for (id, ws, idle_http) in ids {
            #[cfg(feature = "axum")]
            self.drop_reservation(id);
            if ws {
                self.close(id, 1001, "server shutting down");
            } else if idle_http {
                self.close_idle_http(id);
            } else {
                self.begin_close(id);
                self.mark_dirty(id.slot());
            }
        }
    }

    /// The shard's timer, run at least every [`tick_interval`](Self::tick_interval): pings
    /// quiet connections, closes idle ones, times out handshakes, cuts stuck closes, ends the
    /// drain delay. One pass over the slab per tick instead of a timer per connection.
    pub(crate) fn tick(&mut self) {
        if self.now.duration_since(self.last_tick) < self.tick_interval() {
            return;
        }
        self.last_tick = self.now;
        if self.drain_until.is_some_and(|t| self.now >= t) {
            self.shut_down();
        }
        if self.polls.has_sessions() {
            self.lend_idle();
        }
        self.sio_prune_seen();
        let now = self.stamp;
        let cfg = &self.hub.config;
        let (ping, idle, close_to, hs, kept) = (
            cfg.ping_interval,
            cfg.idle_timeout,
            cfg.close_timeout,
            cfg.handshake_timeout,
            cfg.http_keepalive_timeout,
        );
        let mut idle_ids = Vec::new();
        let mut idle_http = Vec::new();
        let mut late = Vec::new();
        let mut pings = Vec::new();
        let mut sio_pings = Vec::new();
        let mut late_sio = Vec::new();
        let mut ended_polls = Vec::new();
        for (_, c) in self.conns.iter_mut() {
            if let Some(since) = c.closing {
                if !c.has(flag::FORCED) && now.since(since) >= close_to {
                    c.set(flag::FORCED);
                    if c.has(flag::POLL) {
                        // A polling session no poll came for: it ends without a socket.
                        ended_polls.push(c.id);
                    } else {
                        self.io.push(IoReq::Cut(c.id));
                    }
                }
                continue;
            }
            match c.phase {
                Phase::Head if c.between_requests() => {
                    // Between requests: `accepted` is when the last response was queued.
                    if now.since(c.accepted) >= kept {
                        idle_http.push(c.id);
                    }
                    continue;
                }
                Phase::Head | Phase::Body(..) => {
                    if now.since(c.accepted) >= hs {
                        late.push(c.id);
                    }
                    continue;
                }
                Phase::Api | Phase::Discard => continue,
                Phase::Sse => {
                    // SSE clients never send: no idle timeout, a heartbeat comment instead.
                    if now.since(c.last_seen) >= SSE_HEARTBEAT {
                        c.last_seen = now;
                        pings.push(c.id);
                    }
                    continue;
                }
                Phase::Ws(_) => {}
            }
            let quiet = now.since(c.last_seen);
            if quiet >= idle {
                idle_ids.push(c.id);
            } else if c.has(flag::SIO) && !c.has(flag::SIO_NSP) {
                // No namespace connected yet: it must come within the handshake timeout (the
                // reference server's `connectTimeout`); pinged meanwhile when quiet.
                if now.since(c.accepted) >= hs {
                    late_sio.push(c.id);
                } else if quiet >= ping && !c.has(flag::PING_SENT) {
                    c.set(flag::PING_SENT);
                    sio_pings.push(c.id);
                }
            } else if c.has(flag::SIO) {
                // Engine.IO clients expect a ping every interval, busy or not (they close
                // after pingInterval + pingTimeout without one); `accepted` is unused after
                // the upgrade and marks the last ping (set at the first CONNECT).
                if now.since(c.accepted) >= ping {
                    c.accepted = now;
                    sio_pings.push(c.id);
                }
            } else if quiet >= ping && !c.has(flag::PING_SENT) {
                c.set(flag::PING_SENT);
                pings.push(c.id);
            }
        }
        for id in pings {
            self.enqueue(id, envelope::raw_frame(9, b""));
        }
        for id in sio_pings {
            self.enqueue(id, crate::proto::socketio_map::engine_frame(b"2"));
        }
        for id in ended_polls {
            self.poll_end(id);
        }
        for id in late_sio {
            tracing::debug!(conn = %id, "Socket.IO: no namespace connected in time");
            self.close(id, 1008, "no namespace connected in time");
        }
        for id in idle_ids {
            tracing::debug!(conn = %id, "idle timeout");
            self.close(id, 1001, "idle timeout");
        }
        for id in idle_http {
            tracing::debug!(conn = %id, "HTTP keep-alive timeout");
            self.close_idle_http(id);
        }
        for id in late {
            self.http_error(
                id,
                &crate::proto::handshake::HttpError::new(408, "request not received in time"),
            );
        }
        if !self.durable.is_empty() {
            self.retry_durable();
        }
        if !self.expiry.is_empty() {
            let wall = self.wall_epoch + self.now.duration_since(self.epoch);
            let unix = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.check_expiry(unix);
        }
        self.check_positions();
    }

    /// Closes a kept-alive HTTP connection between requests, without an answer (RFC 9112
    /// §9.6) and without waiting for the client's end: nothing is in progress either way.
    fn close_idle_http(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else { return };
        c.phase = Phase::Discard;
        c.set(flag::FORCED);
        self.begin_close(id);
        self.io.push(IoReq::Cut(id));
        self.mark_dirty(id.slot());
    }

    /// How often [`tick`](Self::tick) must run.
    pub(crate) fn tick_interval(&self) -> Duration {
        let c = &self.hub.config;
        // A position check is due at most a tick late.
        let check = match c.cluster.position_check {
            d if d.is_zero() || !self.hub.cluster.remote_store => Duration::MAX,
            d => d.saturating_mul(4),
        };
        (c.ping_interval
            .min(check)
            .min(c.idle_timeout)
            .min(c.close_timeout)
            .min(c.handshake_timeout)
            .min(c.http_keepalive_timeout.max(Duration::from_millis(1)))
            / 4)
        .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// When the next tick is due.
    pub(crate) fn next_tick(&self) -> Instant {
        self.last_tick + self.tick_interval()
    }
}
