//! Why settings could not be loaded or are invalid: [`SettingsError`], one line per error.

use std::path::PathBuf;

use thiserror::Error;

/// Why settings could not be loaded or are invalid. Every variant displays as one line.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// A value is outside what the key allows.
    #[error("invalid value for {key}: {value} (expected {expected}){origin}")]
    Invalid {
        /// Dotted key, e.g. `limits.burst`.
        key: String,
        /// The value as given (quoted when text, `"***"` for secrets).
        value: String,
        /// What the key allows.
        expected: String,
        /// Where the value came from, e.g. ` in RINGHUB_LIMITS_BURST` (empty after merging).
        origin: String,
    },
    /// A key that ringhub does not know.
    #[error("unknown setting {key} in {origin} (expected one of: {known})")]
    Unknown {
        /// The key as written.
        key: String,
        /// The file or variable it came from.
        origin: String,
        /// The keys allowed at that place.
        known: String,
    },
    /// A TOML table that is no section (`[autth]`).
    #[error("unknown section [{name}] in {origin} (expected one of: {known})")]
    UnknownSection {
        /// The table's name as written.
        name: String,
        /// The file it came from.
        origin: String,
        /// The sections, and the nearest one.
        known: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The configuration file is not valid TOML.
    #[error("{origin}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message, on one line.
        message: String,
    },
}
