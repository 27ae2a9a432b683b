//! Hand-rolled value encodings of the redb tables: fixed-width little-endian integers and
//! length-prefixed strings, the last field taking the rest. Decoding never panics: short or
//! malformed bytes are [`StoreError::Corrupt`].

use bytes::Bytes;

use crate::store::{MessageStatus, Publication, StoreError};

/// A cursor over a stored value.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, a value of the `what` table (named in errors).
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt(format!("{} value: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    /// A length-prefixed string.
    pub(super) fn str(&mut self) -> Result<&'a str, StoreError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    /// Length-prefixed bytes.
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Length-prefixed optional bytes (flag byte, then length and bytes when present).
    pub(super) fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            _ => Err(self.corrupt("bad option flag")),
        }
    }

    /// Whether everything was read.
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The rest as a string.
    pub(super) fn rest_str(&mut self) -> Result<&'a str, StoreError> {
        let b = std::mem::take(&mut self.bytes);
        std::str::from_utf8(b).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    /// An optional byte string that takes the rest (flag byte, then the bytes).
    pub(super) fn rest_opt(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        match self.u8()? {
            0 if self.bytes.is_empty() => Ok(None),
            0 => Err(self.corrupt("bytes after an absent value")),
            1 => Ok(Some(std::mem::take(&mut self.bytes))),
            _ => Err(self.corrupt("bad option flag")),
        }
    }

    pub(super) fn status(&mut self) -> Result<MessageStatus, StoreError> {
        Ok(match self.u8()? {
            0 => MessageStatus::Pending,
            1 => MessageStatus::Delivered,
            2 => MessageStatus::Acked,
            3 => MessageStatus::Expired,
            4 => MessageStatus::Dropped,
            _ => return Err(self.corrupt("unknown message status")),
        })
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Length-prefixed optional bytes (the inverse of [`Reader::opt_bytes`]).
pub(super) fn put_opt_bytes(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
    }
}

fn put_opt(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            out.extend_from_slice(d);
        }
    }
}

fn status_byte(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Pending => 0,
        MessageStatus::Delivered => 1,
        MessageStatus::Acked => 2,
        MessageStatus::Expired => 3,
        MessageStatus::Dropped => 4,
    }
}

/// Stream meta: top offset, then the epoch.
pub(super) fn encode_stream(out: &mut Vec<u8>, top: u64, epoch: &str) {
    out.clear();
    out.extend_from_slice(&top.to_le_bytes());
    out.extend_from_slice(epoch.as_bytes());
}

/// Decodes stream meta: (top, epoch).
pub(super) fn decode_stream(b: &[u8]) -> Result<(u64, &str), StoreError> {
    let mut r = Reader::new(b, "stream meta");
    let top = r.u64()?;
    Ok((top, r.rest_str()?))
}

/// History entry: time, event, data.
pub(super) fn encode_publication(
    out: &mut Vec<u8>,
    time_ms: u64,
    event: &str,
    data: Option<&[u8]>,
) {
    out.clear();
    out.extend_from_slice(&time_ms.to_le_bytes());
    put_str(out, event);
    put_opt(out, data);
}

/// The append time of a history entry, without decoding the rest.
pub(super) fn publication_time(b: &[u8]) -> Result<u64, StoreError> {
    Reader::new(b, "history").u64()
}

/// Decodes a history entry stored at `offset`.
pub(super) fn decode_publication(offset: u64, b: &[u8]) -> Result<Publication, StoreError> {
    let mut r = Reader::new(b, "history");
    let time_ms = r.u64()?;
    let event = r.str()?.into();
    let data = r.rest_opt()?.map(Bytes::copy_from_slice);
    Ok(Publication {
        offset,
        event,
        data,
        time_ms,
    })
}

/// An inbox entry's content (its status and attempts live in the status table).
pub(super) struct InboxEntry<'a> {
    pub id: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub topic: Option<&'a str>,
    pub event: &'a str,
    pub data: Option<&'a [u8]>,
}

