//! The `fanout` command line: connection counts, the publishing mode (`--rate` or `--max`
//! with its window), the run's timing, what `--verify` checks, and the subscribers' transport.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, short = 's', default_value_t = 100)]
    pub subscribers: usize,
    /// Topics (subscribers are spread round-robin over them; raw protocol: must be 1).
    #[arg(long, short = 't', default_value_t = 1)]
    pub topics: usize,
    /// Publisher connections.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,
    /// Payload size in bytes (the `data` string; at least 40).
    #[arg(long, short = 'b', default_value_t = 64)]
    pub payload: usize,
    /// Open loop: total publish rate in messages/s, spread evenly over the streams.
    #[arg(long, conflicts_with = "max")]
    pub rate: Option<f64>,
    /// Closed loop: publish as fast as the in-flight window allows.
    #[arg(long)]
    pub max: bool,
    /// `--max` window: publications per stream not yet delivered to every subscriber.
    #[arg(long, short = 'w', default_value_t = 128)]
    pub window: usize,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warmup seconds (publishing, but not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait after publishers stop for in-flight messages.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Exit non-zero if any message was missing or duplicated after the drain.
    #[arg(long)]
    pub verify: bool,
    /// Topic names are PREFIX0, PREFIX1, ... (ringhub protocol), e.g. `hist:t` for topics
    /// configured with history (their publications carry an `offset` after `data`, which the
    /// classifier ignores like any trailing field).
    #[arg(long, default_value = "t")]
    pub topic_prefix: String,
    /// Check that every delivery carries `"offset":N` after its data, N increasing by one
    /// per subscriber (topics with history, one stream per topic); violations are counted
    /// and fail `--verify`.
    #[arg(long)]
    pub offsets: bool,
    /// Subscribers connect to these servers instead of `--target` (comma-separated, same
    /// form as `--target`; subscriber i to entry i mod N); publishers stay on `--target`.
    /// Latency is then also reported apart for subscribers on the publisher's server
    /// ("same node") and on the others ("cross node").
    #[arg(long)]
    pub sub_targets: Option<String>,
    /// `--protocol socketio`: the subscribers' Engine.IO transport; `polling` is HTTP
    /// long-polling (GET/POST with the session id, one kept-alive TCP connection each). The
    /// publisher stays on WebSocket.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
}

/// The subscribers' transport.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Polling,
}
