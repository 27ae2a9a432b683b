//! Connection authentication with JWTs, sans-IO. Build an [`Authenticator`] once from the `[auth]`
//! settings; at each upgrade take the token with [`token_from_request`] and call
//! [`Authenticator::authenticate`]: an error means HTTP 401 before the upgrade
//! ([`AuthError::http_status`]), and the [`Identity`] says who the connection is.
//!
//! Accepted: HS256 with `auth.jwt_secret`, and RS256 or ES256 (P-256) with the public key in
//! `auth.jwt_public_key_file` (the key's type decides which). Refused: `alg: none` and every
//! other algorithm, an HS256 token when no secret is configured (so a token "signed" with the
//! public key as an HMAC secret never verifies), bad signatures, malformed tokens, tokens
//! without `exp`, expired tokens, tokens whose `nbf` is in the future (30 s leeway on both), and
//! tokens whose header carries `crit` (no JOSE extension is understood, RFC 7515 §4.1.11).
//! A token without `sub` is accepted as an anonymous user (no private `user:` topic).
//! Neither tokens nor keys appear in errors or logs.

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

use crate::policy::settings::{AuthSettings, Secret};
use crate::proto::pattern::Pattern;

/// Longest token accepted, in bytes (longer ones are [`AuthError::Malformed`]).
pub const MAX_TOKEN_LEN: usize = 8192;
/// Longest `sub` accepted, in bytes (it names the private topic `user:<sub>`).
pub const MAX_USER_LEN: usize = 128;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Why a connection or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No token, and anonymous connections are refused.
    #[error("authentication required")]
    Missing,
    /// Not a well-formed JWT (or its header or claims are not valid JSON).
    #[error("malformed token")]
    Malformed,
    /// The token's algorithm is not one this server accepts with its configured keys.
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// The header's `crit` names extensions that must be understood; this server understands
    /// none (RFC 7515 §4.1.11), so any `crit` is refused.
    #[error("token requires unsupported critical extensions")]
    CriticalExtension,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// A claim is missing or has an unacceptable value; the text names the claim.
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    /// The public key file cannot be used (configuration error, not a client error).
    #[error("cannot use {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl AuthError {
    /// The HTTP status for refusing an upgrade with this error: 401, or 500 for [`AuthError::Key`].
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Key { .. } => 500,
            _ => 401,
        }
    }
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The token's `sub`: the user id (owner of the topic `user:<id>`); `None` when anonymous or
    /// when the token has no `sub`.
    pub user: Option<Arc<str>>,
    /// The token's `subscribe` claim; `None` = use the `[permissions]` default.
    pub subscribe: Option<Vec<String>>,
    /// The token's `publish` claim; `None` = use the `[permissions]` default.
    pub publish: Option<Vec<String>>,
    /// The token's `topics` claim: subscribed at connect (protocol v2 rooms).
    pub topics: Option<Vec<String>>,
}

impl Identity {
    /// An anonymous connection: no user, default permissions.
    pub fn anonymous() -> Self {
        Self::default()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    subscribe: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    topics: Option<Vec<String>>,
}

/// A configured key with the validation rules that go with it.
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies connection tokens. Immutable and `Sync`: share one across shards.
pub struct Authenticator {
    hs256: Option<Verifier>,
    public: Option<(Algorithm, Verifier)>,
    anonymous: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public", &self.public.as_ref().map(|(a, _)| *a))
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Authenticator {
    /// Builds the authenticator from `[auth]`, reading `jwt_public_key_file` if set.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let pem = match &settings.jwt_public_key_file {
            Some(path) => Some((
                path.clone(),
                std::fs::read(path).map_err(|e| AuthError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            )),
            None => None,
        };
        let mut a = Self::from_keys(
            settings.jwt_secret.as_ref(),
            pem.as_ref().map(|(_, p)| p.as_slice()),
            settings.anonymous_allowed(),
        )
        .map_err(|e| match (e, &pem) {
            (AuthError::Key { reason, .. }, Some((path, _))) => AuthError::Key {
                path: path.clone(),
                reason,
            },
            (e, _) => e,
        })?;
        let (iss, aud) = (settings.issuer.as_deref(), settings.audience.as_deref());
        for v in a
            .hs256
            .iter_mut()
            .chain(a.public.iter_mut().map(|(_, v)| v))
        {
            if let Some(iss) = iss {
                v.validation.set_issuer(&[iss]);
                v.validation.required_spec_claims.insert("iss".into());
            }
            if let Some(aud) = aud {
                v.validation.set_audience(&[aud]);
                v.validation.validate_aud = true;
                v.validation.required_spec_claims.insert("aud".into());
            }
        }
        Ok(a)
    }

