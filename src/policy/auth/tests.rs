//! Unit tests of the JWT verifier: algorithms, keys, claims, expiry and the error codes.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::sync::OnceLock;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// An RSA key pair (private PKCS#8 PEM, public SPKI PEM), generated once per test run.
fn rsa_keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).expect("rsa keygen");
        let public = rsa::RsaPublicKey::from(&key);
        (
            key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
            public.to_public_key_pem(LineEnding::LF).expect("pem"),
        )
    })
}

/// A fresh P-256 key pair (private PKCS#8 PEM, public SPKI PEM).
fn ec_keys() -> (String, String) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    (
        key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
        key.public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    )
}

fn sign(alg: Algorithm, claims: &serde_json::Value, key: &EncodingKey) -> String {
    encode(&Header::new(alg), claims, key).expect("encode")
}

fn hs_token(claims: serde_json::Value, secret: &[u8]) -> String {
    sign(Algorithm::HS256, &claims, &EncodingKey::from_secret(secret))
}

fn hs(claims: serde_json::Value) -> String {
    hs_token(claims, SECRET.as_bytes())
}

fn run(a: &Authenticator, token: &str) -> Result<Identity, AuthError> {
    a.authenticate(Some(token))
}

fn pk(pem: &[u8]) -> Authenticator {
    Authenticator::from_keys(None, Some(pem), false).expect("auth")
}

fn hs_auth(anonymous: bool) -> Authenticator {
    Authenticator::from_keys(Some(&Secret::new(SECRET)), None, anonymous).expect("auth")
}

#[test]
fn hs256_valid_token_gives_identity_and_claims() {
    let t = hs(
        json!({"sub": "alice", "exp": now() + 60, "subscribe": ["chat:*"], "publish": ["chat:a"]}),
    );
    let id = hs_auth(false).authenticate(Some(&t)).expect("valid");
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.subscribe, Some(vec!["chat:*".to_string()]));
    assert_eq!(id.publish, Some(vec!["chat:a".to_string()]));
    let t = hs(json!({"exp": now() + 60}));
    assert_eq!(
        hs_auth(false).authenticate(Some(&t)),
        Ok(Identity::anonymous())
    );
}

#[test]
fn refuses_tokens_with_critical_extensions() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let claims = json!({"sub": "alice", "exp": now() + 60});
    for crit in [vec!["b64".to_string()], vec!["exp".into()], vec![]] {
        let mut h = Header::new(Algorithm::HS256);
        h.crit = Some(crit.clone());
        let t = encode(&h, &claims, &key).expect("encode");
        assert_eq!(
            run(&hs_auth(false), &t),
            Err(AuthError::CriticalExtension),
            "crit {crit:?}"
        );
    }
    // The same token without `crit` verifies.
    assert!(run(&hs_auth(false), &hs(claims)).is_ok());
}

#[test]
fn header_wins_over_query_token() {
    assert_eq!(
        token_from_request(Some("token=q"), Some("Bearer h")).as_deref(),
        Some("h")
    );
    assert_eq!(
        token_from_request(Some("token=q"), Some("Basic abc")).as_deref(),
        Some("q")
    );
    assert_eq!(
        token_from_request(Some("token=q"), None).as_deref(),
        Some("q")
    );
}

