//! Any sequence of appends and reads on the memory store (and on the Redis store) matches a simple model: every
//! publication ever appended, the count kept by the last trim, and `complete` read as "the answer
//! holds every publication after `after`".

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        topic: usize,
        size: usize,
        data: Option<u8>,
    },
    Read {
        topic: usize,
        after: u64,
        limit: usize,
        ttl_s: u64,
    },
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..6usize, proptest::option::of(any::<u8>()))
            .prop_map(|(topic, size, data)| Op::Append { topic, size, data }),
        3 => (0..3usize, 0..14u64, 0..6usize, prop_oneof![Just(0u64), 1..4u64])
            .prop_map(|(topic, after, limit, ttl_s)| Op::Read { topic, after, limit, ttl_s }),
        1 => Just(Op::Commit),
    ]
}

#[derive(Default)]
struct Topic {
    /// Every publication ever appended, in order.
    all: Vec<Publication>,
    /// How many of the latest the store keeps.
    kept: usize,
    epoch: Option<Arc<str>>,
}

const TOPICS: [&str; 3] = ["a", "b", "c"];

/// Random operations, each after a random step of the clock.
fn ops() -> impl Strategy<Value = Vec<(Op, u64)>> {
    proptest::collection::vec((op(), 0..1500u64), 0..60)
}

/// Applies `ops` to `store` and to the model, comparing every answer.
fn check(store: &mut dyn Store, ops: Vec<(Op, u64)>) -> Result<(), TestCaseError> {
    let mut model: Vec<Topic> = (0..3).map(|_| Topic::default()).collect();
    let mut now = T0;
    for (op, step) in ops {
        now += step;
        match op {
            Op::Append { topic, size, data } => {
                let d = data.map(|b| [b'"', b, b'"']);
                let pos = store
                    .append(
                        TOPICS[topic],
                        hl(size, 0),
                        "ev",
                        d.as_ref().map(|d| &d[..]),
                        now,
                    )
                    .unwrap();
                let m = &mut model[topic];
                let offset = m.all.len() as u64 + 1;
                m.all.push(Publication {
                    offset,
                    event: "ev".into(),
                    data: d.map(|d| Bytes::copy_from_slice(&d)),
                    time_ms: now,
                });
                m.kept = (m.kept + 1).min(size);
                prop_assert_eq!(pos.offset, offset);
                let epoch = m.epoch.get_or_insert_with(|| pos.epoch.clone());
                prop_assert_eq!(&pos.epoch, epoch);
            }
            Op::Read {
                topic,
                after,
                limit,
                ttl_s,
            } => {
                let r = store
                    .read(TOPICS[topic], hl(5, ttl_s), after, limit, now)
                    .unwrap();
                let m = &mut model[topic];
                let epoch = m.epoch.get_or_insert_with(|| r.pos.epoch.clone());
                prop_assert_eq!(&r.pos.epoch, epoch);
                let top = m.all.len() as u64;
                prop_assert_eq!(r.pos.offset, top);
                let after_it: Vec<&Publication> =
                    m.all.iter().filter(|p| p.offset > after).collect();
                let served: Vec<&Publication> = m.all[m.all.len() - m.kept..]
                    .iter()
                    .filter(|p| p.offset > after)
                    .filter(|p| ttl_s == 0 || now - p.time_ms <= ttl_s * 1000)
                    .collect();
                let want: Vec<Publication> = served[served.len().saturating_sub(limit)..]
                    .iter()
                    .map(|p| (*p).clone())
                    .collect();
                prop_assert_eq!(&r.publications, &want);
                prop_assert_eq!(r.complete, after <= top && want.len() == after_it.len());
            }
            Op::Commit => store.commit().unwrap(),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn memory_history_matches_model(ops in ops()) {
        check(&mut MemoryStore::new(), ops)?;
    }
}

/// The same model against the Redis store (fewer cases: each is many round trips), every case
/// under its own key prefix on one `redis-server`.
#[test]
fn redis_history_matches_model() {
    let Some(r) = super::redis_server::RedisServer::start() else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0u32);
    runner
        .run(&ops(), |ops| {
            case.set(case.get() + 1);
            let prefix = format!("model{}", case.get());
            let mut s = RedisStore::connect(&[r.url()], &prefix, "n1").unwrap();
            check(&mut s, ops)
        })
        .unwrap();
}
