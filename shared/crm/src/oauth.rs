//! OAuth 2.0 authorization-code flows, on the `oauth2` crate with our own HTTP client (the one
//! reqwest of the workspace, see [`CrmHttp`]). Each CRM that connects by OAuth describes how its flow
//! differs from the standard one in an [`OAuthFlavour`] (see its folder); client authentication is
//! HTTP Basic for all of them, and the legacy `{"success":true,"data":{…}}` token answer of Follow Up
//! Boss is read too.
//!
//! Token requests are not idempotent (a code is single-use; refresh tokens may rotate), so they
//! are retried only on 429 and on connection failures where nothing was sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use crmsync_domain::Provider;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AccessToken, AsyncHttpClient, AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, ResponseType, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::CrmError;
use crate::transport::{Call, CrmHttp};

/// How a CRM's authorization-code flow differs from the standard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthFlavour {
    /// The `response_type` of the authorize URL (the standard `code`, or Follow Up Boss's `auth_code`).
    pub response_type: &'static str,
    /// Whether the configured scopes are sent.
    pub scopes: bool,
    /// Whether a PKCE S256 challenge may be sent (and its verifier with the code exchange).
    pub pkce: bool,
    /// Whether the code exchange must carry `state` again (the token request fails without it).
    pub state_in_token_request: bool,
}

/// The OAuth client settings of one provider.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    pub provider: Provider,
    pub flavour: OAuthFlavour,
    pub auth_url: String,
    pub token_url: String,
    pub redirect_uri: String,
    pub client_id: String,
    pub client_secret: String,
    /// Space-separated scopes; empty for none.
    pub scope: String,
    /// Send a PKCE S256 challenge (where the flavour allows it).
    pub pkce: bool,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("provider", &self.provider)
            .field("flavour", &self.flavour)
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("redirect_uri", &self.redirect_uri)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scope", &self.scope)
            .field("pkce", &self.pkce)
            .finish()
    }
}

impl OAuthConfig {
    /// Whether a PKCE challenge is sent: configured on and allowed by the CRM.
    pub fn uses_pkce(&self) -> bool {
        self.pkce && self.flavour.pkce
    }
}

/// Tokens from a code exchange or a refresh. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A fresh PKCE pair `(verifier, S256 challenge)`: 32 random bytes, URL-safe base64.
pub fn pkce_pair() -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (verifier.secret().clone(), challenge.as_str().to_owned())
}

/// A fresh `state`: 256 random bits, URL-safe base64 without padding.
pub fn new_state() -> String {
    CsrfToken::new_random_len(32).secret().clone()
}

/// The URL to send the user to, in the CRM's flavour: its `response_type`, the configured scopes
/// where it takes them, and the S256 `pkce_challenge` when PKCE is on and one is given.
///
/// A configured URL that does not parse cannot be repaired here: it is logged and returned as
/// configured.
pub fn authorize_url(cfg: &OAuthConfig, state: &str, pkce_challenge: Option<&str>) -> String {
    let provider = cfg.provider;
    let client = match client(cfg) {
        Ok(c) => c,
        Err(_) => {
            tracing::error!(
                provider = provider.as_str(),
                "OAuth URLs are not valid; check the configuration"
            );
            return cfg.auth_url.clone();
        }
    };
    let state = state.to_owned();
    let flavour = cfg.flavour;
    let mut req = client.authorize_url(|| CsrfToken::new(state));
    if flavour.response_type != "code" {
        req = req.set_response_type(&ResponseType::new(flavour.response_type.into()));
    }
    if flavour.scopes {
        req = req.add_scopes(cfg.scope.split_whitespace().map(|s| Scope::new(s.into())));
    }
    if cfg.uses_pkce()
        && let Some(challenge) = pkce_challenge
    {
        req = req
            .add_extra_param("code_challenge", challenge)
            .add_extra_param("code_challenge_method", "S256");
    }
    req.url().0.into()
}

/// Exchanges an authorization code, with `state` in the body where the flavour asks for it and the
/// PKCE verifier when one is given and the flavour takes PKCE.
pub async fn exchange_code(
    http: &CrmHttp,
    cfg: &OAuthConfig,
    code: &str,
    state: &str,
    pkce_verifier: Option<&str>,
) -> Result<TokenSet, CrmError> {
    let client = client(cfg)?;
    let mut req = client.exchange_code(AuthorizationCode::new(code.to_owned()));
    if cfg.flavour.state_in_token_request {
        req = req.add_extra_param("state", state);
    }
    if cfg.flavour.pkce
        && let Some(v) = pkce_verifier
    {
        req = req.set_pkce_verifier(PkceCodeVerifier::new(v.to_owned()));
    }
    let transport = Transport::new(http, cfg.provider);
    let answer = req.request_async(&transport).await;
    answer
        .map(TokenSet::from)
        .map_err(|e| token_error(cfg.provider, e, transport.status()))
}

