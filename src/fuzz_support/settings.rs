//! The operator's input: a `ringhub.toml` settings file, loaded, validated and printed back.

use crate::config::settings::Settings;

/// Loads TOML text as a settings file. When it loads and names no file (so validation reads
/// nothing from disk) it is validated, and the printed effective configuration — what
/// `check-config` shows — must read back as the same settings.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut s = Settings::default();
    if s.merge_toml(text, "fuzz.toml").is_err() {
        return;
    }
    let _ = s.warnings();
    let files = s.auth.jwt_public_key_file.is_some()
        || s.tls.cert_file.is_some()
        || s.tls.key_file.is_some();
    if !files && s.validate().is_ok() {
        let _ = s.engine_config();
        let _ = crate::policy::guard::Guard::from_settings(&s);
    }
    let secrets = s.auth.jwt_secret.is_some() || s.api.key.is_some();
    if !secrets {
        let printed = s.to_string();
        let mut back = Settings::default();
        back.merge_toml(&printed, "printed")
            .unwrap_or_else(|e| panic!("printed settings do not re-read: {e}\n{printed}"));
        assert_eq!(
            back, s,
            "printed settings read back differently:\n{printed}"
        );
    }
}
