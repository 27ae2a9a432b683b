//! The messaging settings: TOML, environment and flags, precedence, and the `[[topics]]` errors.

use std::path::PathBuf;
use std::time::Duration;

use super::{env, err};
use crate::config::settings::*;
use crate::config::{Config, Namespace};

#[test]
fn messaging_keys_parse_from_toml() {
    let mut s = Settings::default();
    s.merge_toml(
        r#"
        node = "eu-1"
        [[topics]]
        pattern = "chat:*"
        history_size = 100
        history_ttl = "10m"
        presence = true
        join_leave = true
        [[topics]]
        pattern = "news"
        [store]
        backend = "memory"
        path = "/var/lib/ringhub"
        max_recover = 50
        [inbox]
        ack_timeout = "3s"
        max_attempts = 2
        max_messages = 10
        ttl = "1h"
        [ui]
        enabled = false
        "#,
        "f.toml",
    )
    .expect("valid file");
    s.validate().expect("valid");
    let chat = Namespace {
        pattern: "chat:*".into(),
        history_size: 100,
        history_ttl: Duration::from_secs(600),
        presence: true,
        join_leave: true,
    };
    let news = Namespace {
        pattern: "news".into(),
        history_size: 0,
        history_ttl: Duration::ZERO,
        presence: false,
        join_leave: false,
    };
    let c = s.engine_config();
    assert_eq!(c.topics, [chat, news]);
    assert_eq!(c.node, "eu-1");
    assert!(!c.ui);
    assert_eq!(c.store.backend, crate::config::StoreBackend::Memory);
    assert_eq!(c.store.path, PathBuf::from("/var/lib/ringhub"));
    assert_eq!(c.store.max_recover, 50);
    let i = c.inbox;
    assert_eq!((i.ack_timeout, i.max_attempts), (Duration::from_secs(3), 2));
    assert_eq!((i.max_messages, i.ttl), (10, Duration::from_secs(3600)));
    // check-config's output reads back as the same settings.
    let mut back = Settings::default();
    back.merge_toml(&s.to_string(), "printed")
        .expect("re-reads");
    assert_eq!(back, s);
}

#[test]
fn binary_defaults_to_redb_and_the_library_to_memory() {
    use crate::config::StoreBackend;
    let s = Settings::default();
    assert_eq!(s.store.backend, StoreBackend::Redb);
    assert_eq!(s.engine_config().store.backend, StoreBackend::Redb);
    assert_eq!(s.store.path, PathBuf::from("./ringhub-data"));
    assert_eq!(Config::default().store.backend, StoreBackend::Memory);
    let c = s.engine_config();
    assert!(c.node.is_empty() && c.ui);
    // The chat demo's namespace, and nothing else, unless [[topics]] are configured.
    assert_eq!(c.topics, default_topics());
    let chat = &c.topics[0];
    assert_eq!(chat.pattern, "chat:*");
    assert_eq!(
        (chat.history_size, chat.presence, chat.join_leave),
        (100, true, true)
    );
    assert!(Config::default().topics.is_empty());
    assert!(s.to_string().contains(
        "topics = [\n  { pattern = \"chat:*\", history_size = 100, history_ttl = \"0s\", presence = true, join_leave = true },\n]"
    ));
    let mut own = Settings::default();
    own.merge_toml("[[topics]]\npattern = \"news\"\nhistory_size = 5", "f.toml")
        .expect("valid");
    assert_eq!(own.topics.len(), 1);
    assert_eq!(own.topics[0].pattern, "news");
    let mut none = Settings::default();
    none.apply_env([("RINGHUB_TOPICS", "")]).expect("valid");
    assert!(none.topics.is_empty());
    assert_eq!(c.inbox, crate::config::InboxConfig::default());
    assert!(s
        .to_string()
        .contains("\n[store]\n# backend = (not set: \"redb\" as cluster.redis is empty)\n"));
}

#[test]
fn cluster_redis_selects_the_redis_store_unless_one_is_given() {
    use crate::config::StoreBackend;
    let mut s = Settings::default();
    s.set("cluster.redis", "redis://127.0.0.1:6379", "--x")
        .unwrap();
    s.validate().expect("valid");
    assert_eq!(s.store_backend(), StoreBackend::Redis);
    assert_eq!(s.engine_config().store.backend, StoreBackend::Redis);
    assert!(s.warnings().iter().all(|w| !w.contains("per node")));
    let printed = s.to_string();
    assert!(
        printed.contains("# backend = (not set: \"redis\" as cluster.redis is set)"),
        "{printed}"
    );
    let mut back = Settings::default();
    back.merge_toml(&printed, "printed").expect("re-reads");
    assert_eq!(back, s);
    // Given explicitly, another backend stays, with a warning.
    for (given, backend) in [
        ("redb", StoreBackend::Redb),
        ("memory", StoreBackend::Memory),
    ] {
        let mut t = s.clone();
        t.set("store.backend", given, "--store").unwrap();
        t.validate().expect("allowed");
        assert_eq!(t.engine_config().store.backend, backend);
        let w = t.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("per node") && w.contains(given)),
            "{w:?}"
        );
    }
    // The environment spells it too.
    let mut e = Settings::default();
    e.apply_env(env(&[("RINGHUB_STORE_BACKEND", "redis")]))
        .expect("parses");
    assert_eq!(e.store.backend, StoreBackend::Redis);
    // redis without the URLs is refused, by the settings and by the engine.
    let msg = err(e.validate());
    assert!(
        msg.contains("store.backend") && msg.contains("cluster.redis"),
        "{msg}"
    );
    let c = Config {
        store: crate::config::StoreConfig {
            backend: StoreBackend::Redis,
            ..Default::default()
        },
        ..Config::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("cluster redis"));
}

