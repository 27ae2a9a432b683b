//! What `check-config` shows besides errors: the warnings and the effective configuration.

use std::fmt;

use super::{
    default_max_connections, fd_reserve, fd_soft_limit, Settings, EXAMPLE_SECRET_PREFIX, KEYS,
    SECTIONS, TOOL_ENV,
};

impl Settings {
    /// Things worth a warning at start (logged by the binary, printed by `check-config`): e.g.
    /// auth on with no origin allowlist, a short HS256 secret, the example file's placeholder
    /// secrets, or limits turned off.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for (key, secret) in [
            ("auth.jwt_secret", &self.auth.jwt_secret),
            ("api.key", &self.api.key),
            (
                "webhooks.secret",
                &(!self.webhooks.secret.is_empty())
                    .then(|| crate::policy::settings::Secret::new(self.webhooks.secret.as_str())),
            ),
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().trim().starts_with(EXAMPLE_SECRET_PREFIX))
            {
                w.push(format!(
                    "{key} is the placeholder from ringhub.example.toml (\"{EXAMPLE_SECRET_PREFIX}...\"): \
                     anyone can forge it; set a long random secret"
                ));
            }
        }
        if self.limits.max_connections == 0 {
            w.push(
                "limits.max_connections = 0: no connection cap; at the descriptor limit new clients \
                 are only shed with a bare 503 and health probes share their fate"
                    .to_string(),
            );
        } else if let Some(soft) = fd_soft_limit() {
            if self.limits.max_connections as u64 > soft {
                w.push(format!(
                    "limits.max_connections ({}) exceeds the open-file limit ({soft}): raise \
                     `ulimit -n` or lower it",
                    self.limits.max_connections
                ));
            }
        }
        if self.limits.messages_per_second == 0 {
            w.push("limits.messages_per_second = 0: no message rate limit".to_string());
        }
        if self.auth.enabled() && self.security.allowed_origins.is_empty() {
            w.push(
                "security.allowed_origins is empty: any web page may open authenticated connections \
                 (cross-site WebSocket hijacking); list the allowed origins"
                    .to_string(),
            );
        }
        if self
            .auth
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 32)
        {
            w.push("auth.jwt_secret is shorter than 32 bytes, weak for HS256".to_string());
        }
        w.extend(self.store_warning());
        for name in &self.ignored_env {
            // Compared without the shared prefix, which would make any two names look close.
            let strip = |n: &str| n.trim_start_matches("RINGHUB_").to_string();
            let known = KEYS.iter().map(|k| strip(&k.env_name()));
            let known = known.chain(TOOL_ENV.iter().map(|t| strip(t)));
            let hint = match closest(&strip(name), known) {
                Some(near) => format!("did you mean RINGHUB_{near}?"),
                None => "ringhub.example.toml lists every setting".to_string(),
            };
            w.push(format!("{name} is not a setting and is ignored ({hint})"));
        }
        w
    }
}

/// The candidate nearest to `name` by edit distance (case-insensitive), if it is near enough
/// to be a typo of it: at most a third of the name's length away.
pub(super) fn closest<S: AsRef<str>>(
    name: &str,
    candidates: impl IntoIterator<Item = S>,
) -> Option<S> {
    let name = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name, &c.as_ref().to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting an adjacent transposition (`KYE` for `KEY`) as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The effective configuration as TOML, every key listed, secrets shown as `"***"`.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for section in SECTIONS {
            if !section.is_empty() {
                writeln!(f, "\n[{section}]")?;
            }
            for key in KEYS.iter().filter(|k| k.section() == section) {
                let short = key.name.rsplit('.').next().unwrap_or(key.name);
                match (key.get)(self) {
                    Some(_) if key.secret => writeln!(f, "{short} = \"***\"")?,
                    Some(_) if key.name == "topics" => super::messaging::write_topics(f, self)?,
                    Some(v)
                        if key.name == "limits.max_connections"
                            && self.limits.max_connections == default_max_connections() =>
                    {
                        let soft = fd_soft_limit().unwrap_or(1024);
                        writeln!(
                            f,
                            "{short} = {v} # default: open-file limit {soft} less a reserve of {}",
                            fd_reserve(soft)
                        )?
                    }
                    Some(v) => writeln!(f, "{short} = {v}")?,
                    None if key.name == "node" => {
                        writeln!(f, "# {short} = (not set: a random name at start)")?
                    }
                    None if key.name == "auth.anonymous" => {
                        let (on, why) = (
                            self.auth.anonymous_allowed(),
                            if self.auth.enabled() { "a" } else { "no" },
                        );
                        writeln!(f, "# {short} = (not set: {on} as {why} JWT key is set)")?
                    }
                    None if key.name == "store.backend" => {
                        let name = super::messaging::backend_name(self.store_backend());
                        let why = if self.cluster.redis.is_empty() {
                            "as cluster.redis is empty"
                        } else {
                            "as cluster.redis is set"
                        };
                        writeln!(f, "# {short} = (not set: \"{name}\" {why})")?
                    }
                    None => writeln!(f, "# {short} = (not set)")?,
                }
            }
        }
        Ok(())
    }
}
