//! The history half of [`RedbStore`]: stream metas, appends and reads.

use std::sync::Arc;

use redb::ReadableTable;

use super::codec;
use super::{err, with_table, wtx, RedbStore, StreamMeta, HISTORY, STREAMS};
use crate::store::memory::{Offer, ReadAcc};
use crate::store::{unwritten_epoch, AppendReq, HistoryLimits, HistoryRead, StoreError, StreamPos};

impl RedbStore {
    /// Makes sure `topic`'s meta is cached when the stream was ever written; false (and nothing
    /// stored or cached) when it never was: reads of unknown topics must not grow the store.
    pub(super) fn load_stream(&mut self, topic: &str) -> Result<bool, StoreError> {
        if self.streams.contains_key(topic) {
            return Ok(true);
        }
        let stored = with_table!(self, STREAMS, |t| match t.get(topic).map_err(err)? {
            Some(v) => {
                let (top, epoch) = codec::decode_stream(v.value())?;
                Some((top, Arc::<str>::from(epoch)))
            }
            None => None,
        });
        let Some((top, epoch)) = stored else {
            return Ok(false);
        };
        let first = with_table!(self, HISTORY, |t| {
            let mut r = t.range((topic, 0)..=(topic, u64::MAX)).map_err(err)?;
            match r.next() {
                Some(item) => Some(item.map_err(err)?.0.value().1),
                None => None,
            }
        });
        let first_kept = first.unwrap_or(top + 1);
        let meta = StreamMeta {
            epoch,
            top,
            first_kept,
            stored_from: first_kept,
            trim_queued: false,
            dirty: false,
        };
        self.streams.insert(topic.into(), meta);
        Ok(true)
    }

    /// The position of a stream that was never written.
    pub(super) fn unwritten(&self, topic: &str) -> StreamPos {
        StreamPos {
            epoch: unwritten_epoch(&self.store_id, topic),
            offset: 0,
        }
    }

    pub(super) fn stream_pos(&self, topic: &str) -> Result<StreamPos, StoreError> {
        let m = self
            .streams
            .get(topic)
            .ok_or_else(|| StoreError::Io("redb: stream meta not cached".into()))?;
        Ok(StreamPos {
            epoch: m.epoch.clone(),
            offset: m.top,
        })
    }

    /// Caches `topic`'s meta, creating it for a stream never written (the first append keeps
    /// the epoch its reads reported).
    fn ensure_stream(&mut self, topic: &str) -> Result<(), StoreError> {
        if !self.load_stream(topic)? {
            let meta = StreamMeta {
                epoch: unwritten_epoch(&self.store_id, topic),
                top: 0,
                first_kept: 1,
                stored_from: 1,
                trim_queued: false,
                dirty: false,
            };
            self.streams.insert(topic.into(), meta);
        }
        Ok(())
    }

    pub(super) fn append_inner(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        let req = AppendReq::one(topic, limits, event, data);
        let mut out = Vec::with_capacity(1);
        self.append_many(std::slice::from_ref(&req), now_ms, &mut out)?;
        out.pop()
            .ok_or_else(|| StoreError::Io("redb: append gave no position".into()))
    }

    /// Appends `reqs` in order with the history table opened once, pushing each position to
    /// `out`; stops at the first failure.
    pub(super) fn append_many(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
        out: &mut Vec<StreamPos>,
    ) -> Result<(), StoreError> {
        for r in reqs {
            self.ensure_stream(r.topic)?;
        }
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(HISTORY).map_err(err)?;
        for r in reqs {
            let m = self
                .streams
                .get_mut(r.topic)
                .ok_or_else(|| StoreError::Io("redb: stream meta not cached".into()))?;
            let offset = m.top + 1;
            codec::encode_publication(&mut self.scratch, now_ms, r.event, r.data);
            t.insert((r.topic, offset), self.scratch.as_slice())
                .map_err(err)?;
            m.top = offset;
            if !m.dirty {
                m.dirty = true;
                self.dirty_streams.push(r.topic.into());
            }
            let size = u64::try_from(r.limits.size).unwrap_or(u64::MAX);
            let keep_from = (offset + 1).saturating_sub(size).max(1);
            if m.first_kept < keep_from {
                // The rows go at commit, with the batch's other trims of this topic: reads
                // start at `first_kept` meanwhile.
                m.first_kept = keep_from;
                if !m.trim_queued {
                    m.trim_queued = true;
                    self.trims.push(r.topic.into());
                }
            }
            out.push(StreamPos {
                epoch: m.epoch.clone(),
                offset,
            });
        }
        Ok(())
    }

    pub(super) fn read_inner(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        if !self.load_stream(topic)? {
            let acc = ReadAcc::new(limits, 0, 1, after, limit, now_ms);
            return Ok(acc.finish(self.unwritten(topic)));
        }
        let pos = self.stream_pos(topic)?;
        let first_kept = self
            .streams
            .get(topic)
            .map_or(pos.offset + 1, |m| m.first_kept);
        let mut acc = ReadAcc::new(limits, pos.offset, first_kept, after, limit, now_ms);
        if after < pos.offset {
            // Rows below `first_kept` may still be stored until this batch's commit.
            let from = (after + 1).max(first_kept);
            with_table!(self, HISTORY, |t| {
                let range = t.range((topic, from)..=(topic, pos.offset)).map_err(err)?;
                for item in range.rev() {
                    let (k, v) = item.map_err(err)?;
                    let bytes = v.value();
                    match acc.offer(codec::publication_time(bytes)?) {
                        Offer::Take => acc.push(codec::decode_publication(k.value().1, bytes)?),
                        Offer::Skip => continue,
                        Offer::Stop => break,
                    }
                }
            });
        }
        Ok(acc.finish(pos))
    }

    /// Deletes the rows this batch's appends trimmed: one range per topic (a batch of appends
    /// to one topic trims contiguous offsets), instead of one `remove` per append.
    pub(super) fn flush_trims(&mut self) -> Result<(), StoreError> {
        if self.trims.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.wtx else {
            // No transaction: nothing was appended since the cache was reset.
            self.trims.clear();
            return Ok(());
        };
        let mut t = tx.open_table(HISTORY).map_err(err)?;
        for topic in self.trims.drain(..) {
            let Some(m) = self.streams.get_mut(&topic) else {
                continue;
            };
            m.trim_queued = false;
            let (from, to) = (m.stored_from, m.first_kept);
            if from + 1 == to {
                t.remove((&*topic, from)).map_err(err)?;
            } else if from < to {
                t.retain_in((&*topic, from)..(&*topic, to), |_, _| false)
                    .map_err(err)?;
            }
            m.stored_from = to;
        }
        Ok(())
    }

    /// How many history rows of `topic` are stored, trimmed ones not yet deleted included
    /// (tests: trims delete their rows at commit).
    #[cfg(test)]
    pub(crate) fn stored_rows(&self, topic: &str) -> usize {
        use redb::ReadableTable as _;
        let count = || -> Result<usize, StoreError> {
            Ok(with_table!(self, HISTORY, |t| t
                .range((topic, 0)..=(topic, u64::MAX))
                .map_err(err)?
                .count()))
        };
        count().expect("counting history rows")
    }
}
