//! The HTTP side on the WebSocket port: the publishing API, health and readiness, metrics, and
//! the built-in web pages (chat demo, admin dashboard).

pub(crate) mod api;
mod messages;
pub(crate) mod messaging;
pub(crate) mod metrics;
mod nodes;
mod publish;
pub(crate) mod response;
pub(crate) mod ui;
mod users;
