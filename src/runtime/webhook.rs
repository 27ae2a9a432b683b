//! The webhook sender: its own thread with a single-threaded tokio runtime and a pooled
//! keep-alive HTTP/1.1 client (hyper), never a shard. It leases a batch of events from the
//! Store's outbox through the store thread, posts them as one signed request, retries that
//! request with exponential backoff and jitter until the receiver answers 2xx, and only then
//! tells the store thread to remove them — so an event leaves the outbox only once delivered
//! (or dead-lettered after `dead_letter_after`): at least once, across restarts and outages.
//! One request is in flight at a time, so batches arrive in outbox order; the next batch is
//! claimed while one is posted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

use crate::config::WebhookConfig;
use crate::proto::error::ServerError;
use crate::proto::webhook::{backoff, batch_body, signature_header, SIGNATURE_HEADER};
use crate::shard::jobs::StoreJob;
use crate::shard::shared::HubShared;
use crate::store::{now_ms, OutboxEntry, StoreError};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Starts the sender thread when webhooks are configured.
pub(crate) fn spawn(
    hub: Arc<HubShared>,
) -> Result<Option<std::thread::JoinHandle<()>>, ServerError> {
    if hub.config.webhooks.url.is_none() {
        return Ok(None);
    }
    std::thread::Builder::new()
        .name("ringhub-webhooks".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: no runtime; nothing is sent");
                    return;
                }
            };
            rt.block_on(Sender::new(hub).run());
        })
        .map(Some)
        .map_err(ServerError::Thread)
}

/// Stops the sender: pending events stay in the outbox for the next start.
pub(crate) fn stop(hub: &HubShared) {
    hub.webhooks.stopping.store(true, Ordering::SeqCst);
    hub.webhooks.stop.notify_one();
    hub.webhooks.wake.notify_one();
}

struct Sender {
    hub: Arc<HubShared>,
    cfg: WebhookConfig,
    uri: hyper::Uri,
    client: HttpClient,
    rng: std::cell::Cell<u64>,
}

/// What became of a batch.
enum Outcome {
    Delivered,
    Dead,
    Stopped,
}

impl Sender {
    fn new(hub: Arc<HubShared>) -> Self {
        let cfg = hub.config.webhooks.clone();
        let uri = cfg
            .url
            .as_deref()
            .and_then(|u| u.parse().ok())
            .unwrap_or_default();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build_http();
        let rng = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_ms());
            h.finish() | 1
        };
        Self {
            hub,
            cfg,
            uri,
            client,
            rng: std::cell::Cell::new(rng),
        }
    }

    fn stopping(&self) -> bool {
        self.hub.webhooks.stopping.load(Ordering::Relaxed)
    }

    fn random(&self) -> u64 {
        // xorshift64: jitter needs spread, not secrecy.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// Waits `d`, or less if the server stops.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.hub.webhooks.stop.notified() => {}
        }
    }

    /// Claims, posts and acknowledges batches until stopped. While one batch is posted, the
    /// next is claimed and the previous one's removal committed (one store batch, one fsync,
    /// for both): a batch costs one receiver round trip when the store keeps up.
    async fn run(self) {
        tracing::info!(url = %self.uri, "webhook sender started");
        let mut store_failures = 0;
        let mut next: Vec<OutboxEntry> = Vec::new();
        let mut finished: Vec<String> = Vec::new();
        while !self.stopping() {
            let cur = if next.is_empty() {
                if !finished.is_empty() {
                    self.finish(std::mem::take(&mut finished)).await;
                }
                match self.claim().await {
                    Ok(e) => {
                        store_failures = 0;
                        e
                    }
                    Err(e) => {
                        self.hub.webhooks.fail(format!("outbox: {e}"));
                        let r = self.random();
                        let wait =
                            backoff(store_failures, self.cfg.retry_min, self.cfg.retry_max, r);
                        self.pause(wait).await;
                        store_failures += 1;
                        continue;
                    }
                }
            } else {
                std::mem::take(&mut next)
            };
            if cur.is_empty() {
                // Woken by the store thread's next commit of events; the timeout is a safety
                // net (and notices a stop).
                tokio::select! {
                    _ = self.hub.webhooks.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let previous = std::mem::take(&mut finished);
            let (outcome, (), claimed) = tokio::join!(
                self.deliver(&cur),
                async {
                    if !previous.is_empty() {
                        self.finish(previous).await;
                    }
                },
                self.claim(),
            );
            // A claim that failed is simply made again next round.
            next = claimed.unwrap_or_default();
            match outcome {
                Outcome::Stopped => break,
                Outcome::Delivered | Outcome::Dead => {
                    finished = cur.into_iter().map(|e| e.id).collect();
                }
            }
        }
        if !finished.is_empty() {
            self.finish(finished).await;
        }
        tracing::info!("webhook sender stopped");
    }

    /// Removes delivered (or dead) events from the outbox.
    async fn finish(&self, ids: Vec<String>) {
        if let Err(e) = self.done(ids).await {
            // They stay in the outbox and are sent again: at least once.
            self.hub.webhooks.fail(format!("outbox: {e}"));
        }
    }

    async fn claim(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = StoreJob::OutboxClaim {
            max: self.cfg.batch_size,
            lease: self.cfg.lease,
            reply: tx,
        };
        self.ask(job, rx).await?
    }

    async fn done(&self, ids: Vec<String>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ask(StoreJob::OutboxDone { ids, reply: tx }, rx)
            .await?
    }

    async fn ask<T>(&self, job: StoreJob, rx: oneshot::Receiver<T>) -> Result<T, StoreError> {
        let gone = || StoreError::Unavailable("the store thread stopped".into());
        let tx = self.hub.links.store.as_ref().ok_or_else(gone)?;
        tx.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Posts the batch until it is delivered, its events are too old, or the server stops.
    async fn deliver(&self, entries: &[OutboxEntry]) -> Outcome {
        let body: Bytes = batch_body(entries.iter().map(|e| (e.id.as_str(), &e.body[..]))).into();
        let n = entries.len() as u64;
        let oldest = entries.iter().map(|e| e.created_ms).min().unwrap_or(0);
        let dead_after = self.cfg.dead_letter_after.as_millis() as u64;
        let mut attempt = 0u32;
        loop {
            if self.stopping() {
                return Outcome::Stopped;
            }
            if now_ms().saturating_sub(oldest) > dead_after {
                self.hub.webhooks.dead.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    events = n,
                    "webhooks: events undelivered after dead_letter_after are dropped"
                );
                return Outcome::Dead;
            }
            let started = Instant::now();
            match self.post(&body).await {
                Ok(()) => {
                    let s = &self.hub.webhooks;
                    s.sent.fetch_add(n, Ordering::Relaxed);
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    s.latency_us
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return Outcome::Delivered;
                }
                Err(why) => {
                    tracing::debug!(error = %why, attempt, "webhooks: request failed");
                    self.hub.webhooks.fail(why);
                }
            }
            let r = self.random();
            self.pause(backoff(attempt, self.cfg.retry_min, self.cfg.retry_max, r))
                .await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// One signed request; `Err` says why it did not count as delivered.
    async fn post(&self, body: &Bytes) -> Result<(), String> {
        let t = now_ms() / 1000;
        let sig = signature_header(self.cfg.secret.as_bytes(), t, body);
        let req = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "ringhub-webhooks/1")
            .header(SIGNATURE_HEADER, sig)
            .body(Full::new(body.clone()))
            .map_err(|e| format!("building the request: {e}"))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
            let status = resp.status();
            // Read the answer to its end so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.cfg.timeout)
            )),
        }
    }
}

/// An error with its sources (hyper's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
