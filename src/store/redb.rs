//! The redb [`Store`](super::Store). (Placeholder: implemented in the store branch.)

/// Placeholder.
pub struct RedbStore;

impl RedbStore {
    /// Placeholder.
    pub fn open(_dir: &std::path::Path) -> Result<Self, super::StoreError> {
        Err(super::StoreError::Io("not built yet".into()))
    }
}
