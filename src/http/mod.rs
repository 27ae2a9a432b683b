//! The HTTP side on the WebSocket port: the publishing API, health and readiness, metrics.

pub(crate) mod api;
pub(crate) mod messaging;
pub(crate) mod metrics;
