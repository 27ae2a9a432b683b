//! The HTTP side on the WebSocket port: the publishing API, health and readiness, metrics.

pub(crate) mod api;
pub(crate) mod metrics;
pub(crate) mod messaging;
