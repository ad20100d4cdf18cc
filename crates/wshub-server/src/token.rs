//! Token verification: HS256 JWTs signed with the server's secret (docs/PROTOCOL.md, "Tokens").
//!
//! [`TokenVerifier::verify`] checks the signature and the claims and returns the
//! [`Claims`]; only `sub` is required, and `exp` is enforced when present, with no leeway
//! (a token is valid up to and including its `exp` second). What a valid token permits is
//! [`may_subscribe`] and [`may_publish`]. Errors say which of the four failures of
//! docs/PROTOCOL.md happened; all are answered `401 unauthorized` before the upgrade, and an
//! expiry during a live connection closes it with 1008 (schedule it from
//! [`Claims::expires_at`]).

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use wshub_protocol::{Claims, CloseCode, ErrorCode};

/// Why a connection's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token: neither an `Authorization` header nor a non-empty `token` parameter.
    #[error("token is missing")]
    Missing,
    /// Not a JWT, an `Authorization` header that is not `Bearer <token>`, or claims of the
    /// wrong shape (no string `sub`, a non-numeric `exp`, `rooms` not a list of strings).
    #[error("token is malformed")]
    Malformed,
    /// The signature does not match the secret, or the token is not signed with HS256.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// The server expects an audience or an issuer (`--jwt-audience`, `--jwt-issuer`) and
    /// the token's `aud` or `iss` is absent or another.
    #[error("token is for another audience or from another issuer")]
    WrongAudienceOrIssuer,
}

impl TokenError {
    /// The protocol error code for every token failure: `unauthorized` (HTTP 401).
    pub fn code(self) -> ErrorCode {
        ErrorCode::Unauthorized
    }

    /// The close code for a live connection whose token stopped being valid: 1008.
    pub fn close_code(self) -> CloseCode {
        CloseCode::POLICY_VIOLATION
    }
}

/// Verifies HS256 tokens against one secret.
///
/// Build it once at start-up and share it; verifying takes `&self`.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret` (the raw bytes of the configured
    /// secret). An empty secret is accepted here; configuration should refuse it.
    pub fn new(secret: &[u8]) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        // docs/PROTOCOL.md: `sub` is required, `exp` optional but enforced when present.
        validation.set_required_spec_claims(&["sub"]);
        validation.validate_exp = true;
        validation.leeway = 0;
        // Without `--jwt-audience`, a token that names an audience is still for us.
        validation.validate_aud = false;
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The same verifier, also requiring the token's `aud` to name `audience` and its `iss`
    /// to be `issuer`, each when given.
    pub fn expecting(mut self, audience: Option<&str>, issuer: Option<&str>) -> TokenVerifier {
        let mut required = vec!["sub"];
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            required.push("aud");
        }
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        self.validation.set_required_spec_claims(&required);
        self
    }

    /// Checks `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => Err(match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                    TokenError::WrongAudienceOrIssuer
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" || claim == "iss" => {
                    TokenError::WrongAudienceOrIssuer
                }
                _ => TokenError::Malformed,
            }),
        }
    }

    /// Picks the token from a request's credentials ([`credentials`]) and verifies it.
    pub fn verify_request(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Claims, TokenError> {
        self.verify(credentials(authorization, query_token)?)
    }
}

impl fmt::Debug for TokenVerifier {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &"HS256")
            .finish_non_exhaustive()
    }
}

/// The token a request carries: the `Authorization: Bearer <token>` header when present
/// (it wins over the query parameter), else the `token` query parameter (the only way for
/// browsers).
///
/// `authorization` is the header's value; `query_token` the decoded `token` parameter. A
/// header that is present but not a `Bearer` credential is [`TokenError::Malformed`]
/// rather than ignored, so a misconfigured client hears about it.
pub fn credentials<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Result<&'a str, TokenError> {
    if let Some(header) = authorization {
        let header = header.trim();
        // RFC 9110 §11.1: the scheme is case-insensitive; one or more spaces follow it.
        let (scheme, token) = header.split_once(' ').ok_or(TokenError::Malformed)?;
        let token = token.trim_start();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(TokenError::Malformed);
        }
        return Ok(token);
    }
    match query_token {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(TokenError::Missing),
    }
}

/// Whether a connection may subscribe to `room` (and read its presence and history).
/// `None` is an anonymous connection on a server without a secret: everything is allowed.
pub fn may_subscribe(claims: Option<&Claims>, room: &str) -> bool {
    claims.is_none_or(|claims| claims.may_subscribe(room))
}

/// Whether a connection may `broadcast`. `None` is an anonymous connection on a server
/// without a secret: everything is allowed; with tokens, only a token granting it may.
pub fn may_broadcast(claims: Option<&Claims>) -> bool {
    claims.is_none_or(Claims::may_broadcast)
}

/// Whether a connection may `send` to a connection of `user` (`None` when anonymous or not
/// on this node). `None` claims: a server without a secret allows everything.
pub fn may_send_to(claims: Option<&Claims>, user: Option<&str>) -> bool {
    claims.is_none_or(|claims| claims.may_send_to(user))
}