/// Exchanges a refresh token. When the answer carries no new refresh token, the one given is
/// kept in the returned set (store what comes back; rotation is unconfirmed for FUB).
pub async fn refresh(
    http: &CrmHttp,
    cfg: &OAuthConfig,
    refresh_token: &str,
) -> Result<TokenSet, CrmError> {
    let client = client(cfg)?;
    let rt = RefreshToken::new(refresh_token.to_owned());
    let transport = Transport::new(http, cfg.provider);
    let answer = client
        .exchange_refresh_token(&rt)
        .request_async(&transport)
        .await;
    let mut set = answer
        .map(TokenSet::from)
        .map_err(|e| token_error(cfg.provider, e, transport.status()))?;
    if set.refresh_token.is_none() {
        set.refresh_token = Some(refresh_token.to_owned());
    }
    Ok(set)
}

type OAuthClient = Client<
    BasicErrorResponse,
    CrmTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The `oauth2` client of a configuration (HTTP Basic client authentication, the default).
fn client(cfg: &OAuthConfig) -> Result<OAuthClient, CrmError> {
    let invalid = |what: &str| {
        CrmError::Transport(format!(
            "the configured {} OAuth {what} is not a valid URL",
            cfg.provider.label()
        ))
    };
    let auth = AuthUrl::new(cfg.auth_url.clone()).map_err(|_| invalid("authorize URL"))?;
    let token = TokenUrl::new(cfg.token_url.clone()).map_err(|_| invalid("token URL"))?;
    let redirect =
        RedirectUrl::new(cfg.redirect_uri.clone()).map_err(|_| invalid("redirect URI"))?;
    Ok(Client::new(ClientId::new(cfg.client_id.clone()))
        .set_client_secret(ClientSecret::new(cfg.client_secret.clone()))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect))
}

/// What a failed token request means to a user.
fn token_error(
    provider: Provider,
    e: RequestTokenError<CrmError, BasicErrorResponse>,
    status: Option<u16>,
) -> CrmError {
    let label = provider.label();
    let status = status.unwrap_or(400);
    match e {
        RequestTokenError::Request(e) => e,
        // The code or refresh token was refused: the user has to connect again.
        RequestTokenError::ServerResponse(r)
            if matches!(r.error(), BasicErrorResponseType::InvalidGrant) =>
        {
            tracing::warn!(
                provider = provider.as_str(),
                status,
                code = "invalid_grant",
                "OAuth grant refused"
            );
            CrmError::InvalidCredentials
        }
        RequestTokenError::ServerResponse(r) => {
            let code: String = r
                .error()
                .to_string()
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
            tracing::warn!(
                provider = provider.as_str(),
                status,
                code = code.as_str(),
                "OAuth token request refused"
            );
            CrmError::Upstream {
                status,
                message: format!("{label} refused the token request ({code})"),
            }
        }
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) if status == 200 => {
            CrmError::Decode(format!(
                "{label} answered the token request without a token"
            ))
        }
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
            tracing::warn!(
                provider = provider.as_str(),
                status,
                "OAuth token request failed"
            );
            CrmError::Upstream {
                status,
                message: format!("{label} refused the token request"),
            }
        }
    }
}

/// `oauth2`'s HTTP client: our reqwest client through the shared retry loop. Answers 5xx and
/// 429 become errors here; 4xx answers go back to `oauth2`, which reads the standard
/// `{"error": …}` body.
struct Transport {
    // Owned (a cheap clone): a borrowed client makes oauth2's future not `Send` for every lifetime,
    // which async callers (Lambda handlers) need.
    http: CrmHttp,
    provider: Provider,
    /// The HTTP status of the last answer (0 before any).
    status: AtomicU16,
}

impl Transport {
    fn new(http: &CrmHttp, provider: Provider) -> Self {
        Transport {
            http: http.clone(),
            provider,
            status: AtomicU16::new(0),
        }
    }

