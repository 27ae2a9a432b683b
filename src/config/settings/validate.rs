//! Validation of loaded settings: what single keys cannot check (combinations of keys, key and
//! certificate files, the engine's own ranges).

use std::path::Path;

use super::{Settings, SettingsError};

impl Settings {
    /// Checks what single keys cannot: combinations, files, and the engine's own ranges.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: String, expected: &str| SettingsError::Invalid {
            key: key.into(),
            value,
            expected: expected.into(),
            origin: String::new(),
        };
        let q = |s: &str| format!("{s:?}");
        if self.echo_path.as_deref() == Some(self.ws_path.as_str()) {
            return Err(invalid(
                "echo_path",
                q(&self.ws_path),
                "a path different from ws_path",
            ));
        }
        if self.idle_timeout <= self.ping_interval {
            let v = q(&humantime::format_duration(self.idle_timeout).to_string());
            return Err(invalid(
                "idle_timeout",
                v,
                "a duration longer than ping_interval",
            ));
        }
        if self.limits.messages_per_second > 0 && self.limits.burst == 0 {
            return Err(invalid("limits.burst", "0".into(), "a positive integer"));
        }
        if self.auth.anonymous == Some(false) && !self.auth.enabled() {
            return Err(invalid(
                "auth.anonymous",
                "false".into(),
                "true unless auth.jwt_secret or auth.jwt_public_key_file is set (no client could connect)",
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "(not set)".into(),
                    "a PEM key file when tls.cert_file is set",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "(not set)".into(),
                    "a PEM certificate file when tls.key_file is set",
                ))
            }
            _ => {}
        }
        let pem_files = [
            (
                "auth.jwt_public_key_file",
                &self.auth.jwt_public_key_file,
                "PUBLIC KEY",
            ),
            ("tls.cert_file", &self.tls.cert_file, "CERTIFICATE"),
            ("tls.key_file", &self.tls.key_file, "PRIVATE KEY"),
        ];
        for (key, path, label) in pem_files {
            if let Some(path) = path {
                check_pem(path, label).map_err(|why| {
                    invalid(
                        key,
                        q(&path.display().to_string()),
                        &format!("a readable PEM file with a {label} block: {why}"),
                    )
                })?;
            }
        }
        self.validate_messaging()?;
        self.validate_webhooks()?;
        self.engine_config()
            .validate()
            .map_err(|e| invalid("(engine)", "-".into(), &e.to_string()))
    }
}

/// Checks that `path` is readable and holds a PEM block whose label ends with `label`.
fn check_pem(path: &Path, label: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .any(|l| l.ends_with(label));
    if found {
        Ok(())
    } else {
        Err(format!("no '-----BEGIN ...{label}-----' line"))
    }
}