/// Whether a connection may publish to `room`. `None` is an anonymous connection on a
/// server without a secret: everything is allowed.
pub fn may_publish(claims: Option<&Claims>, room: &str) -> bool {
    claims.is_none_or(|claims| claims.may_publish(room))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn sign(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET)
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let strict = verifier().expecting(Some("chat"), Some("auth.example"));
        let good = sign(&json!({"sub": "a", "aud": "chat", "iss": "auth.example"}));
        assert_eq!(strict.verify(&good).map(|c| c.sub), Ok("a".to_owned()));
        let listed = sign(&json!({"sub": "a", "aud": ["other", "chat"], "iss": "auth.example"}));
        assert!(strict.verify(&listed).is_ok());
        for claims in [
            json!({"sub": "a", "aud": "other", "iss": "auth.example"}),
            json!({"sub": "a", "aud": "chat", "iss": "evil.example"}),
            json!({"sub": "a", "iss": "auth.example"}),
            json!({"sub": "a", "aud": "chat"}),
        ] {
            assert_eq!(
                strict.verify(&sign(&claims)),
                Err(TokenError::WrongAudienceOrIssuer),
                "{claims}"
            );
        }
        // Unconfigured, neither is looked at.
        assert!(
            verifier()
                .verify(&sign(&json!({"sub": "a", "aud": "x", "iss": "y"})))
                .is_ok()
        );
    }

    #[test]
    fn valid_tokens() {
        let claims = verifier().verify(&sign(&json!({"sub": "alice"}))).unwrap();
        assert_eq!(claims, Claims::new("alice"));

        let exp = now() + 60;
        let token = sign(&json!({
            "sub": "bob", "exp": exp, "iat": now(), "aud": "somebody",
            "rooms": ["chat:*"], "publish": ["chat:lobby"]
        }));
        let claims = verifier().verify(&token).unwrap();
        assert_eq!(claims.sub, "bob");
        assert_eq!(claims.exp, Some(exp));
        assert!(claims.may_subscribe("chat:x"));
        assert!(!claims.may_publish("chat:x"));
        assert!(claims.may_publish("chat:lobby"));
    }

    #[test]
    fn expiry_has_no_leeway() {
        let expired = sign(&json!({"sub": "a", "exp": now() - 1}));
        assert_eq!(verifier().verify(&expired), Err(TokenError::Expired));
        let long_ago = sign(&json!({"sub": "a", "exp": 0}));
        assert_eq!(verifier().verify(&long_ago), Err(TokenError::Expired));
        let later = sign(&json!({"sub": "a", "exp": now() + 5}));
        assert!(verifier().verify(&later).is_ok());
    }

    #[test]
    fn bad_signatures() {
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        assert_eq!(verifier().verify(&other), Err(TokenError::BadSignature));

        // Same secret, another algorithm: refused (only HS256 is accepted).
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(verifier().verify(&hs512), Err(TokenError::BadSignature));

        // A tampered payload.
        let token = sign(&json!({"sub": "a"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = sign(&json!({"sub": "admin"}));
        let forged_payload = forged.split('.').nth(1).unwrap();
        parts[1] = forged_payload;
        let tampered = parts.join(".");
        assert_eq!(verifier().verify(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        for token in [
            "nope",
            "a.b.c",
            "a.b",
            "...",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
        ] {
            assert_eq!(
                verifier().verify(token),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
        // Claims of the wrong shape.
        for claims in [
            json!({"exp": now() + 60}),
            json!({"sub": 5}),
            json!({"sub": "a", "exp": "soon"}),
            json!({"sub": "a", "rooms": "chat:*"}),
            json!({"sub": "a", "publish": [1]}),
        ] {
            assert_eq!(
                verifier().verify(&sign(&claims)),
                Err(TokenError::Malformed),
                "{claims}"
            );
        }
        assert_eq!(verifier().verify(""), Err(TokenError::Missing));
    }

    #[test]
    fn header_wins_over_query() {
        assert_eq!(credentials(Some("Bearer h"), Some("q")), Ok("h"));
        assert_eq!(credentials(Some("bearer   h"), None), Ok("h"));
        assert_eq!(credentials(Some("BEARER h"), None), Ok("h"));
        assert_eq!(credentials(None, Some("q")), Ok("q"));
        assert_eq!(credentials(None, None), Err(TokenError::Missing));
        assert_eq!(credentials(None, Some("")), Err(TokenError::Missing));
        assert_eq!(
            credentials(Some("Basic xyz"), Some("q")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            credentials(Some("Bearer"), None),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            credentials(Some("Bearer   "), None),
            Err(TokenError::Malformed)
        );
        assert_eq!(credentials(Some("h"), None), Err(TokenError::Malformed));
    }

    #[test]
    fn verify_request() {
        let token = sign(&json!({"sub": "a"}));
        let header = format!("Bearer {token}");
        assert!(
            verifier()
                .verify_request(Some(&header), Some("junk"))
                .is_ok()
        );
        assert!(verifier().verify_request(None, Some(&token)).is_ok());
        assert_eq!(
            verifier().verify_request(Some("Bearer junk"), Some(&token)),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verifier().verify_request(None, None),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn permissions() {
        let mut claims = Claims::new("u");
        claims.rooms = Some(vec!["chat:*".into()]);
        assert!(may_subscribe(None, "anything"));
        assert!(may_publish(None, "anything"));
        assert!(may_subscribe(Some(&claims), "chat:a"));
        assert!(!may_subscribe(Some(&claims), "admin"));
        assert!(may_publish(Some(&claims), "chat:a"));
        assert!(!may_publish(Some(&claims), "admin"));
    }

    #[test]
    fn errors_map_to_unauthorized_and_1008() {
        for err in [
            TokenError::Missing,
            TokenError::Malformed,
            TokenError::BadSignature,
            TokenError::Expired,
        ] {
            assert_eq!(err.code(), ErrorCode::Unauthorized);
            assert_eq!(err.close_code(), CloseCode::POLICY_VIOLATION);
        }
        assert_eq!(TokenError::Expired.to_string(), "token has expired");
        assert!(!format!("{:?}", verifier()).contains("test-secret"));
    }
}
