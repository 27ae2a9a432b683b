use std::time::Duration;

use super::*;

/// Limits, their defaults and warnings.
mod limits;
/// `node`, `[[topics]]`, `[store]`, `[inbox]`, `[ui]`.
mod messaging;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(r: Result<(), SettingsError>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn defaults_fill_the_engine_config_and_validate() {
    let s = Settings::default();
    s.validate().expect("defaults are valid");
    let c = s.engine_config();
    let d = Config::default();
    assert_eq!(
        (c.listen, c.max_subscriptions, c.handshake_timeout),
        (d.listen, 1000, Duration::from_secs(10))
    );
    assert_eq!(s.limits.max_handshake_bytes, 8192);
    assert_eq!(s.permissions.subscribe, ["*"]);
    assert!(s.auth.anonymous_allowed());
}

#[test]
fn file_then_env_then_flags() {
    let mut s = Settings::default();
    s.merge_toml(
        r#"
        listen = "127.0.0.1:9000"
        shards = 2
        ping_interval = "5s"
        [limits]
        burst = 7
        max_subscriptions = 10
        [security]
        allowed_origins = ["https://app.example.com", "*.example.com"]
        deny_ips = ["10.0.0.0/8", "192.168.1.7"]
        "#,
        "test.toml",
    )
    .expect("valid file");
    s.apply_env(env(&[
        ("RINGHUB_SHARDS", "3"),
        ("RINGHUB_LIMITS_BURST", "9"),
        ("RINGHUB_PERMISSIONS_PUBLISH", "chat:*, news"),
        ("RINGHUB_OK", "1"),
        ("PATH", "/bin"),
    ]))
    .expect("valid env");
    s.set("shards", "4", "--shards").expect("valid flag");
    s.validate().expect("valid");
    assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(s.shards, 4);
    assert_eq!(s.limits.burst, 9);
    assert_eq!(s.limits.max_subscriptions, 10);
    assert_eq!(s.engine_config().max_subscriptions, 10);
    assert_eq!(s.ping_interval, Duration::from_secs(5));
    assert_eq!(s.permissions.publish, ["chat:*", "news"]);
    assert_eq!(s.security.deny_ips[1].to_string(), "192.168.1.7/32");
    let loaded = Settings::load(None, env(&[("RINGHUB_LISTEN", "[::1]:1")])).expect("load");
    assert_eq!(loaded.listen.to_string(), "[::1]:1");
}

#[test]
fn errors_name_key_value_and_what_is_allowed() {
    let mut s = Settings::default();
    let e = err(s.apply_env(env(&[("RINGHUB_LIMITS_BURST", "abc")])));
    assert_eq!(
        e,
        r#"invalid value for limits.burst: "abc" (expected a positive integer) in RINGHUB_LIMITS_BURST"#
    );
    let e = err(s.merge_toml("[limits]\nburst = 0", "f.toml"));
    assert_eq!(
        e,
        "invalid value for limits.burst: 0 (expected a positive integer) in f.toml"
    );
    let e = err(s.set("io", "kqueue", "--io"));
    assert_eq!(
        e,
        r#"invalid value for io: "kqueue" (expected auto, uring or epoll) in --io"#
    );
    let e = err(s.merge_toml("shards = \"2\"", "f.toml"));
    assert!(
        e.starts_with(r#"invalid value for shards: "2" (expected an integer from 0"#),
        "{e}"
    );
    let e = err(s.merge_toml("[permissions]\nsubscribe = [\"a*b\"]", "f.toml"));
    assert!(
        e.contains("permissions.subscribe") && e.contains("a*b"),
        "{e}"
    );
    let e = err(s.merge_toml("[security]\nallow_ips = [\"10.0.0.0/33\"]", "f.toml"));
    assert!(
        e.contains("security.allow_ips") && e.contains("10.0.0.0/33"),
        "{e}"
    );
    let e = err(s.merge_toml("[security]\nallowed_origins = [\"*\"]", "f.toml"));
    assert!(e.contains("security.allowed_origins"), "{e}");
    let e = err(s.merge_toml("[limits]\nbrust = 3", "f.toml"));
    assert!(
        e.starts_with(
            "unknown setting limits.brust in f.toml (expected one of: limits.max_connections"
        ),
        "{e}"
    );
    let e = err(s.merge_toml("port = 3", "f.toml"));
    assert!(e.starts_with("unknown setting port in f.toml"), "{e}");
    let e = err(s.merge_toml("shards = 2\nlisten = \n", "f.toml"));
    assert!(e.starts_with("f.toml:2:"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = err(s.set("ping_interval", "soon", "--ping-interval"));
    assert!(e.contains("a positive duration like 500ms or 30s"), "{e}");
}

#[test]
fn secrets_are_masked_everywhere() {
    let mut s = Settings::default();
    s.apply_env(env(&[
        ("RINGHUB_AUTH_JWT_SECRET", "hunter2-hunter2"),
        ("RINGHUB_API_KEY", "k-123"),
    ]))
    .expect("valid");
    assert_eq!(
        s.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("hunter2-hunter2")
    );
    assert_eq!(s.api.key.as_ref().map(Secret::expose), Some("k-123"));
    let shown = format!("{s} {s:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("k-123"),
        "{shown}"
    );
    assert!(shown.contains("jwt_secret = \"***\""));
    let e = err(s.apply_env(env(&[("RINGHUB_AUTH_JWT_SECRET", "")])));
    assert!(e.contains("\"***\""), "{e}");
    let e = err(s.merge_toml("[api]\nkey = 123456", "f.toml"));
    assert!(!e.contains("123456"), "{e}");
}

#[test]
fn display_round_trips() {
    let mut s = Settings::default();
    s.merge_toml(
        "echo_path = \"/echo\"\nlog_format = \"json\"\n[limits]\nmessages_per_second = 20\n[auth]\nissuer = \"me\"",
        "f.toml",
    )
    .expect("valid");
    let text = s.to_string();
    let mut back = Settings::default();
    back.merge_toml(&text, "printed")
        .expect("printed config parses");
    assert_eq!(back, s);
    // Every key is printed.
    for k in KEYS {
        let short = k.name.rsplit('.').next().unwrap_or(k.name);
        assert!(
            text.contains(&format!("{short} = ")),
            "{short} missing from\n{text}"
        );
    }
}

#[test]
fn cross_key_validation() {
    let mut s = Settings::default();
    s.set("auth.anonymous", "false", "--x").expect("parses");
    assert!(err(s.validate()).starts_with("invalid value for auth.anonymous: false"));
    s.set("auth.jwt_secret", "0123456789abcdef0123456789abcdef", "--x")
        .expect("parses");
    s.validate().expect("valid with a key");
    assert!(!s.auth.anonymous_allowed());
    s.set("tls.cert_file", "/nonexistent/cert.pem", "--x")
        .expect("parses");
    assert!(err(s.validate()).starts_with("invalid value for tls.key_file: (not set)"));
    s.set("tls.key_file", "/nonexistent/key.pem", "--x")
        .expect("parses");
    let e = err(s.validate());
    assert!(
        e.starts_with("invalid value for tls.cert_file: \"/nonexistent/cert.pem\""),
        "{e}"
    );
    let mut s = Settings::default();
    s.set("idle_timeout", "10s", "--idle-timeout")
        .expect("parses");
    assert!(err(s.validate()).starts_with("invalid value for idle_timeout"));
    let mut s = Settings::default();
    s.set("echo_path", "/ws", "--echo-path").expect("parses");
    assert!(err(s.validate()).starts_with("invalid value for echo_path"));
    s.set("echo_path", "", "--echo-path").expect("empty unsets");
    assert_eq!(s.echo_path, None);
}

#[test]
fn a_misspelled_section_lists_the_sections() {
    let mut s = Settings::default();
    let e = err(s.merge_toml("[autth]\njwt_secret = \"x\"", "f.toml"));
    assert!(e.starts_with("unknown section [autth] in f.toml"), "{e}");
    for section in SECTIONS.iter().filter(|s| !s.is_empty()) {
        assert!(
            e.contains(&format!("[{section}]")),
            "{section} missing: {e}"
        );
    }
    assert!(
        e.contains("[[topics]]") && e.ends_with("did you mean [auth]?)"),
        "{e}"
    );
    let e = err(s.merge_toml("[[topic]]\npattern = \"a*\"", "f.toml"));
    assert!(e.ends_with("did you mean topics?)"), "{e}");
    // A key in a known section: its keys, and the nearest.
    let e = err(s.merge_toml("[limits]\nbrust = 3", "f.toml"));
    assert!(e.ends_with("did you mean limits.burst?)"), "{e}");
    let e = err(s.merge_toml("port = 3", "f.toml"));
    assert!(e.contains("the port is part of listen"), "{e}");
}

#[test]
fn misspelled_environment_variables_are_warned_about() {
    let s = Settings::load(
        None,
        env(&[
            ("RINGHUB_API_KYE", "k"),
            ("RINGHUB_LIMITS_BRUST", "3"),
            ("RINGHUB_WHATEVER_ELSE", "1"),
            ("RINGHUB_CONFIG", "x.toml"),
            ("RINGHUB_BIN", "/x"),
            ("RINGHUB_API_KEY", "k2"),
            ("PATH", "/bin"),
        ]),
    )
    .expect("loads");
    let w = s.warnings();
    let has = |needle: &str| w.iter().any(|w| w.contains(needle));
    assert!(
        has("RINGHUB_API_KYE is not a setting and is ignored (did you mean RINGHUB_API_KEY?)"),
        "{w:?}"
    );
    assert!(has("did you mean RINGHUB_LIMITS_BURST?"), "{w:?}");
    assert!(
        has("RINGHUB_WHATEVER_ELSE is not a setting and is ignored (ringhub.example.toml"),
        "{w:?}"
    );
    assert!(
        !has("RINGHUB_CONFIG") && !has("RINGHUB_BIN") && !has("PATH"),
        "{w:?}"
    );
    assert_eq!(
        w.iter().filter(|w| w.contains("not a setting")).count(),
        3,
        "{w:?}"
    );
}

#[test]
fn warnings_for_open_origins_and_short_secrets() {
    let mut s = Settings::default();
    assert!(s.warnings().is_empty());
    s.set("auth.jwt_secret", "s3cr3t", "--x").expect("parses");
    let w = s.warnings();
    assert_eq!(w.len(), 2);
    assert!(w.iter().all(|w| !w.contains("s3cr3t")));
    s.set("security.allowed_origins", "https://a.example.com", "--x")
        .expect("parses");
    assert_eq!(s.warnings().len(), 1);
}

#[test]
fn pem_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("ringhub-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    std::fs::write(&key, "not a pem").expect("write");
    let mut s = Settings::default();
    s.tls.cert_file = Some(cert.clone());
    s.tls.key_file = Some(key.clone());
    let e = err(s.validate());
    assert!(
        e.starts_with("invalid value for tls.key_file") && e.contains("PRIVATE KEY"),
        "{e}"
    );
    std::fs::write(
        &key,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .expect("write");
    s.validate().expect("valid");
    assert!(s.tls.enabled());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_file_lists_every_key_with_its_default() {
    let text = include_str!("../../../ringhub.example.toml");
    let mut s = Settings::default();
    s.merge_toml(text, "ringhub.example.toml")
        .expect("example parses");
    assert_eq!(
        s,
        Settings::default(),
        "the example's values must be the defaults"
    );
    for k in KEYS {
        let short = k.name.rsplit('.').next().unwrap_or(k.name);
        let section = if k.section().is_empty() {
            String::new()
        } else {
            format!("[{}]", k.section())
        };
        let body = match text.find(&section) {
            Some(i) if !section.is_empty() => &text[i..],
            _ => text,
        };
        let listed = body.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{short} ="))
                || l.starts_with(&format!("{short}="))
                || l == format!("[[{short}]]")
        });
        assert!(listed, "{} is not in ringhub.example.toml", k.name);
    }
}

#[test]
fn keepalive_timeout_reaches_the_engine() {
    let mut s = Settings::default();
    assert_eq!(
        s.engine_config().http_keepalive_timeout,
        Duration::from_secs(60)
    );
    s.set("limits.keepalive_timeout", "0s", "test")
        .expect("zero turns keep-alive off");
    assert_eq!(s.engine_config().http_keepalive_timeout, Duration::ZERO);
}

#[test]
fn compression_section_is_read_checked_and_reaches_the_engine() {
    let mut s = Settings::default();
    assert!(s.engine_config().compression.enabled, "on by default");
    s.merge_toml(
        "[compression]\nenabled = false\nlevel = 9\nthreshold = 1024",
        "f.toml",
    )
    .unwrap();
    s.apply_env(env(&[("RINGHUB_COMPRESSION_LEVEL", "3")]))
        .unwrap();
    let c = s.engine_config().compression;
    assert_eq!((c.enabled, c.level, c.threshold), (false, 3, 1024));
    assert!(!c.context_takeover, "context takeover is off by default");
    s.apply_env(env(&[("RINGHUB_COMPRESSION_CONTEXT_TAKEOVER", "true")]))
        .unwrap();
    assert!(s.engine_config().compression.context_takeover);
    let e = err(s.merge_toml("[compression]\nlevel = 10", "f.toml"));
    assert!(e.contains("compression.level"), "{e}");
    s.merge_toml("[compression]\nwindow = 10", "f.toml")
        .unwrap();
    assert_eq!(s.engine_config().compression.window, 10);
    let e = err(s.merge_toml("[compression]\nwindow = 8", "f.toml"));
    assert!(e.contains("compression.window"), "{e}");
    let e = err(s.merge_toml("[compression]\nwindows = 10", "f.toml"));
    assert!(
        e.contains("compression.windows"),
        "unknown keys are refused: {e}"
    );
}

#[test]
fn webhooks_settings_are_checked_by_key() {
    let mut s = Settings::default();
    s.set("webhooks.url", "http://127.0.0.1:3000/hook", "test")
        .unwrap();
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("webhooks.secret"), "{e}");
    s.set("webhooks.secret", "k3y", "test").unwrap();
    s.set("webhooks.events", "user_online,publication", "test")
        .unwrap();
    s.set("webhooks.topics", "orders:*", "test").unwrap();
    s.validate().unwrap();
    let c = s.engine_config().webhooks;
    assert!(c.wants(crate::config::webhooks::EventKind::Publication));
    assert!(!c.wants(crate::config::webhooks::EventKind::UserOffline));
    assert!(!format!("{s:?}").contains("k3y"), "the secret is masked");
    assert!(!s.to_string().contains("k3y"));
    assert!(s.set("webhooks.url", "https://x/h", "test").is_err());
    assert!(s.set("webhooks.events", "user_onlin", "test").is_err());
    s.set("webhooks.lease", "1s", "test").unwrap();
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("webhooks.lease"), "{e}");
}