    fn status(&self) -> Option<u16> {
        Some(self.status.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, CrmError> {
        let (parts, body) = request.into_parts();
        let body = Bytes::from(body);
        let url = parts.uri.to_string();
        let client = self.http.client()?;
        let build = || {
            client
                .request(parts.method.clone(), url.as_str())
                .headers(parts.headers.clone())
                .body(body.clone())
                .build()
                .map_err(|_| {
                    CrmError::Transport(format!(
                        "the {} token request could not be built",
                        self.provider.label()
                    ))
                })
        };
        let call = Call {
            provider: self.provider,
            route: "oauth.token",
            idempotent: false,
            pacer: None,
            page: false,
        };
        let reply = self.http.execute(&call, &build).await?;
        self.status.store(reply.status.as_u16(), Ordering::Relaxed);
        if reply.status.is_server_error() {
            return Err(CrmError::Upstream {
                status: reply.status.as_u16(),
                message: format!(
                    "{} could not answer the token request",
                    self.provider.label()
                ),
            });
        }
        let mut response = http::Response::new(reply.body.to_vec());
        *response.status_mut() = reply.status;
        *response.headers_mut() = reply.headers;
        // A JSON body is read as JSON whatever content type it was labelled with.
        if reply.json.is_some() {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(response)
    }
}

impl<'c> AsyncHttpClient<'c> for Transport {
    type Error = CrmError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, CrmError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// A token answer in the standard shape or in FUB's legacy `{"success":true,"data":{…}}` shape,
/// with `expires_in` as a number or numeric string (legacy: `ttl`, or an absolute
/// `expires_at`).
#[derive(Debug, Serialize)]
struct CrmTokenResponse {
    access_token: AccessToken,
    token_type: BasicTokenType,
    expires_in: Option<u64>,
    refresh_token: Option<RefreshToken>,
    scopes: Option<Vec<Scope>>,
}

impl<'de> Deserialize<'de> for CrmTokenResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let root = Value::deserialize(d)?;
        let v = match root.get("data") {
            Some(data) if root.get("access_token").is_none() && data.is_object() => data,
            _ => &root,
        };
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let access_token =
            text("access_token").ok_or_else(|| D::Error::custom("access_token is missing"))?;
        let expires_in = ["expires_in", "ttl"]
            .iter()
            .find_map(|k| v.get(*k).and_then(seconds))
            .or_else(|| v.get("expires_at").and_then(seconds_until));
        Ok(CrmTokenResponse {
            access_token: AccessToken::new(access_token),
            token_type: match text("token_type")
                .map(|t| t.to_ascii_lowercase())
                .as_deref()
            {
                None | Some("bearer") => BasicTokenType::Bearer,
                Some("mac") => BasicTokenType::Mac,
                Some(other) => BasicTokenType::Extension(other.to_owned()),
            },
            expires_in,
            refresh_token: text("refresh_token").map(RefreshToken::new),
            scopes: text("scope")
                .map(|s| s.split_whitespace().map(|x| Scope::new(x.into())).collect()),
        })
    }
}

/// A non-negative number of seconds, as a JSON number or numeric string.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64),
        _ => None,
    }
}

/// Seconds from now until an absolute expiry: epoch seconds, epoch milliseconds or RFC 3339.
fn seconds_until(v: &Value) -> Option<u64> {
    let at = match v {
        Value::String(s) if s.contains('-') => DateTime::parse_from_rfc3339(s.trim())
            .ok()?
            .with_timezone(&Utc),
        other => {
            let n = seconds(other)?;
            let n = if n > 1_000_000_000_000 { n / 1000 } else { n };
            DateTime::from_timestamp(i64::try_from(n).ok()?, 0)?
        }
    };
    u64::try_from((at - Utc::now()).num_seconds()).ok()
}

impl TokenResponse for CrmTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

impl From<CrmTokenResponse> for TokenSet {
    fn from(r: CrmTokenResponse) -> Self {
        let expires_at = r
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| Utc::now().checked_add_signed(d));
        TokenSet {
            access_token: r.access_token.into_secret(),
            refresh_token: r.refresh_token.map(RefreshToken::into_secret),
            expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CrmTokenResponse, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn standard_and_legacy_token_shapes_are_read() {
        let std = parse(json!({"access_token": "a1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "r1"})).unwrap();
        assert_eq!(std.access_token().secret(), "a1");
        assert_eq!(std.expires_in(), Some(Duration::from_secs(3600)));
        assert_eq!(std.refresh_token().map(|r| r.secret().as_str()), Some("r1"));

        let legacy = parse(
            json!({"success": true, "data": {"access_token": "a2", "token_type": "bearer",
            "refresh_token": "r2", "ttl": "3600", "issued_at": 1, "expires_at": 2}}),
        )
        .unwrap();
        assert_eq!(legacy.access_token().secret(), "a2");
        assert_eq!(legacy.token_type(), &BasicTokenType::Bearer);
        assert_eq!(legacy.expires_in(), Some(Duration::from_secs(3600)));

        let absolute =
            parse(json!({"access_token": "a3", "expires_at": Utc::now().timestamp() + 600}))
                .unwrap();
        let left = absolute.expires_in().unwrap().as_secs();
        assert!((590..=600).contains(&left), "{left}");

        assert!(parse(json!({"success": false, "data": {}})).is_err());
        assert!(parse(json!({"access_token": ""})).is_err());
    }

    #[test]
    fn token_set_debug_is_redacted_and_expiry_is_absolute() {
        let set = TokenSet::from(
            parse(
                json!({"access_token": "secret-a", "refresh_token": "secret-r", "expires_in": 60}),
            )
            .unwrap(),
        );
        let dbg = format!("{set:?}");
        assert!(
            !dbg.contains("secret-a") && !dbg.contains("secret-r"),
            "{dbg}"
        );
        let left = (set.expires_at.unwrap() - Utc::now()).num_seconds();
        assert!((55..=60).contains(&left), "{left}");
    }

    #[test]
    fn state_and_pkce_are_random_url_safe_and_s256() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let (a, b) = (new_state(), new_state());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43); // 32 bytes, base64url without padding
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let (verifier, challenge) = pkce_pair();
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, expected);
        assert!((43..=128).contains(&verifier.len()));
    }
}
