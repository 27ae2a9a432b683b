//! The `[webhooks]` keys (see [`WebhookConfig`](crate::config::WebhookConfig)).

use toml::Value;

use super::keys::{dur_v, duration, int_v, key, list, list_v, str_v, text, uint, Key, Raw, Why};
use super::Settings;
use crate::config::webhooks::{EventKind, EventSet};
use crate::proto::pattern::Pattern;

fn url(r: Raw<'_>) -> Result<Option<String>, Why> {
    let t = text(r)?;
    if t.is_empty() {
        return Ok(None);
    }
    let ok = t.starts_with("http://") && t.parse::<hyper::Uri>().is_ok();
    ok.then(|| Some(t.to_string())).ok_or(None)
}

fn events(r: Raw<'_>) -> Result<EventSet, Why> {
    let l = list(r)?;
    let kinds = l
        .iter()
        .map(|k| k.parse::<EventKind>().map_err(Some))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventSet::from_kinds(kinds))
}

fn topics(r: Raw<'_>) -> Result<Vec<String>, Why> {
    let l = list(r)?;
    for t in &l {
        Pattern::parse(t).map_err(|e| Some(format!("{t:?}: {e}")))?;
    }
    Ok(l)
}

/// The `[webhooks]` keys (appended to [`super::KEYS`]).
pub(super) const KEYS: &[Key] =
    &[
        key!(
            "webhooks.url",
            "an http:// URL of the receiver, or \"\" for no webhooks",
            |s, r| s.webhooks.url = url(r)?,
            |s| s.webhooks.url.as_deref().and_then(str_v)
        ),
        key!(
            "webhooks.secret",
            "a non-empty HMAC-SHA256 key",
            true,
            |s, r| {
                let t = text(r)?;
                if t.is_empty() {
                    return Err(None);
                }
                s.webhooks.secret = t.to_string();
            },
            |s| (!s.webhooks.secret.is_empty())
                .then(|| str_v(&s.webhooks.secret))
                .flatten()
        ),
        key!(
        "webhooks.events",
        "a list of topic_occupied, topic_vacated, presence_added, presence_removed, user_online, \
         user_offline, message_acked, message_expired, message_dropped, publication",
        |s, r| s.webhooks.events = events(r)?,
        |s| list_v(&s.webhooks.events.kinds().map(|k| k.as_str()).collect::<Vec<_>>())
    ),
        key!(
            "webhooks.topics",
            "a list of topic patterns whose client publications are sent",
            |s, r| s.webhooks.topics = topics(r)?,
            |s| list_v(&s.webhooks.topics)
        ),
        key!(
            "webhooks.batch_size",
            "an integer from 1 to 10000 (events per request)",
            |s, r| s.webhooks.batch_size = uint(r, 1, 10_000)? as usize,
            |s| int_v(s.webhooks.batch_size)
        ),
        key!(
            "webhooks.timeout",
            "a positive duration like 5s",
            |s, r| s.webhooks.timeout = duration(r, false)?,
            |s| dur_v(s.webhooks.timeout)
        ),
        key!(
            "webhooks.retry_min",
            "a positive duration like 200ms (the first retry's wait)",
            |s, r| s.webhooks.retry_min = duration(r, false)?,
            |s| dur_v(s.webhooks.retry_min)
        ),
        key!(
            "webhooks.retry_max",
            "a positive duration like 30s (the longest wait between retries)",
            |s, r| s.webhooks.retry_max = duration(r, false)?,
            |s| dur_v(s.webhooks.retry_max)
        ),
        key!(
            "webhooks.dead_letter_after",
            "a positive duration like 24h (undelivered events older than this are dropped)",
            |s, r| s.webhooks.dead_letter_after = duration(r, false)?,
            |s| dur_v(s.webhooks.dead_letter_after)
        ),
        key!(
            "webhooks.lease",
            "a duration longer than webhooks.timeout, like 60s",
            |s, r| s.webhooks.lease = duration(r, false)?,
            |s| dur_v(s.webhooks.lease)
        ),
    ];

impl Settings {
    /// The `[webhooks]` checks single keys cannot make, naming the key at fault.
    pub(super) fn validate_webhooks(&self) -> Result<(), super::SettingsError> {
        let w = &self.webhooks;
        let invalid = |key: &str, value: String, expected: &str| super::SettingsError::Invalid {
            key: key.into(),
            value,
            expected: expected.into(),
            origin: String::new(),
        };
        let d = |d: std::time::Duration| format!("{:?}", humantime::format_duration(d).to_string());
        if w.url.is_some() && w.secret.is_empty() {
            return Err(invalid(
                "webhooks.secret",
                "(not set)".into(),
                "an HMAC-SHA256 key when webhooks.url is set (receivers check every request with it)",
            ));
        }
        if w.retry_max < w.retry_min {
            return Err(invalid(
                "webhooks.retry_max",
                d(w.retry_max),
                "a duration at least webhooks.retry_min",
            ));
        }
        if w.lease <= w.timeout {
            return Err(invalid(
                "webhooks.lease",
                d(w.lease),
                "a duration longer than webhooks.timeout",
            ));
        }
        Ok(())
    }
}
