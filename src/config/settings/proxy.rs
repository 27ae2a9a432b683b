//! The proxy settings: `[proxy]` (`connect`, `refresh`, `subscribe`, `publish`, `rpc`, each an
//! endpoint table or a URL) and the `proxy` table of a `[[topics]]` entry (`subscribe`,
//! `publish`, `rpc`). In `RINGHUB_PROXY_*` variables an endpoint is a URL or a JSON object.
//!
//! ```toml
//! [proxy]
//! connect = { url = "http://127.0.0.1:3000/connect", timeout = "500ms", headers = ["cookie"] }
//! subscribe = "http://127.0.0.1:3000/subscribe"
//!
//! [[topics]]
//! pattern = "project:*"
//! proxy = { publish = { url = "http://127.0.0.1:3000/publish", on_down = "allow" } }
//! ```

use std::sync::Arc;

use toml::Value;

use super::keys::{dur_v, duration, int_v, key, list, str_v, text, uint, Key, Raw, Why};
use super::Settings;
use crate::config::proxy::{
    check_url, OnDown, ProxyEndpoint, TopicProxies, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT,
};

/// The keys of an endpoint table.
const ENDPOINT_FIELDS: [&str; 5] = ["url", "timeout", "headers", "on_down", "max_concurrency"];

/// What an endpoint allows, for error messages.
const ENDPOINT: &str = "an http:// URL, or a table of url, timeout, headers, on_down \
                        (refuse or allow), max_concurrency";

/// Parses one endpoint: a URL, or a table (a JSON object in a variable).
pub(super) fn endpoint(r: Raw<'_>) -> Result<Option<Arc<ProxyEndpoint>>, Why> {
    let table: toml::Table = match r {
        Raw::Toml(Value::String(u)) => return url_only(u),
        Raw::Toml(Value::Table(t)) => t.clone(),
        Raw::Text(t) if t.trim().starts_with('{') => {
            serde_json::from_str(t).map_err(|e| Some(e.to_string()))?
        }
        Raw::Text(t) => return url_only(t.trim()),
        Raw::Toml(_) => return Err(None),
    };
    if let Some(k) = table
        .keys()
        .find(|k| !ENDPOINT_FIELDS.contains(&k.as_str()))
    {
        return Err(Some(format!("unknown key {k:?}")));
    }
    let url = match table.get("url") {
        Some(Value::String(u)) => u.clone(),
        _ => return Err(Some("url is missing".into())),
    };
    check_url(&url).map_err(Some)?;
    let mut ep = ProxyEndpoint::new(url);
    if let Some(v) = table.get("timeout") {
        ep.timeout = duration(Raw::Toml(v), false)
            .map_err(|_| Some("timeout: a duration like 500ms".into()))?;
    }
    if let Some(v) = table.get("headers") {
        ep.headers = list(Raw::Toml(v))
            .map_err(|_| Some("headers: a list of header names".into()))?
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
    }
    if let Some(v) = table.get("on_down") {
        ep.on_down = match text(Raw::Toml(v)) {
            Ok("refuse") => OnDown::Refuse,
            Ok("allow") => OnDown::Allow,
            _ => return Err(Some("on_down: refuse or allow".into())),
        };
    }
    if let Some(v) = table.get("max_concurrency") {
        ep.max_concurrency = uint(Raw::Toml(v), 1, 1 << 20)
            .map_err(|_| Some("max_concurrency: a positive integer".into()))?
            as usize;
    }
    Ok(Some(Arc::new(ep)))
}

fn url_only(u: &str) -> Result<Option<Arc<ProxyEndpoint>>, Why> {
    if u.is_empty() {
        return Ok(None);
    }
    check_url(u).map_err(Some)?;
    Ok(Some(Arc::new(ProxyEndpoint::new(u))))
}

/// An endpoint as an inline TOML table (the printed configuration reads back).
pub(super) fn endpoint_v(ep: &Option<Arc<ProxyEndpoint>>) -> Option<Value> {
    let ep = ep.as_ref()?;
    let mut t = toml::Table::new();
    t.insert("url".into(), str_v(&ep.url)?);
    if ep.timeout != DEFAULT_TIMEOUT {
        t.insert("timeout".into(), dur_v(ep.timeout)?);
    }
    if !ep.headers.is_empty() {
        t.insert("headers".into(), super::keys::list_v(&ep.headers)?);
    }
    if ep.on_down == OnDown::Allow {
        t.insert("on_down".into(), str_v("allow")?);
    }
    if ep.max_concurrency != DEFAULT_CONCURRENCY {
        t.insert("max_concurrency".into(), int_v(ep.max_concurrency)?);
    }
    Some(Value::Table(t))
}

