//! Several Redis instances share the work: topics and users spread over them by name, and a
//! message id names its user's instance.

use std::collections::BTreeSet;

use super::*;

#[test]
fn two_instances_spread_topics_and_ids() {
    let (Some(a), Some(b)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let urls = [a.url(), b.url()];
    let mut s = RedisStore::connect(&urls, PREFIX, "n1").unwrap();
    let mut conns = [a.conn(), b.conn()];
    let mut on = [0usize; 2];
    for i in 0..40 {
        let topic = format!("room:{i}");
        s.append(&topic, hl(10, 0), "e", None, T0).unwrap();
        let k = crate::proto::wire::instance_for(&topic, 2);
        let key = format!("{PREFIX}:h:{topic}");
        for (j, c) in conns.iter_mut().enumerate() {
            let n: u64 = ::redis::cmd("XLEN").arg(&key).query(c).unwrap();
            assert_eq!(n, u64::from(j == k), "{topic} on instance {j}");
        }
        on[k] += 1;
    }
    assert!(on[0] > 5 && on[1] > 5, "topics spread: {on:?}");
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let user = format!("u{i}");
        let (m, _) = s.inbox_put(&user, msg("e", b"1"), il(10, 60), T0).unwrap();
        assert_eq!(m.offset, 1);
        let k = crate::proto::wire::instance_for(&format!("user:{user}"), 2);
        assert_eq!(m.id % 2, k as u64, "the id names the user's instance");
        assert!(ids.insert(m.id), "id {} repeated", m.id);
        let st = s.status(m.id).unwrap().unwrap();
        assert_eq!((&*st.user, st.offset), (user.as_str(), 1));
    }
    assert!(ids.iter().any(|id| id % 2 == 0) && ids.iter().any(|id| id % 2 == 1));
    // Inbox epochs of both instances, the same for another node.
    let other = RedisStore::connect(&urls, PREFIX, "n2").unwrap();
    assert_eq!(other.inbox_epoch(), s.inbox_epoch());
    assert_eq!(s.inbox_epoch().split('.').count(), 2);
}
