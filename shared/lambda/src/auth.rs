//! Caller authentication: an HS256 JWT from the `alto_admin` cookie or `Authorization: Bearer`.
//! The algorithm is pinned, `exp` and `sub` are required, and `sub` (a UUID) is the caller's user id.

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// The cookie the dashboard sets.
pub const AUTH_COOKIE: &str = "alto_admin";

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
}

#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// What is read from a token: lenient, so a missing claim is reported by the validation as such.
#[derive(Debug, Deserialize)]
struct ReadClaims {
    #[serde(default)]
    sub: Option<String>,
}

/// Verifies caller tokens. Build it once per cold start.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &"HS256")
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Clock skew tolerated on `exp`, in seconds.
    pub const LEEWAY_SECS: u64 = 30;

    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = Self::LEEWAY_SECS;
        JwtVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies one token.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<ReadClaims>(token, &self.key, &self.validation).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (exp, sub)"
                    }
                    _ => "the token is malformed",
                };
                ApiError::unauthorized(format!("Authentication failed: {why}."))
            },
        )?;
        let sub = data.claims.sub.unwrap_or_default();
        let user_id = Uuid::parse_str(&sub).map_err(|_| {
            ApiError::unauthorized("Authentication failed: the token's subject is not a user id.")
        })?;
        Ok(Caller { user_id })
    }

    /// Authenticates a request from its headers (`Authorization: Bearer` first, then the cookie).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer_token(headers)
            .or_else(|| cookie_value(headers, AUTH_COOKIE))
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "Authentication required: send a JWT in the `{AUTH_COOKIE}` cookie or an \
                     `Authorization: Bearer` header."
                ))
            })?;
        self.verify(&token)
    }
}

/// Mints a caller token (for the local stack and tests).
pub fn mint_token(
    secret: &str,
    user_id: Uuid,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: user_id.to_string(),
            exp,
        },
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The value of cookie `name` from any `Cookie` header (API Gateway may send several).
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const SECRET: &str = "test-secret-at-least-32-bytes-long!!";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn accepts_bearer_and_cookie() {
        let user = Uuid::new_v4();
        let token = mint_token(SECRET, user, 60).unwrap();
        let v = JwtVerifier::new(SECRET);
        let bearer = format!("Bearer {token}");
        assert_eq!(
            v.authenticate(&headers(&[("authorization", &bearer)]))
                .unwrap()
                .user_id,
            user
        );
        let cookie = format!("theme=dark; {AUTH_COOKIE}={token}; other=1");
        assert_eq!(
            v.authenticate(&headers(&[("cookie", &cookie)]))
                .unwrap()
                .user_id,
            user
        );
        // Several Cookie headers, the token in the second.
        let second = format!("{AUTH_COOKIE}={token}");
        let h = headers(&[("cookie", "a=b"), ("cookie", &second)]);
        assert_eq!(v.authenticate(&h).unwrap().user_id, user);
    }

    #[test]
    fn refuses_missing_expired_forged_and_foreign_tokens() {
        let v = JwtVerifier::new(SECRET);
        let user = Uuid::new_v4();
        assert_eq!(
            v.authenticate(&HeaderMap::new())
                .unwrap_err()
                .status()
                .as_u16(),
            401
        );

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: user.to_string(),
                exp: jsonwebtoken::get_current_timestamp() - 3600,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&expired).unwrap_err().detail().contains("expired"));

        let other_key = mint_token("another-secret-another-secret-!!", user, 60).unwrap();
        assert!(
            v.verify(&other_key)
                .unwrap_err()
                .detail()
                .contains("signature")
        );

        // HS384 with the right secret: the algorithm is pinned.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &Claims {
                sub: user.to_string(),
                exp: jsonwebtoken::get_current_timestamp() + 60,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs384).unwrap_err().status().as_u16(), 401);

        // alg: none, unsigned.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg":"none","typ":"JWT"})),
            b64(&serde_json::json!({"sub": user.to_string(), "exp": 4_000_000_000u64}))
        );
        assert_eq!(v.verify(&none).unwrap_err().status().as_u16(), 401);

        // No exp.
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp {
                sub: user.to_string(),
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&no_exp).unwrap_err().detail().contains("claim"));

        // sub that is not a UUID.
        let bad_sub = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "admin".into(),
                exp: jsonwebtoken::get_current_timestamp() + 60,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&bad_sub).unwrap_err().detail().contains("subject"));

        assert_eq!(v.verify("not-a-jwt").unwrap_err().status().as_u16(), 401);
        assert!(
            v.authenticate(&headers(&[("authorization", "Basic abc")]))
                .is_err()
        );
    }
}