#[test]
fn refuses_expired_immature_unsigned_and_forged_tokens() {
    let a = hs_auth(true);
    let expired = hs(json!({"sub": "a", "exp": now() - 3600}));
    assert_eq!(run(&a, &expired), Err(AuthError::Expired));
    let early = hs(json!({"sub": "a", "exp": now() + 7200, "nbf": now() + 3600}));
    assert_eq!(run(&a, &early), Err(AuthError::NotYetValid));
    let no_exp = hs(json!({"sub": "a"}));
    assert!(matches!(run(&a, &no_exp), Err(AuthError::InvalidClaims(_))));
    let forged = hs_token(
        json!({"sub": "a", "exp": now() + 60}),
        b"another secret of enough length!!",
    );
    assert_eq!(run(&a, &forged), Err(AuthError::BadSignature));
    for bad in ["x", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert_eq!(
            a.authenticate(Some(bad)),
            Err(AuthError::Malformed),
            "{bad}"
        );
    }
    assert_eq!(
        a.authenticate(Some(&"a".repeat(MAX_TOKEN_LEN + 1))),
        Err(AuthError::Malformed)
    );
    // alg: none, unsigned.
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "a", "exp": now() + 60}))
    );
    assert_eq!(run(&a, &none), Err(AuthError::WrongAlgorithm));
    // Tampered payload keeps the old signature.
    let good = hs(json!({"sub": "a", "exp": now() + 60}));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(json!({"sub": "admin", "exp": now() + 60})),
        parts[2]
    );
    assert_eq!(run(&a, &tampered), Err(AuthError::BadSignature));
    // Other HMAC algorithms are not accepted either.
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &json!({"sub": "a", "exp": now() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    assert_eq!(run(&a, &hs384), Err(AuthError::WrongAlgorithm));
}

#[test]
fn rs256_verifies_and_resists_algorithm_confusion() {
    let (private, public) = rsa_keys();
    let claims = json!({"sub": "bob", "exp": now() + 60});
    let rs = sign(
        Algorithm::RS256,
        &claims,
        &EncodingKey::from_rsa_pem(private.as_bytes()).expect("key"),
    );
    let a = pk(public.as_bytes());
    assert_eq!(run(&a, &rs).expect("valid").user.as_deref(), Some("bob"));
    // HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
    let confused = hs_token(claims.clone(), public.as_bytes());
    assert_eq!(run(&a, &confused), Err(AuthError::WrongAlgorithm));
    // With a secret configured too, HS256 is checked against the secret only.
    let both = Authenticator::from_keys(Some(&Secret::new(SECRET)), Some(public.as_bytes()), false)
        .expect("auth");
    assert_eq!(run(&both, &confused), Err(AuthError::BadSignature));
    assert!(run(&both, &rs).is_ok());
    // An RS256 token against an EC key is refused.
    let (_, ec_public) = ec_keys();
    let ec = pk(ec_public.as_bytes());
    assert_eq!(run(&ec, &rs), Err(AuthError::WrongAlgorithm));
}

#[test]
fn es256_verifies_and_wrong_key_fails() {
    let (private, public) = ec_keys();
    let (_, other_public) = ec_keys();
    let claims = json!({"sub": "carol", "exp": now() + 60});
    let es = sign(
        Algorithm::ES256,
        &claims,
        &EncodingKey::from_ec_pem(private.as_bytes()).expect("key"),
    );
    let a = pk(public.as_bytes());
    assert_eq!(run(&a, &es).expect("valid").user.as_deref(), Some("carol"));
    let other = pk(other_public.as_bytes());
    assert_eq!(run(&other, &es), Err(AuthError::BadSignature));
    assert!(matches!(
        Authenticator::from_keys(None, Some(b"not a pem"), false),
        Err(AuthError::Key { .. })
    ));
}

#[test]
fn anonymous_policy_follows_settings() {
    let mut s = AuthSettings::default();
    let open = Authenticator::new(&s).expect("auth");
    assert_eq!(open.authenticate(None), Ok(Identity::anonymous()));
    // Without a key a token cannot be verified: ignored, the connection is anonymous.
    assert_eq!(
        open.authenticate(Some("whatever")),
        Ok(Identity::anonymous())
    );
    s.jwt_secret = Some(Secret::new(SECRET));
    let closed = Authenticator::new(&s).expect("auth");
    assert_eq!(closed.authenticate(None), Err(AuthError::Missing));
    assert_eq!(closed.authenticate(Some("")), Err(AuthError::Missing));
    s.anonymous = Some(true);
    assert_eq!(
        Authenticator::new(&s).expect("auth").authenticate(None),
        Ok(Identity::anonymous())
    );
    s.jwt_public_key_file = Some("/nonexistent/key.pem".into());
    let err = Authenticator::new(&s).expect_err("missing file");
    assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
    assert_eq!(err.http_status(), 500);
}

#[test]
fn issuer_audience_and_claim_checks() {
    let s = AuthSettings {
        jwt_secret: Some(Secret::new(SECRET)),
        issuer: Some("idp".into()),
        audience: Some("hub".into()),
        ..Default::default()
    };
    let a = Authenticator::new(&s).expect("auth");
    let ok = hs(json!({"exp": now() + 60, "iss": "idp", "aud": "hub"}));
    assert!(run(&a, &ok).is_ok());
    let wrong = hs(json!({"exp": now() + 60, "iss": "evil", "aud": "hub"}));
    assert_eq!(run(&a, &wrong), Err(AuthError::InvalidClaims("iss".into())));
    let missing = hs(json!({"exp": now() + 60, "iss": "idp"}));
    assert!(matches!(
        run(&a, &missing),
        Err(AuthError::InvalidClaims(_))
    ));
    let b = hs_auth(false);
    for claims in [
        json!({"exp": now() + 60, "sub": ""}),
        json!({"exp": now() + 60, "sub": "a*"}),
        json!({"exp": now() + 60, "subscribe": ["a*b"]}),
    ] {
        let t = hs_token(claims, SECRET.as_bytes());
        assert!(matches!(run(&b, &t), Err(AuthError::InvalidClaims(_))));
    }
    let t = hs(json!({"exp": now() + 60, "publish": "not-a-list"}));
    assert_eq!(run(&b, &t), Err(AuthError::Malformed));
    assert_eq!(AuthError::Expired.http_status(), 401);
}

#[test]
fn token_is_taken_from_header_then_query() {
    assert_eq!(
        token_from_request(Some("a=1&token=abc%2Edef"), None).as_deref(),
        Some("abc.def")
    );
    assert_eq!(
        token_from_request(Some("token=q"), Some("Bearer h")).as_deref(),
        Some("h")
    );
    assert_eq!(
        token_from_request(Some("token=q"), Some("bearer  h ")).as_deref(),
        Some("h")
    );
    assert_eq!(
        token_from_request(Some("token=q"), Some("Basic xyz")).as_deref(),
        Some("q")
    );
    assert_eq!(token_from_request(Some("token="), Some("Bearer ")), None);
    assert_eq!(token_from_request(Some("tokens=x&xtoken=y"), None), None);
    assert_eq!(token_from_request(Some("token=%FF"), None), None);
    assert_eq!(token_from_request(None, None), None);
}

#[test]
fn api_key_comparison() {
    let k = Secret::new("key-123");
    assert!(api_key_matches(&k, "key-123"));
    assert!(!api_key_matches(&k, "key-124"));
    assert!(!api_key_matches(&k, "key-12"));
    assert_eq!(format!("{k:?}"), "\"***\"");
}
