//! A run of durable sends stored with one `inbox_put_many` call (redb opens `messages` once for
//! it) has the same results and leaves the same store as the same sends put one by one: ids,
//! offsets, messages dropped from a full inbox (mid-run), a user whose messages all left (its
//! next offset read back from `users`), and after a reopen that replays the log.

use proptest::prelude::*;

use super::*;

const USERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Debug, Clone)]
enum Step {
    /// Sends to these users, in order, as one run.
    Run(Vec<usize>),
    /// Acknowledges the oldest live message of a user.
    AckOldest(usize),
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(0..USERS.len(), 1..8).prop_map(Step::Run),
        2 => (0..USERS.len()).prop_map(Step::AckOldest),
        1 => Just(Step::Commit),
    ]
}

/// What a put answered: id, offset, event, and the (id, offset, user) of each message dropped;
/// ids as counted from `base` (each store starts its ids at a random point).
type Answer = (u64, u64, String, Vec<(u64, u64, String)>);

fn answer(
    r: Result<(InboxMessage, Vec<StatusChange>), StoreError>,
    base: &mut Option<u64>,
) -> Answer {
    let (m, dropped) = r.expect("a put on a healthy store");
    let base = *base.get_or_insert(m.id);
    let dropped = dropped
        .into_iter()
        .map(|c| (c.id - base, c.offset, c.user.to_string()))
        .collect();
    (m.id - base, m.offset, m.event.to_string(), dropped)
}

/// Every user's inbox (offset, event) and the status of the `ids` ids handed out from `base`.
fn state(s: &mut RedbStore, base: Option<u64>, ids: u64) -> String {
    let mut out = String::new();
    for u in USERS {
        let list: Vec<(u64, String)> = s
            .inbox_list(u, T0 + 5)
            .unwrap()
            .into_iter()
            .map(|m| (m.offset, m.event.to_string()))
            .collect();
        out += &format!("{u}: {list:?}\n");
    }
    for k in 0..ids {
        let id = base.unwrap_or(0) + k;
        out += &format!("{k}: {:?}\n", s.status(id).unwrap().map(|i| i.status));
    }
    out
}

/// Applies `steps` to `many` (runs in one call) and `single` (one put at a time), comparing
/// every answer; returns how many puts there were (the first ids are in `bases`).
fn apply(
    many: &mut RedbStore,
    single: &mut RedbStore,
    steps: &[Step],
    bases: &mut (Option<u64>, Option<u64>),
) -> Result<u64, TestCaseError> {
    let limits = il(3, 3600);
    let mut puts = 0u64;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Run(users) => {
                let events: Vec<String> = (0..users.len()).map(|k| format!("e{i}.{k}")).collect();
                let run: Vec<(&str, NewMessage<'_>)> = users
                    .iter()
                    .zip(&events)
                    .map(|(u, e)| (USERS[*u], msg(e, b"{}")))
                    .collect();
                let mut got = Vec::new();
                many.inbox_put_many(&run, limits, T0, &mut got);
                prop_assert_eq!(got.len(), run.len());
                for ((user, m), r) in run.into_iter().zip(got) {
                    let want = answer(single.inbox_put(user, m, limits, T0), &mut bases.1);
                    prop_assert_eq!(answer(r, &mut bases.0), want);
                    puts += 1;
                }
            }
            Step::AckOldest(u) => {
                let oldest = single
                    .inbox_list(USERS[*u], T0)
                    .unwrap()
                    .first()
                    .map(|m| m.offset);
                if let Some(offset) = oldest {
                    let a = many.inbox_ack(USERS[*u], offset).unwrap();
                    let b = single.inbox_ack(USERS[*u], offset).unwrap();
                    let a = a.map(|c| c.id - bases.0.unwrap_or(0));
                    let b = b.map(|c| c.id - bases.1.unwrap_or(0));
                    prop_assert_eq!(a, b);
                }
            }
            Step::Commit => {
                many.commit().unwrap();
                single.commit().unwrap();
            }
        }
    }
    many.commit().unwrap();
    single.commit().unwrap();
    Ok(puts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_run_of_puts_matches_puts_one_by_one(
        steps in proptest::collection::vec(step(), 1..16),
    ) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut bases = (None, None);
        let ids = {
            let mut many = RedbStore::open(a.path()).unwrap();
            let mut single = RedbStore::open(b.path()).unwrap();
            // Nothing checkpointed: the reopen below replays the runs from the log.
            many.manual_checkpoints();
            single.manual_checkpoints();
            let ids = apply(&mut many, &mut single, &steps, &mut bases)?;
            prop_assert_eq!(state(&mut many, bases.0, ids), state(&mut single, bases.1, ids));
            ids
        };
        let mut many = RedbStore::open(a.path()).unwrap();
        let mut single = RedbStore::open(b.path()).unwrap();
        prop_assert_eq!(state(&mut many, bases.0, ids), state(&mut single, bases.1, ids));
    }
}

/// The default (one `inbox_put` per send) gives the memory store the same answers as redb's run.
#[test]
fn the_default_run_on_the_memory_store_answers_like_redb() {
    let dir = tempfile::tempdir().unwrap();
    let mut redb = RedbStore::open(dir.path()).unwrap();
    let mut mem = MemoryStore::new();
    let run: Vec<(&str, NewMessage<'_>)> = ["u0", "u1", "u0", "u0", "u0", "u1"]
        .iter()
        .map(|u| (*u, msg("e", b"1")))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    redb.inbox_put_many(&run, il(3, 60), T0, &mut a);
    mem.inbox_put_many(&run, il(3, 60), T0, &mut b);
    let offsets = |v: Vec<Result<(InboxMessage, Vec<StatusChange>), StoreError>>| {
        v.into_iter()
            .map(|r| {
                let (m, d) = r.unwrap();
                (m.offset, d.iter().map(|c| c.offset).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
    };
    let want = vec![
        (1, vec![]),
        (1, vec![]),
        (2, vec![]),
        (3, vec![]),
        (4, vec![1]),
        (2, vec![]),
    ];
    assert_eq!(offsets(a), want);
    assert_eq!(offsets(b), want);
}