#[test]
fn store_and_node_precedence_file_env_flag() {
    let file = "node = \"file\"\n[store]\nbackend = \"memory\"\npath = \"/f\"\n";
    let mut s = Settings::default();
    s.merge_toml(file, "f.toml").expect("valid");
    assert_eq!(
        (s.node.as_str(), s.store.path.to_str()),
        ("file", Some("/f"))
    );
    let vars = [
        ("RINGHUB_NODE", "env"),
        ("RINGHUB_STORE_BACKEND", "redb"),
        ("RINGHUB_STORE_PATH", "/e"),
        ("RINGHUB_STORE_MAX_RECOVER", "7"),
        ("RINGHUB_INBOX_MAX_ATTEMPTS", "9"),
        ("RINGHUB_UI_ENABLED", "false"),
    ];
    s.apply_env(env(&vars)).expect("valid env");
    assert_eq!(
        (s.node.as_str(), s.store.path.to_str()),
        ("env", Some("/e"))
    );
    assert_eq!(s.store.backend, crate::config::StoreBackend::Redb);
    assert_eq!((s.store.max_recover, s.inbox.max_attempts), (7, 9));
    assert!(!s.ui.enabled);
    s.set("node", "flag", "--node").expect("valid");
    s.set("store.backend", "memory", "--store").expect("valid");
    s.set("store.path", "/g", "--store-path").expect("valid");
    assert_eq!(
        (s.node.as_str(), s.store.path.to_str()),
        ("flag", Some("/g"))
    );
    assert_eq!(s.store.backend, crate::config::StoreBackend::Memory);
    let e = err(s.set("store.backend", "disk", "--store"));
    assert_eq!(
        e,
        r#"invalid value for store.backend: "disk" (expected memory, redb or redis) in --store"#
    );
    assert!(err(s.set("node", "a.b", "--node")).starts_with("invalid value for node: \"a.b\""));
    let e = err(s.merge_toml("[store]\nmax_recover = 0", "f.toml"));
    assert!(
        e.starts_with("invalid value for store.max_recover: 0"),
        "{e}"
    );
    let e = err(s.merge_toml("[inbox]\nttl = \"0s\"", "f.toml"));
    assert!(e.starts_with("invalid value for inbox.ttl"), "{e}");
}

