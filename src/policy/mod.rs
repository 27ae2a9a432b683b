//! The door policy: who may connect (IP lists, caps, origins, JWT), what a connection may do
//! (permissions, `user:` privacy) and how often (rate limits).

pub mod auth;
pub mod guard;
pub(crate) mod keyguard;
pub mod permissions;
pub mod ratelimit;
pub mod security;
pub mod settings;
pub mod tls;
