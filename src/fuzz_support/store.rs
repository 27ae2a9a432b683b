//! Stored data read back: the redb store's encodings and the Redis store's script answers.

/// Decodes arbitrary bytes as every value the stores read back: the redb store's hand-rolled
/// encodings (stream metas, history entries, inbox entries, status rows — each that decodes must
/// re-encode to the same bytes) and, parsed as a RESP reply, every Redis script answer the Redis
/// store decodes. Stored data can be damaged; decoding it must fail cleanly, never panic.
pub fn store_codecs(data: &[u8]) {
    crate::store::redb::fuzz_decode_all(data);
    if let Ok(v) = ::redis::parse_redis_value(data) {
        crate::store::redis::fuzz_decode(&v);
    }
}
