//! The cluster thread's input: RESP push frames from a Redis subscriber connection, and the
//! receive path they go through (wire decoding, de-duplication, the per-shard hand-off).

/// Bytes as a Redis subscriber connection of the cluster thread receives them: the RESP push
/// parser over the whole input must find the same frames as over the input cut into reads of
/// the size the first byte picks (a frame split across reads waits for the rest), never take
/// more than it was given, and never panic; every publication found goes through the cluster
/// receive path (wire decoding, de-duplication, the per-shard hand-off) of a 2-shard node.
pub fn cluster_recv(data: &[u8]) {
    use crate::proto::resp;
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let whole = frames_of(data, data.len().max(1));
    let cut = frames_of(data, usize::from(first % 64) + 1);
    assert_eq!(whole, cut, "frames depend on how the bytes were read");

    let hub = crate::shard::shared::HubShared::for_bench(2);
    let mut interest = crate::proto::registry::Interest::new();
    for (p, shard) in [("a", 0), ("b*", 1), ("c", 1)] {
        if let Ok(p) = crate::proto::pattern::Pattern::parse(p) {
            interest.add(p, shard);
        }
    }
    let stats = crate::cluster::ClusterStats::default();
    let mut fanin = crate::cluster::redis::recv::Fanin::new("me".into(), 2);
    let mut partial: Vec<u8> = Vec::new();
    for chunk in data.chunks(usize::from(first % 64) + 1) {
        partial.extend_from_slice(chunk);
        match fanin.feed(&partial, &interest) {
            Ok(n) => {
                assert!(n <= partial.len(), "took more than it was given");
                partial.drain(..n);
            }
            Err(_) => break,
        }
        fanin.flush(&hub.inboxes, &stats);
    }
    fanin.flush(&hub.inboxes, &stats);
    for inbox in hub.inboxes.iter() {
        while inbox.pop().is_some() {}
    }

    /// Debug renderings of the frames parsed from `data` read `step` bytes at a time, then the
    /// error if one ended the stream.
    fn frames_of(data: &[u8], step: usize) -> Vec<String> {
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for chunk in data.chunks(step) {
            buf.extend_from_slice(chunk);
            loop {
                match resp::parse(&buf) {
                    Ok(Some((p, n))) => {
                        assert!(n > 0 && n <= buf.len(), "frame length {n} of {}", buf.len());
                        out.push(format!("{p:?}"));
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.push(format!("error {e}"));
                        return out;
                    }
                }
            }
        }
        out
    }
}

/// The payload of the first `message` frame of `data` and the frame's length, as the cluster
/// thread's RESP parser reads it (for tests that check it against a real `redis-server`).
pub fn resp_frame(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    match crate::proto::resp::parse(data) {
        Ok(Some((crate::proto::resp::Push::Message { payload, .. }, n))) => {
            Some((payload.to_vec(), n))
        }
        _ => None,
    }
}