#[test]
fn topics_from_env_json_and_their_errors() {
    let json = r#"[{"pattern": "chat:*", "history_size": 5, "presence": true}]"#;
    let mut s = Settings::default();
    s.merge_toml("[[topics]]\npattern = \"old\"", "f.toml")
        .expect("valid");
    s.apply_env(env(&[("RINGHUB_TOPICS", json)]))
        .expect("valid");
    assert_eq!(
        s.topics.len(),
        1,
        "the variable replaces the file's entries"
    );
    assert_eq!((s.topics[0].history_size, s.topics[0].presence), (5, true));
    s.apply_env(env(&[("RINGHUB_TOPICS", "")]))
        .expect("empty = none");
    assert!(s.topics.is_empty());
    let e = err(s.apply_env(env(&[("RINGHUB_TOPICS", "[{")])));
    assert!(e.starts_with("invalid value for topics: \"[{\""), "{e}");
    assert!(e.ends_with("in RINGHUB_TOPICS"), "{e}");
    let toml = |t: &str| Settings::default().merge_toml(t, "f.toml");
    let e = err(toml("[[topics]]\npattern = \"a*b\""));
    assert!(
        e.starts_with(r#"invalid value for topics[0].pattern: "a*b" (expected a topic pattern"#),
        "{e}"
    );
    let e = err(toml(
        "[[topics]]\npattern = \"x*\"\n[[topics]]\npattern = \"x*\"",
    ));
    assert_eq!(
        e,
        "invalid value for topics[1].pattern: \"x*\" (expected a pattern no other [[topics]] \
         entry has: topics[0] has it) in f.toml"
    );
    let e = err(toml("[[topics]]\npattern = \"x\"\nhistroy_size = 3"));
    assert_eq!(
        e,
        "unknown setting topics[0].histroy_size in f.toml (expected one of: pattern, \
         history_size, history_ttl, presence, join_leave, proxy)"
    );
    let e = err(toml("[[topics]]\nhistory_size = 3"));
    assert!(
        e.starts_with("invalid value for topics[0].pattern: (not set)"),
        "{e}"
    );
    let e = err(toml("[[topics]]\npattern = \"x\"\nhistory_ttl = \"soon\""));
    assert!(
        e.starts_with("invalid value for topics[0].history_ttl: \"soon\""),
        "{e}"
    );
    let e = err(toml("[topics]\npattern = \"x\""));
    assert!(e.starts_with("invalid value for topics: "), "{e}");
}

#[test]
fn cluster_keys_from_toml_env_and_their_errors() {
    let mut s = Settings::default();
    assert!(s.cluster.redis.is_empty());
    assert_eq!(s.cluster.prefix, "ringhub");
    s.merge_toml(
        "[cluster]\nredis = [\"redis://10.0.0.1:6379\"]\nprefix = \"eu\"\n",
        "f.toml",
    )
    .expect("valid file");
    assert_eq!(s.cluster.redis, ["redis://10.0.0.1:6379"]);
    // The environment wins over the file; a comma-separated list.
    s.apply_env(env(&[(
        "RINGHUB_CLUSTER_REDIS",
        "redis://a:6379, redis://b:6380/2",
    )]))
    .expect("valid env");
    s.validate().expect("valid");
    let c = s.engine_config();
    assert_eq!(c.cluster.redis, ["redis://a:6379", "redis://b:6380/2"]);
    assert_eq!(c.cluster.prefix, "eu");
    // Printed back (passwords masked) and read again.
    let mut back = Settings::default();
    back.merge_toml(&s.to_string(), "printed")
        .expect("re-reads");
    assert_eq!(back, s);

    let e = err(s.set("cluster.redis", "http://x", "--x"));
    assert!(
        e.contains("cluster.redis") && e.contains("not a redis:// URL"),
        "{e}"
    );
    let e = err(s.set("cluster.redis", "redis://a:1,redis://a:1", "--x"));
    assert!(e.contains("given twice"), "{e}");
    let e = err(s.set("cluster.prefix", "", "--x"));
    assert!(e.contains("cluster.prefix"), "{e}");
    assert_eq!(s.cluster.presence_ttl, std::time::Duration::from_secs(30));
    s.set("cluster.presence_ttl", "2s", "--x").unwrap();
    assert_eq!(s.cluster.presence_ttl, std::time::Duration::from_secs(2));
    let e = err(s.set("cluster.presence_ttl", "500ms", "--x"));
    assert!(e.contains("cluster.presence_ttl"), "{e}");
    assert_eq!(s.cluster.position_check, std::time::Duration::from_secs(3));
    s.set("cluster.position_check", "0s", "--x").unwrap();
    assert!(s.cluster.position_check.is_zero());
    s.set("cluster.position_check", "250ms", "--x").unwrap();
    assert_eq!(
        s.cluster.position_check,
        std::time::Duration::from_millis(250)
    );
    let e = err(s.set("cluster.position_check", "soon", "--x"));
    assert!(e.contains("cluster.position_check"), "{e}");
    // A password in a URL is not printed with the configuration, nor in an error.
    s.set("cluster.redis", "redis://u:hunter2@h:1", "--x")
        .unwrap();
    assert!(!s.to_string().contains("hunter2"));
    let e = err(s.set(
        "cluster.redis",
        "redis://u:hunter2@h:1,redis://u:hunter2@h:1",
        "--x",
    ));
    assert!(e.contains("given twice") && !e.contains("hunter2"), "{e}");
}

/// `[store] sync` and `sync_interval`: the default is a sync per batch; `interval` from TOML,
/// the environment's override, the printed configuration and the refused values.
#[test]
fn store_sync_policy_keys() {
    use crate::config::StoreSync;
    let mut s = Settings::default();
    assert_eq!(s.store.sync, StoreSync::Always);
    assert_eq!(s.engine_config().store.sync_every(), None);
    s.merge_toml(
        "[store]\nsync = \"interval\"\nsync_interval = \"250ms\"",
        "f.toml",
    )
    .expect("valid");
    assert_eq!(
        s.engine_config().store.sync_every(),
        Some(Duration::from_millis(250))
    );
    let text = s.to_string();
    assert!(text.contains("sync = \"interval\""), "{text}");
    assert!(text.contains("sync_interval = \"250ms\""), "{text}");
    s.apply_env(env(&[
        ("RINGHUB_STORE_SYNC", "always"),
        ("RINGHUB_STORE_SYNC_INTERVAL", "60s"),
    ]))
    .expect("valid env");
    assert_eq!(
        (s.store.sync, s.store.sync_interval),
        (StoreSync::Always, Duration::from_secs(60))
    );
    s.engine_config().validate().expect("valid");
    let e = err(s.merge_toml("[store]\nsync = \"never\"", "f.toml"));
    assert!(
        e.starts_with("invalid value for store.sync: \"never\" (expected always or interval)"),
        "{e}"
    );
    for bad in ["0s", "61s", "500us"] {
        let e = err(s.merge_toml(&format!("[store]\nsync_interval = \"{bad}\""), "f.toml"));
        assert!(
            e.starts_with("invalid value for store.sync_interval"),
            "{bad}: {e}"
        );
        assert!(e.contains("from 1ms to 60s"), "{e}");
    }
    let mut c = Config::default();
    c.store.sync_interval = Duration::ZERO;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("sync_interval"));
}