/// Inbox entry: id, created, expires, topic (flag + string), event, data.
pub(super) fn encode_inbox(out: &mut Vec<u8>, e: &InboxEntry<'_>) {
    out.clear();
    out.extend_from_slice(&e.id.to_le_bytes());
    out.extend_from_slice(&e.created_ms.to_le_bytes());
    out.extend_from_slice(&e.expires_ms.to_le_bytes());
    match e.topic {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_str(out, t);
        }
    }
    put_str(out, e.event);
    put_opt(out, e.data);
}

/// Decodes an inbox entry.
pub(super) fn decode_inbox(b: &[u8]) -> Result<InboxEntry<'_>, StoreError> {
    let mut r = Reader::new(b, "inbox");
    let id = r.u64()?;
    let created_ms = r.u64()?;
    let expires_ms = r.u64()?;
    let topic = match r.u8()? {
        0 => None,
        1 => Some(r.str()?),
        _ => return Err(StoreError::Corrupt("inbox value: bad topic flag".into())),
    };
    let event = r.str()?;
    let data = r.rest_opt()?;
    Ok(InboxEntry {
        id,
        created_ms,
        expires_ms,
        topic,
        event,
        data,
    })
}

/// A status table row.
#[derive(Debug, Clone, Copy)]
pub(super) struct StatusRow<'a> {
    pub user: &'a str,
    pub offset: u64,
    pub status: MessageStatus,
    pub attempts: u32,
    pub created_ms: u64,
    /// When the status became final (0 while live).
    pub final_ms: u64,
}

/// Status row: offset, status, attempts, created, final time, then the user.
pub(super) fn encode_status(out: &mut Vec<u8>, s: &StatusRow<'_>) {
    out.clear();
    out.extend_from_slice(&s.offset.to_le_bytes());
    out.push(status_byte(s.status));
    out.extend_from_slice(&s.attempts.to_le_bytes());
    out.extend_from_slice(&s.created_ms.to_le_bytes());
    out.extend_from_slice(&s.final_ms.to_le_bytes());
    out.extend_from_slice(s.user.as_bytes());
}

/// Decodes a status row.
pub(super) fn decode_status(b: &[u8]) -> Result<StatusRow<'_>, StoreError> {
    let mut r = Reader::new(b, "message status");
    Ok(StatusRow {
        offset: r.u64()?,
        status: r.status()?,
        attempts: r.u32()?,
        created_ms: r.u64()?,
        final_ms: r.u64()?,
        user: r.rest_str()?,
    })
}

/// A live message: one row of the `messages` table (schema 2), keyed by its id — everything the
/// inbox, its status and its expiry need, so a put writes this one row.
#[derive(Debug, Clone, Copy)]
pub(super) struct MessageRow<'a> {
    pub user: &'a str,
    pub offset: u64,
    /// Pending or delivered (a final status moves the message to the `status` table).
    pub status: MessageStatus,
    pub attempts: u32,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub topic: Option<&'a str>,
    pub event: &'a str,
    pub data: Option<&'a [u8]>,
}

/// Message row: offset, status, attempts, created, expires, user, topic (flag + string), event,
/// data.
pub(super) fn encode_message(out: &mut Vec<u8>, m: &MessageRow<'_>) {
    out.clear();
    out.extend_from_slice(&m.offset.to_le_bytes());
    out.push(status_byte(m.status));
    out.extend_from_slice(&m.attempts.to_le_bytes());
    out.extend_from_slice(&m.created_ms.to_le_bytes());
    out.extend_from_slice(&m.expires_ms.to_le_bytes());
    put_str(out, m.user);
    match m.topic {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_str(out, t);
        }
    }
    put_str(out, m.event);
    put_opt(out, m.data);
}