/// The `[proxy]` keys.
pub(super) const KEYS: &[Key] = &[
    key!(
        "proxy.connect",
        "an http:// URL, or a table of url, timeout, headers, on_down (refuse or allow), max_concurrency",
        |s, r| s.proxy.connect = endpoint(r)?,
        |s| endpoint_v(&s.proxy.connect)
    ),
    key!(
        "proxy.refresh",
        "an http:// URL, or a table of url, timeout, headers, on_down (refuse or allow), max_concurrency",
        |s, r| s.proxy.refresh = endpoint(r)?,
        |s| endpoint_v(&s.proxy.refresh)
    ),
    key!(
        "proxy.subscribe",
        "an http:// URL, or a table of url, timeout, headers, on_down (refuse or allow), max_concurrency",
        |s, r| s.proxy.subscribe = endpoint(r)?,
        |s| endpoint_v(&s.proxy.subscribe)
    ),
    key!(
        "proxy.publish",
        "an http:// URL, or a table of url, timeout, headers, on_down (refuse or allow), max_concurrency",
        |s, r| s.proxy.publish = endpoint(r)?,
        |s| endpoint_v(&s.proxy.publish)
    ),
    key!(
        "proxy.rpc",
        "an http:// URL, or a table of url, timeout, headers, on_down (refuse or allow), max_concurrency",
        |s, r| s.proxy.rpc = endpoint(r)?,
        |s| endpoint_v(&s.proxy.rpc)
    ),
];

/// The `proxy` tables of `[[topics]]` entries (the entries were checked by `topics` already):
/// `(entry index, error)` on a bad one.
pub(super) fn topic_proxies(items: &[Value]) -> Result<Vec<TopicProxies>, (usize, String)> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(p) = item.as_table().and_then(|t| t.get("proxy")) else {
            continue;
        };
        let Value::Table(t) = p else {
            return Err((
                i,
                format!("a table of subscribe, publish, rpc ({ENDPOINT})"),
            ));
        };
        let pattern = item
            .get("pattern")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut tp = TopicProxies {
            pattern,
            ..Default::default()
        };
        for (k, v) in t {
            let ep = endpoint(Raw::Toml(v)).map_err(|why| {
                let why = why.map_or(String::new(), |w| format!(": {w}"));
                (i, format!("proxy.{k}: {ENDPOINT}{why}"))
            })?;
            match k.as_str() {
                "subscribe" => tp.subscribe = ep,
                "publish" => tp.publish = ep,
                "rpc" => tp.rpc = ep,
                _ => return Err((i, format!("proxy.{k}: one of subscribe, publish, rpc"))),
            }
        }
        out.push(tp);
    }
    Ok(out)
}

/// A `[[topics]]` entry's `proxy` table, for the printed configuration.
pub(super) fn topic_proxies_v(s: &Settings, pattern: &str) -> Option<Value> {
    let tp = s.proxy.topics.iter().find(|t| t.pattern == pattern)?;
    let mut t = toml::Table::new();
    for (k, ep) in [
        ("subscribe", &tp.subscribe),
        ("publish", &tp.publish),
        ("rpc", &tp.rpc),
    ] {
        if let Some(v) = endpoint_v(ep) {
            t.insert(k.into(), v);
        }
    }
    Some(Value::Table(t))
}

#[cfg(test)]
mod tests {
    use crate::config::proxy::{OnDown, ProxyKind};
    use crate::settings::Settings;

    #[test]
    fn proxies_from_toml_env_and_topics() {
        let mut s = Settings::default();
        s.merge_toml(
            r#"
[proxy]
connect = { url = "http://127.0.0.1:3000/connect", timeout = "250ms", headers = ["Cookie"] }
rpc = "http://127.0.0.1:3000/rpc"

[[topics]]
pattern = "project:*"
proxy = { subscribe = { url = "http://b/s", on_down = "allow", max_concurrency = 4 } }
"#,
            "f.toml",
        )
        .unwrap();
        let c = s.proxy.connect.as_ref().unwrap();
        assert_eq!(c.timeout, std::time::Duration::from_millis(250));
        assert_eq!(c.headers, ["cookie"]);
        let sub = s
            .proxy
            .for_topic(ProxyKind::Subscribe, "project:1")
            .unwrap();
        assert_eq!((sub.on_down, sub.max_concurrency), (OnDown::Allow, 4));
        assert!(s.proxy.for_topic(ProxyKind::Subscribe, "chat:1").is_none());
        s.apply_env([(
            "RINGHUB_PROXY_PUBLISH",
            r#"{"url":"http://b/p","timeout":"2s"}"#,
        )])
        .unwrap();
        assert_eq!(s.proxy.publish.as_ref().unwrap().url, "http://b/p");
        s.validate().unwrap();
        assert_eq!(s.engine_config().proxy, s.proxy);
        // The printed configuration reads back.
        let printed = s.to_string();
        let mut again = Settings::default();
        again.merge_toml(&printed, "printed").unwrap();
        assert_eq!(again.proxy, s.proxy, "{printed}");

        let err = |t: &str| {
            Settings::default()
                .merge_toml(t, "f.toml")
                .unwrap_err()
                .to_string()
        };
        let e = err("[proxy]\nconnect = \"https://x/\"");
        assert!(
            e.contains("proxy.connect") && e.contains("not an http:// URL"),
            "{e}"
        );
        let e = err("[proxy]\nconnect = { url = \"http://x/\", retries = 3 }");
        assert!(e.contains("unknown key \"retries\""), "{e}");
        let e = err("[[topics]]\npattern = \"p*\"\nproxy = { join = \"http://x/\" }");
        assert!(e.starts_with("invalid value for topics[0].proxy"), "{e}");
    }
}