    /// Builds the authenticator from an HS256 secret and/or an RS256/ES256 public key in PEM.
    pub fn from_keys(
        secret: Option<&Secret>,
        public_pem: Option<&[u8]>,
        anonymous: bool,
    ) -> Result<Self, AuthError> {
        let hs256 = secret.map(|s| Verifier {
            key: DecodingKey::from_secret(s.expose().as_bytes()),
            validation: validation(Algorithm::HS256),
        });
        let public = match public_pem {
            None => None,
            Some(pem) => {
                let (alg, key) = match DecodingKey::from_rsa_pem(pem) {
                    Ok(k) => (Algorithm::RS256, k),
                    Err(_) => match DecodingKey::from_ec_pem(pem) {
                        Ok(k) => (Algorithm::ES256, k),
                        Err(_) => {
                            return Err(AuthError::Key {
                                path: PathBuf::from("(public key)"),
                                reason: "not an RSA or EC public key in PEM".into(),
                            })
                        }
                    },
                };
                Some((
                    alg,
                    Verifier {
                        key,
                        validation: validation(alg),
                    },
                ))
            }
        };
        Ok(Self {
            hs256,
            public,
            anonymous,
        })
    }

    /// Whether any key is configured (tokens are verified).
    pub fn enabled(&self) -> bool {
        self.hs256.is_some() || self.public.is_some()
    }

    /// Whether connections without a token are accepted.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous
    }

    /// Verifies `token` (from [`token_from_request`]). Without a token: an anonymous identity
    /// if the policy allows it, else [`AuthError::Missing`]. When no key is configured a token
    /// cannot be verified, so it is ignored and the connection is anonymous.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty());
        let token = match token {
            Some(t) if self.enabled() => t,
            _ if self.anonymous => return Ok(Identity::anonymous()),
            _ => return Err(AuthError::Missing),
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // The header parsed as JSON but names an algorithm outside the JOSE set (e.g. none).
            ErrorKind::Json(_) if header_alg_is_unknown(token) => AuthError::WrongAlgorithm,
            _ => AuthError::Malformed,
        })?;
        // RFC 7515 §4.1.11: a recipient that does not understand every extension listed in
        // `crit` must reject the token. We implement none, and `[]` is invalid for producers.
        if header.crit.is_some() {
            return Err(AuthError::CriticalExtension);
        }
        let verifier = match (header.alg, &self.hs256, &self.public) {
            (Algorithm::HS256, Some(v), _) => v,
            (alg, _, Some((expected, v))) if alg == *expected => v,
            _ => return Err(AuthError::WrongAlgorithm),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
            .map_err(map_error)?;
        identity(data.claims)
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v
}

/// Whether the token's header is JSON whose `alg` is a string jsonwebtoken does not know.
fn header_alg_is_unknown(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("alg").is_some_and(|a| a.is_string()))
}

fn map_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.into_kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(c) => AuthError::InvalidClaims(format!("missing {c}")),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaims(format!("bad {c}")),
        ErrorKind::InvalidIssuer => AuthError::InvalidClaims("iss".into()),
        ErrorKind::InvalidAudience => AuthError::InvalidClaims("aud".into()),
        ErrorKind::InvalidSubject => AuthError::InvalidClaims("sub".into()),
        _ => AuthError::Malformed,
    }
}

/// Whether `user` is a user id a token can carry: 1 to [`MAX_USER_LEN`] bytes, no `*`, no
/// control character. The API applies the same rule to the users it addresses.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user.contains('*')
        && !user.chars().any(char::is_control)
}

fn identity(c: Claims) -> Result<Identity, AuthError> {
    if let Some(sub) = &c.sub {
        if !valid_user(sub) {
            return Err(AuthError::InvalidClaims(
                "sub must be 1 to 128 bytes without '*'".into(),
            ));
        }
    }
    for (name, list) in [("subscribe", &c.subscribe), ("publish", &c.publish)] {
        for p in list.iter().flatten() {
            Pattern::parse(p).map_err(|e| AuthError::InvalidClaims(format!("{name}: {e}")))?;
        }
    }
    Ok(Identity {
        user: c.sub.map(Arc::from),
        subscribe: c.subscribe,
        publish: c.publish,
        topics: c.topics,
    })
}

/// The token of an upgrade request: from `Authorization: Bearer <token>` if present (the
/// scheme is case-insensitive), else from the `token` query parameter (percent-decoded).
/// `query` is the part of the request target after `?`. Empty values count as absent.
pub fn token_from_request(query: Option<&str>, authorization: Option<&str>) -> Option<String> {
    if let Some(h) = authorization {
        let h = h.trim();
        if let Some((scheme, rest)) = h.split_once(' ') {
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
                return Some(rest.to_string());
            }
        }
    }
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Compares a presented API key with the configured `[api] key` in constant time (for keys of
/// equal length), so response timing does not leak the key.
pub fn api_key_matches(expected: &Secret, presented: &str) -> bool {
    let (a, b) = (expected.expose().as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
