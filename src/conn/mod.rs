//! One connection's life: admission (IP, caps, TLS), the HTTP request, then a WebSocket
//! ([`reader`] + [`writer`]), an SSE stream ([`sse`]) or an API call. Generic over the transport,
//! so both shells share it.

mod decode;
mod reader;
mod sse;
mod writer;

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::guard::Admitted;
use crate::http::{self, HttpError, RequestHead};
use crate::shard::{ConnKind, Shard};
use crate::transport::{shutdown_fd, Accepted, Prefixed, Writer};

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve<R, W>(shard: Rc<Shard>, acc: Accepted<R, W>)
where
    R: AsyncRead + Unpin + 'static,
    W: Writer,
{
    let accepted = Instant::now();
    let guard = &shard.hub.config.guard;
    // Held for the connection's lifetime: dropping it frees the slot in the caps.
    let _permit = match guard.admit_ip(acc.peer.ip()) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(peer = %acc.peer, status = e.status, reason = %e.message, "connection refused");
            shard.stats().handshake(e.status, accepted.elapsed());
            let mut w = acc.write;
            if guard.tls.is_none() {
                let _ = w.write_all(e.response()).await;
            }
            shutdown_fd(acc.fd, libc::SHUT_WR);
            return;
        }
    };
    let Some(tls) = guard.tls.clone() else {
        return serve_http(shard, acc, accepted).await;
    };
    let Accepted {
        read,
        write,
        fd,
        peer,
    } = acc;
    let timeout = shard.hub.config.handshake_timeout;
    // Boxed: the TLS states are large and most connections never hold them, so they stay out of
    // the inline size of every connection's task (what an idle connection costs).
    let handshake = Box::pin(crate::transport::tls::accept(tls, read, write));
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok((read, write))) => {
            Box::pin(serve_http(
                shard,
                Accepted {
                    read,
                    write,
                    fd,
                    peer,
                },
                accepted,
            ))
            .await
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            shard.stats().handshake(400, accepted.elapsed());
        }
        Err(_) => shard.stats().handshake(408, accepted.elapsed()),
    }
}

/// What an HTTP request asks for.
enum Route {
    /// A WebSocket upgrade, with its 101 response.
    Ws(ConnKind, Vec<u8>, Admitted),
    /// An SSE stream of these patterns.
    Sse(Vec<String>, Admitted),
    /// An API, health or metrics request.
    Api,
}

fn route(shard: &Shard, head: &RequestHead) -> Result<Route, HttpError> {
    let cfg = &shard.hub.config;
    let api = crate::api::is_api_path(&head.path);
    if shard.is_shutting_down() && !api {
        return Err(HttpError::new(503, "server is shutting down"));
    }
    if api {
        return Ok(Route::Api);
    }
    let kind = if head.path == cfg.ws_path {
        ConnKind::PubSub
    } else if cfg.echo_path.as_deref() == Some(head.path.as_str()) {
        ConnKind::Echo
    } else if head.path == "/sse" {
        let topics = sse::topics(head, cfg.max_subscriptions)?;
        let admitted = cfg.guard.admit(head)?;
        for t in &topics {
            admitted
                .permissions
                .can_subscribe(admitted.user.as_deref(), t)
                .map_err(|e| HttpError::new(403, format!("topic '{t}': {e}")))?;
        }
        return Ok(Route::Sse(topics, admitted));
    } else {
        return Err(HttpError::new(404, format!("no route for {}", head.path)));
    };
    let response = http::accept_upgrade(head)?;
    Ok(Route::Ws(kind, response, cfg.guard.admit(head)?))
}

async fn serve_http<R, W>(shard: Rc<Shard>, acc: Accepted<R, W>, accepted: Instant)
where
    R: AsyncRead + Unpin + 'static,
    W: Writer,
{
    let Accepted {
        mut read,
        mut write,
        fd,
        peer,
    } = acc;
    let cfg = &shard.hub.config;
    let head = match tokio::time::timeout(
        cfg.handshake_timeout,
        http::read_head(&mut read, cfg.guard.max_handshake_bytes),
    )
    .await
    {
        Err(_) => Err(HttpError::new(408, "request head not received in time")),
        Ok(r) => r,
    };
    let routed = head.and_then(|(head, rest)| Ok((route(&shard, &head)?, head, rest)));
    let (route, head, rest) = match routed {
        Ok(r) => r,
        Err(e) => {
            shard.stats().handshake(e.status, accepted.elapsed());
            if matches!(e.status, 401 | 403) {
                tracing::info!(%peer, status = e.status, reason = %e.message, "upgrade refused");
            } else {
                tracing::debug!(%peer, status = e.status, reason = %e.message, "HTTP request refused");
            }
            let _ = write.write_all(e.response()).await;
            shutdown_fd(fd, libc::SHUT_WR);
            return;
        }
    };
    let (kind, response, admitted) = match route {
        Route::Ws(kind, response, admitted) => (kind, response, admitted),
        Route::Sse(topics, admitted) => {
            return Box::pin(sse::serve(
                shard,
                Accepted {
                    read,
                    write,
                    fd,
                    peer,
                },
                topics,
                admitted,
                accepted,
            ))
            .await
        }
        Route::Api => {
            let mut reader = Prefixed::new(Bytes::new(), read);
            let resp = Box::pin(crate::api::handle(&shard.hub, &head, rest, &mut reader)).await;
            if resp.status >= 400 {
                shard.stats().handshake(resp.status, accepted.elapsed());
            }
            let _ = write.write_all(resp.into_bytes()).await;
            shutdown_fd(fd, libc::SHUT_WR);
            return;
        }
    };
    if write.write_all(response).await.0.is_err() {
        return;
    }
    shard.stats().handshake(101, accepted.elapsed());
    let user = admitted.user.clone();
    let id = shard.register(fd, peer, admitted, false);
    tracing::debug!(conn = %id, %peer, user = user.as_deref().unwrap_or("-"), "connected");
    tokio::task::spawn_local(writer::write_loop(shard.clone(), id, fd, write));
    let mut reader = Prefixed::new(rest, read);
    let drain = reader::read_loop(&shard, id, kind, &mut reader).await;
    shard.reader_done(id);
    if drain {
        // We closed on a protocol error: read until the peer closes too, so unread input does
        // not turn our close into a reset that could destroy the close frame in flight.
        let mut scratch = vec![0u8; 4096];
        let _ = tokio::time::timeout(cfg.close_timeout, async {
            while let Ok(n) = reader.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!(conn = %id, "disconnected");
    shard.task_done(id);
}
