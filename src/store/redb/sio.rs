//! Socket.IO recovery sessions of [`RedbStore`] (see
//! [`Store::sio_session_put`](crate::store::Store::sio_session_put)): table `sio_sessions`,
//! pid → expiry (ms since the Unix epoch, 8 bytes little endian) then the session's bytes.
//!
//! Puts and takes go through the write-ahead log like the store's other writes
//! ([`Op::SioPut`], [`Op::SioTake`]): a session kept before a crash is kept after it, and one
//! taken stays taken. Expired rows are removed at most once a minute, when a session is put
//! (unlogged: replaying re-inserts only rows that are expired again, and a take refuses them).

use bytes::Bytes;
use redb::TableDefinition;

use super::wal::Op;
use super::{err, wtx, RedbStore};
use crate::store::StoreError;

pub(super) const SIO_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sio_sessions");

/// Expired rows are looked for at most this often (ms).
const PRUNE_EVERY_MS: u64 = 60_000;

impl RedbStore {
    /// Keeps a session, logging it when `log` (not while replaying).
    pub(super) fn sio_put_inner(
        &mut self,
        pid: &str,
        session: &[u8],
        expires_ms: u64,
        log: bool,
    ) -> Result<(), StoreError> {
        let now = crate::store::now_ms();
        let prune = log && now >= self.sio_pruned.saturating_add(PRUNE_EVERY_MS);
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(SIO_SESSIONS).map_err(err)?;
        if prune {
            t.retain(|_, v| expiry(v).is_some_and(|e| e > now))
                .map_err(err)?;
            self.sio_pruned = now;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&expires_ms.to_le_bytes());
        self.scratch.extend_from_slice(session);
        t.insert(pid, self.scratch.as_slice()).map_err(err)?;
        if log {
            self.wal.push(&Op::SioPut {
                pid,
                expires_ms,
                session,
            });
        }
        Ok(())
    }

    /// Removes a session and returns it unless expired at `now_ms`, logging the removal when
    /// `log` and something was removed.
    pub(super) fn sio_take_inner(
        &mut self,
        pid: &str,
        now_ms: u64,
        log: bool,
    ) -> Result<Option<Bytes>, StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(SIO_SESSIONS).map_err(err)?;
        let Some(v) = t.remove(pid).map_err(err)? else {
            return Ok(None);
        };
        let v = v.value();
        if log {
            self.wal.push(&Op::SioTake { pid });
        }
        Ok(match expiry(v) {
            Some(e) if e > now_ms => Some(Bytes::copy_from_slice(&v[8..])),
            _ => None,
        })
    }
}

fn expiry(v: &[u8]) -> Option<u64> {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}