/// Decodes a message row.
pub(super) fn decode_message(b: &[u8]) -> Result<MessageRow<'_>, StoreError> {
    let mut r = Reader::new(b, "message");
    let offset = r.u64()?;
    let status = r.status()?;
    let attempts = r.u32()?;
    let created_ms = r.u64()?;
    let expires_ms = r.u64()?;
    let user = r.str()?;
    let topic = match r.u8()? {
        0 => None,
        1 => Some(r.str()?),
        _ => return Err(r.corrupt("bad topic flag")),
    };
    let event = r.str()?;
    let data = r.rest_opt()?;
    Ok(MessageRow {
        user,
        offset,
        status,
        attempts,
        created_ms,
        expires_ms,
        topic,
        event,
        data,
    })
}

/// Fuzzing: decodes `b` as every stored value kind (nothing may panic), and checks that what
/// decodes re-encodes to the same bytes.
pub(crate) fn fuzz_decode_all(b: &[u8]) {
    let mut out = Vec::new();
    if let Ok((top, epoch)) = decode_stream(b) {
        encode_stream(&mut out, top, epoch);
        assert_eq!(out, b, "stream meta round trip");
    }
    let _ = publication_time(b);
    if let Ok(p) = decode_publication(7, b) {
        encode_publication(&mut out, p.time_ms, &p.event, p.data.as_deref());
        assert_eq!(out, b, "history entry round trip");
    }
    if let Ok(e) = decode_inbox(b) {
        encode_inbox(&mut out, &e);
        assert_eq!(out, b, "inbox entry round trip");
    }
    if let Ok(r) = decode_status(b) {
        encode_status(&mut out, &r);
        assert_eq!(out, b, "status row round trip");
    }
    if let Ok(m) = decode_message(b) {
        encode_message(&mut out, &m);
        assert_eq!(out, b, "message row round trip");
    }
    let _ = Reader::new(b, "meta next_id").u64();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let mut buf = Vec::new();
        encode_publication(&mut buf, 7, "ev", Some(b"{}"));
        let p = decode_publication(3, &buf).unwrap();
        assert_eq!((p.offset, p.time_ms, &*p.event), (3, 7, "ev"));
        assert_eq!(p.data.as_deref(), Some(&b"{}"[..]));
        assert!(matches!(
            decode_publication(3, &buf[..10]),
            Err(StoreError::Corrupt(_))
        ));
        let e = InboxEntry {
            id: 1,
            created_ms: 2,
            expires_ms: 3,
            topic: Some("t"),
            event: "e",
            data: None,
        };
        encode_inbox(&mut buf, &e);
        let d = decode_inbox(&buf).unwrap();
        assert_eq!((d.id, d.topic, d.event, d.data), (1, Some("t"), "e", None));
        assert!(decode_inbox(&buf[..20]).is_err());
        let s = StatusRow {
            user: "u",
            offset: 4,
            status: MessageStatus::Delivered,
            attempts: 2,
            created_ms: 5,
            final_ms: 0,
        };
        encode_status(&mut buf, &s);
        let d = decode_status(&buf).unwrap();
        assert_eq!(
            (d.user, d.offset, d.status, d.attempts),
            ("u", 4, MessageStatus::Delivered, 2)
        );
        buf[8] = 9;
        assert!(decode_status(&buf).is_err());
        let m = MessageRow {
            user: "u",
            offset: 4,
            status: MessageStatus::Delivered,
            attempts: 2,
            created_ms: 5,
            expires_ms: 6,
            topic: None,
            event: "e",
            data: Some(b"[1]"),
        };
        encode_message(&mut buf, &m);
        let d = decode_message(&buf).unwrap();
        assert_eq!(
            (
                d.user,
                d.offset,
                d.status,
                d.attempts,
                d.expires_ms,
                d.topic,
                d.event,
                d.data
            ),
            (
                "u",
                4,
                MessageStatus::Delivered,
                2,
                6,
                None,
                "e",
                Some(&b"[1]"[..])
            )
        );
        assert!(decode_message(&buf[..buf.len() - 5]).is_err());
        buf[8] = 9;
        assert!(decode_message(&buf).is_err());
    }
}
