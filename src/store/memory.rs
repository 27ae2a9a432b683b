//! The in-memory [`Store`](super::Store). (Placeholder: implemented in the store branch.)

/// Placeholder.
#[derive(Default)]
pub struct MemoryStore;

impl MemoryStore {
    /// Placeholder.
    pub fn new() -> Self {
        MemoryStore
    }
}
