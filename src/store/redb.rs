//! The redb [`Store`](super::Store). (Placeholder: implemented in the store branch.)
