//! The in-memory [`Store`](super::Store). (Placeholder: implemented in the store branch.)
