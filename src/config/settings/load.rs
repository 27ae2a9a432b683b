//! Loading settings: the TOML file, the `RINGHUB_*` environment and command-line flags, each
//! value set through the one table of keys ([`KEYS`]) so that every source gives the same errors.

use std::path::Path;

use super::{keys, messaging, report, Settings, SettingsError, KEYS, SECTIONS, TOOL_ENV};

impl Settings {
    /// Defaults, then `file` if given, then the `RINGHUB_*` variables of `env`. Command-line
    /// flags follow with [`Settings::set`]; call [`Settings::validate`] last.
    pub fn load<I, K, V>(file: Option<&Path>, env: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut s = Settings::default();
        if let Some(path) = file {
            s.merge_file(path)?;
        }
        s.apply_env(env)?;
        Ok(s)
    }

    /// Reads `path` and applies every key it sets.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        self.merge_toml(&text, &path.display().to_string())
    }

    /// Applies every key set in the TOML document `text`; `origin` names it in errors.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            SettingsError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        for (name, value) in &table {
            match value {
                toml::Value::Table(inner) if SECTIONS.contains(&name.as_str()) => {
                    for (k, v) in inner {
                        let key = format!("{name}.{k}");
                        self.set_raw(&key, keys::Raw::Toml(v), origin)?;
                    }
                }
                // `[autth]`: a section, not a key; name the sections.
                toml::Value::Table(_) if !KEYS.iter().any(|k| k.name == name) => {
                    return Err(unknown_section(name, origin));
                }
                _ => self.set_raw(name, keys::Raw::Toml(value), origin)?,
            }
        }
        Ok(())
    }

    /// Applies every `RINGHUB_<SECTION>_<KEY>` variable of `vars` (e.g. `std::env::vars_os()`).
    /// Variables with the prefix that name no setting are ignored; those that are not one of the
    /// tools' own ([`TOOL_ENV`], such as `RINGHUB_CONFIG`) are listed by [`Settings::warnings`].
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        for (name, value) in vars {
            let Some(name) = name.as_ref().to_str() else {
                continue;
            };
            let Some(key) = KEYS.iter().find(|k| k.env_name() == name) else {
                if name.starts_with("RINGHUB_") && !TOOL_ENV.contains(&name) {
                    self.ignored_env.push(name.to_string());
                }
                continue;
            };
            let origin = format!("in {name}");
            let Some(value) = value.as_ref().to_str() else {
                return Err(key.invalid("(not UTF-8)".into(), &origin));
            };
            self.set_raw(key.name, keys::Raw::Text(value), &origin)?;
        }
        Ok(())
    }

    /// Sets the dotted `key` (e.g. `limits.burst`, `listen`) from text as a flag or variable
    /// would give it: lists comma-separated, durations like `500ms`. `origin` names the source
    /// in errors, e.g. `--shards`.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), SettingsError> {
        self.set_raw(key, keys::Raw::Text(value), &format!("in {origin}"))
    }

    fn set_raw(
        &mut self,
        name: &str,
        raw: keys::Raw<'_>,
        origin: &str,
    ) -> Result<(), SettingsError> {
        let origin = if origin.starts_with("in ") {
            origin.to_string()
        } else {
            format!("in {origin}")
        };
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            let section = name.split_once('.').map_or("", |(s, _)| s);
            let section = if SECTIONS.contains(&section) {
                section
            } else {
                ""
            };
            let known: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.section() == section)
                .map(|k| k.name)
                .collect();
            let mut list = known.join(", ");
            if let Some(near) = report::closest(name, known.iter()) {
                list.push_str(&format!("; did you mean {near}?"));
            } else if name == "port" {
                list.push_str("; the port is part of listen, e.g. listen = \"0.0.0.0:8080\"");
            }
            return Err(SettingsError::Unknown {
                key: name.to_string(),
                origin: origin.trim_start_matches("in ").to_string(),
                known: list,
            });
        };
        if key.name == "topics" {
            // Its errors name the entry and key inside it, e.g. `topics[1].pattern`.
            (self.topics, self.proxy.topics) = messaging::topics_and_proxies(raw, &origin)?;
            return Ok(());
        }
        (key.set)(self, raw).map_err(|why| {
            let mut e = key.invalid(raw.show(!key.quote_refused), &origin);
            if let (Some(why), SettingsError::Invalid { expected, .. }) = (why, &mut e) {
                expected.push_str(": ");
                expected.push_str(&why);
            }
            e
        })
    }
}

/// The error for a table `[name]` that is no section.
fn unknown_section(name: &str, origin: &str) -> SettingsError {
    let sections: Vec<&str> = SECTIONS.iter().copied().filter(|s| !s.is_empty()).collect();
    let mut known = sections
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ");
    known.push_str(", [[topics]]");
    if let Some(near) = report::closest(name, sections.iter().copied().chain(["topics"])) {
        known.push_str(&format!("; did you mean [{near}]?"));
    }
    SettingsError::UnknownSection {
        name: name.to_string(),
        origin: origin.trim_start_matches("in ").to_string(),
        known,
    }
}
