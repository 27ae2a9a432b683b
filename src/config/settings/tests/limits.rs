//! The limits: on by default, `max_connections` from the fd limit, shown by `--check-config`,
//! and the warnings about example secrets and disabled limits.

use std::time::Duration;

use crate::config::settings::*;

#[test]
fn limits_are_on_by_default() {
    let l = Settings::default().limits;
    assert!(l.max_connections > 0, "a connection cap");
    assert_eq!(l.max_connections, default_max_connections());
    assert_eq!(l.max_connections_per_ip, DEFAULT_MAX_CONNECTIONS_PER_IP);
    assert!(l.max_connections_per_ip > 0);
    assert_eq!(
        (l.messages_per_second, l.burst),
        (DEFAULT_MESSAGES_PER_SECOND, DEFAULT_BURST)
    );
    assert!(l.messages_per_second > 0 && l.burst >= l.messages_per_second);
    assert_eq!(l.max_subscriptions, 1000);
    assert_eq!(l.handshake_timeout, Duration::from_secs(10));
    let s = Settings::default();
    let g = crate::policy::guard::Guard::from_settings(&s).expect("guard");
    assert!(g.conn_limits.is_some(), "caps are enforced");
    assert_eq!(g.rate, Some((DEFAULT_MESSAGES_PER_SECOND, DEFAULT_BURST)));
}

#[test]
fn max_connections_derives_from_the_fd_limit() {
    assert_eq!(max_connections_for_fd_limit(1024), 1024 - 64);
    assert_eq!(max_connections_for_fd_limit(20_000), 19_000);
    assert_eq!(
        max_connections_for_fd_limit(1 << 20),
        (1 << 20) - (1 << 20) / 20
    );
    assert_eq!(max_connections_for_fd_limit(100), 36);
    assert_eq!(
        max_connections_for_fd_limit(64),
        32,
        "tiny limits keep half"
    );
    assert_eq!(max_connections_for_fd_limit(1), 1);
    assert_eq!(max_connections_for_fd_limit(0), 1);
    assert_eq!(max_connections_for_fd_limit(u64::MAX), u32::MAX as usize);
    let soft = fd_soft_limit().expect("getrlimit works on Linux");
    assert!((default_max_connections() as u64) < soft.max(2));
}

#[test]
fn check_config_output_shows_the_effective_limits() {
    let s = Settings::default();
    let text = s.to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("max_connections ="))
        .expect("listed");
    assert!(
        line.starts_with(&format!("max_connections = {}", default_max_connections())),
        "{line}"
    );
    assert!(line.contains("open-file limit"), "{line}");
    assert!(text.contains(&format!(
        "messages_per_second = {DEFAULT_MESSAGES_PER_SECOND}\n"
    )));
    assert!(text.contains(&format!(
        "max_connections_per_ip = {DEFAULT_MAX_CONNECTIONS_PER_IP}\n"
    )));
    // The output is still a valid settings file with the same values.
    let mut back = Settings::default();
    back.merge_toml(&text, "printed").expect("re-reads");
    assert_eq!(back, s);
}

#[test]
fn example_secrets_and_disabled_limits_are_warned_about() {
    assert!(
        Settings::default().warnings().is_empty(),
        "{:?}",
        Settings::default().warnings()
    );
    let mut s = Settings::default();
    s.set(
        "auth.jwt_secret",
        "change-me-to-a-long-random-string",
        "test",
    )
    .unwrap();
    s.set("api.key", "change-me", "test").unwrap();
    let w = s.warnings().join("\n");
    assert!(w.contains("auth.jwt_secret is the placeholder"), "{w}");
    assert!(w.contains("api.key is the placeholder"), "{w}");
    assert!(
        !w.contains("change-me-to"),
        "the secret itself is not printed: {w}"
    );
    let mut s = Settings::default();
    s.set(
        "auth.jwt_secret",
        "a-real-secret-of-more-than-32-bytes!!",
        "test",
    )
    .unwrap();
    s.set(
        "security.allowed_origins",
        "https://app.example.com",
        "test",
    )
    .unwrap();
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let mut s = Settings::default();
    s.set("limits.messages_per_second", "0", "test").unwrap();
    s.set("limits.max_connections", "0", "test").unwrap();
    let w = s.warnings().join("\n");
    assert!(
        w.contains("no message rate limit") && w.contains("no connection cap"),
        "{w}"
    );
}
