//! What `check-config` shows besides errors: the warnings and the effective configuration.

use std::fmt;

use super::{
    default_max_connections, fd_reserve, fd_soft_limit, Settings, EXAMPLE_SECRET_PREFIX, KEYS,
    SECTIONS,
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
        w
    }
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
                    Some(_) if key.name == "topics" => {
                        super::messaging::write_topics(f, &self.topics)?
                    }
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
