//! `GET /metrics`: the per-shard counters in Prometheus text format, encoded by prometheus-client
//! at scrape time. Nothing here runs per message: the shards only bump their own atomics.

use prometheus_client::encoding::{
    text::encode, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::proto::stats::{ShardStats, HANDSHAKE_BUCKETS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Shard {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Format {
    format: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: String,
}

/// A histogram built from bucket counts kept elsewhere.
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders every counter of every shard.
pub(crate) fn render(
    stats: &[ShardStats],
    shutting_down: bool,
    cluster: Option<&crate::cluster::ClusterStats>,
    store: Option<[(&str, &str, u64, bool); 8]>,
    proxy: Option<&crate::shard::proxy::ProxyStats>,
    webhooks: Option<[(&str, &str, u64, bool); 7]>,
) -> String {
    let mut reg = Registry::with_prefix("ringhub");
    let snaps: Vec<_> = stats.iter().map(ShardStats::snapshot).collect();
    let total = snaps
        .iter()
        .fold(crate::StatsSnapshot::default(), |a, b| a + *b);

    let conns = Family::<Shard, Gauge>::default();
    for (i, s) in snaps.iter().enumerate() {
        conns
            .get_or_create(&Shard {
                shard: i.to_string(),
            })
            .set(s.connections);
    }
    reg.register(
        "connections",
        "Open WebSocket and SSE connections, per shard",
        conns,
    );

    let counters: [(&str, &str, u64); 6] = [
        (
            "messages_in",
            "Messages received from clients",
            total.messages_in,
        ),
        (
            "messages_out",
            "Frames written to clients",
            total.messages_out,
        ),
        (
            "bytes_in",
            "Payload bytes received from clients",
            total.bytes_in,
        ),
        ("bytes_out", "Bytes written to clients", total.bytes_out),
        (
            "slow_consumer_disconnects",
            "Connections closed with 1008 for a full outbound queue",
            total.slow_consumers,
        ),
        (
            "protocol_errors",
            "Connections closed for WebSocket protocol violations",
            total.protocol_errors,
        ),
    ];
    for (name, help, v) in counters {
        reg.register(name, help, ConstCounter::new(v));
    }
    reg.register(
        "rate_limited",
        "Messages refused with rate_limited",
        ConstCounter::new(total.rate_limited),
    );
    let (made, sent) = stats
        .iter()
        .map(ShardStats::delta_counts)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    reg.register(
        "deltas",
        "Fossil deltas made: once per publication per shard with delta subscribers",
        ConstCounter::new(made),
    );
    reg.register(
        "delta_deliveries",
        "Publications delivered as a delta instead of in full",
        ConstCounter::new(sent),
    );
    let encodings = Family::<Format, prometheus_client::metrics::counter::Counter>::default();
    encodings
        .get_or_create(&Format {
            format: "msgpack".into(),
        })
        .inc_by(total.msgpack_encodings);
    encodings
        .get_or_create(&Format {
            format: "socketio".into(),
        })
        .inc_by(total.socketio_encodings);
    reg.register(
        "encodings",
        "Frames converted to another wire format: once per publication per shard on fan-out, once per frame to one connection",
        encodings,
    );

    let errors = Family::<Code, prometheus_client::metrics::counter::Counter>::default();
    let handshakes = Family::<Result_, prometheus_client::metrics::counter::Counter>::default();
    let mut buckets = [0u64; HANDSHAKE_BUCKETS.len()];
    let mut sum = 0.0;
    for s in stats {
        for (code, n) in s.error_counts() {
            errors
                .get_or_create(&Code {
                    code: code.as_str().into(),
                })
                .inc_by(n);
        }
        for (status, n) in s.handshake_counts() {
            let result = match status {
                101 => "upgraded".to_string(),
                0 => "other".to_string(),
                s => s.to_string(),
            };
            handshakes.get_or_create(&Result_ { result }).inc_by(n);
        }
        let (b, s) = s.handshake_latency();
        for (acc, n) in buckets.iter_mut().zip(b) {
            *acc += n;
        }
        sum += s;
    }
    reg.register("errors", "Error envelopes sent, by code", errors);
    reg.register(
        "handshakes",
        "HTTP requests by result: upgraded, or the refusal's status",
        handshakes,
    );
    let mut cumulative = 0;
    let hist = ConstHistogram {
        sum,
        count: buckets.iter().sum(),
        buckets: HANDSHAKE_BUCKETS
            .iter()
            .zip(buckets)
            .map(|(le, n)| {
                cumulative += n;
                (*le, cumulative)
            })
            .collect(),
    };
    reg.register_with_unit(
        "handshake_duration",
        "Time from accept to the 101 response",
        prometheus_client::registry::Unit::Seconds,
        hist,
    );
    let ready = Gauge::<i64>::default();
    ready.set(i64::from(!shutting_down));
    reg.register("ready", "1 while accepting, 0 during shutdown drain", ready);
    if let Some(c) = cluster {
        let sub = reg.sub_registry_with_prefix("cluster");
        for (name, help, value, counter) in c.list() {
            if counter {
                sub.register(name, help, ConstCounter::new(value));
            } else {
                let g = Gauge::<i64>::default();
                g.set(value as i64);
                sub.register(name, help, g);
            }
        }
    }

    let lists = [
        ("store", store.map(|l| l.to_vec())),
        ("webhook", webhooks.map(|l| l.to_vec())),
    ];
    for (prefix, list) in lists {
        let Some(list) = list else { continue };
        let sub = reg.sub_registry_with_prefix(prefix);
        for (name, help, value, counter) in list {
            if counter {
                sub.register(name, help, ConstCounter::new(value));
            } else {
                let g = Gauge::<i64>::default();
                g.set(value as i64);
                sub.register(name, help, g);
            }
        }
    }

    if let Some(p) = proxy {
        register_proxy(reg.sub_registry_with_prefix("proxy"), p);
    }

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyName {
    proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindError {
    proxy: String,
    kind: String,
}

/// A histogram of one proxy kind's call durations.
#[derive(Debug)]
struct ProxyLatency(Vec<(String, ConstHistogram)>);

impl EncodeMetric for ProxyLatency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (kind, h) in &self.0 {
            let labels = [("proxy", kind.as_str())];
            let mut enc = encoder.encode_family(&labels)?;
            enc.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `ringhub_proxy_calls_total{proxy}`, `ringhub_proxy_errors_total{proxy,kind}` and
/// `ringhub_proxy_duration_seconds{proxy}`.
fn register_proxy(reg: &mut Registry, p: &crate::shard::proxy::ProxyStats) {
    use crate::config::proxy::ProxyKind;
    use crate::shard::proxy::{FAILURE_KINDS, LATENCY_BUCKETS_MS};
    use std::sync::atomic::Ordering::Relaxed;
    let calls = Family::<ProxyName, prometheus_client::metrics::counter::Counter>::default();
    let errors = Family::<KindError, prometheus_client::metrics::counter::Counter>::default();
    let mut latency = Vec::new();
    for kind in ProxyKind::ALL {
        let k = &p.kinds[kind.index()];
        let n = k.calls.load(Relaxed);
        if n == 0 {
            continue;
        }
        calls
            .get_or_create(&ProxyName {
                proxy: kind.as_str().into(),
            })
            .inc_by(n);
        for (name, e) in FAILURE_KINDS.iter().zip(&k.errors) {
            errors
                .get_or_create(&KindError {
                    proxy: kind.as_str().into(),
                    kind: (*name).into(),
                })
                .inc_by(e.load(Relaxed));
        }
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
            .iter()
            .zip(&k.buckets)
            .map(|(ms, b)| (*ms as f64 / 1000.0, b.load(Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            k.buckets[LATENCY_BUCKETS_MS.len()].load(Relaxed),
        ));
        let h = ConstHistogram {
            sum: k.sum_us.load(Relaxed) as f64 / 1e6,
            count: n,
            buckets,
        };
        latency.push((kind.as_str().to_string(), h));
    }
    reg.register("calls", "Calls to the backend's proxies, by proxy", calls);
    reg.register("errors", "Failed proxy calls, by proxy and kind", errors);
    reg.register_with_unit(
        "duration",
        "Proxy call durations (a slot, the request, the answer)",
        prometheus_client::registry::Unit::Seconds,
        ProxyLatency(latency),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_shard_and_code() {
        let stats: Vec<ShardStats> = (0..2).map(|_| ShardStats::default()).collect();
        stats[1]
            .connections
            .store(3, std::sync::atomic::Ordering::Relaxed);
        stats[0].error(crate::ErrorCode::Forbidden);
        stats[1].error(crate::ErrorCode::Forbidden);
        stats[0].handshake(101, std::time::Duration::from_micros(300));
        stats[0].handshake(401, std::time::Duration::ZERO);
        let text = render(&stats, false, None, None, None, None);
        assert!(
            text.contains("ringhub_connections{shard=\"1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ringhub_errors_total{code=\"forbidden\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringhub_handshakes_total{result=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringhub_handshake_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(text.contains("ringhub_ready 1"), "{text}");
    }
}
