//! The OAuth 2.0 authorization-code servers of REX (standard, optional PKCE) and Follow
//! Up Boss (`response_type=auth_code`, `state` echoed in the token request, HTTP Basic
//! client authentication only, no PKCE).

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;

use crate::config::{OAuthClient, Provider};
use crate::util::{
    b64url, encode_query, form_pairs, header_str, html, html_escape, json, now_ms, qget,
    random_hex, redirect, secret_eq, set_header,
};

/// Differences between the two OAuth servers.
#[derive(Debug, Clone)]
pub(crate) struct Flavor {
    pub provider: Provider,
    /// `code` (REX) or `auth_code` (FUB).
    pub response_type: &'static str,
    /// FUB: client authentication only through HTTP Basic.
    pub basic_only: bool,
    /// FUB: `state` is required at authorize and must be echoed in the code exchange.
    pub require_state: bool,
    /// REX: PKCE supported.
    pub pkce: bool,
    pub require_pkce: bool,
    /// REX: token responses carry `scope`.
    pub include_scope: bool,
    /// FUB: the callback carries `response=approved|denied`.
    pub response_param: bool,
    pub code_ttl_ms: i64,
    pub access_ttl_secs: u64,
    pub rotate_refresh: bool,
    pub default_scope: String,
    pub display_name: &'static str,
}

struct Pending {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scope: String,
    challenge: Option<(String, String)>,
    expires: i64,
}

struct AuthCode {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scope: String,
    challenge: Option<(String, String)>,
    expires: i64,
    used: bool,
    issued: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub expires: i64,
    /// The scope granted (OAuth tokens); `None`: a REX login session, which has the user's rights.
    pub scope: Option<String>,
}

struct RefreshToken {
    client_id: String,
    scope: String,
}

/// Outcome of a token request, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenEvent {
    None,
    CodeExchange,
    Refresh,
}

pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Default)]
pub(crate) struct OAuthState {
    pending: HashMap<String, Pending>,
    codes: HashMap<String, AuthCode>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
}

impl OAuthState {
    /// Whether the token's scope grants `wanted` (a session without a scope grants everything).
    pub(crate) fn grants(&self, token: &str, wanted: &str) -> bool {
        self.access.get(token).is_none_or(|t| {
            t.scope
                .as_deref()
                .is_none_or(|s| s.split_whitespace().any(|x| x == wanted))
        })
    }

    pub(crate) fn check(&self, token: &str) -> TokenCheck {
        match self.access.get(token) {
            Some(t) if t.expires > now_ms() => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }

    /// Stores an access token that is not an OAuth token (REX login sessions).
    pub(crate) fn insert_access(&mut self, token: String, t: AccessToken) {
        self.prune();
        self.access.insert(token, t);
    }

    /// Makes every access token expired (refresh tokens stay valid).
    pub(crate) fn expire_all(&mut self) -> usize {
        let past = now_ms() - 1;
        for t in self.access.values_mut() {
            t.expires = t.expires.min(past);
        }
        self.access.len()
    }

    /// Revokes every grant: access tokens (REX login sessions included), refresh tokens,
    /// pending authorizations and codes. A later refresh answers 400 `invalid_grant`.
    /// Returns how many access and refresh tokens there were.
    pub(crate) fn revoke_all(&mut self) -> usize {
        let n = self.access.len() + self.refresh.len();
        self.access.clear();
        self.refresh.clear();
        self.codes.clear();
        self.pending.clear();
        n
    }

    fn prune(&mut self) {
        let now = now_ms();
        if self.codes.len() > 1000 {
            self.codes.retain(|_, c| c.expires + 3_600_000 > now);
        }
        if self.pending.len() > 1000 {
            self.pending.retain(|_, p| p.expires > now);
        }
        if self.access.len() > 100_000 {
            self.access.retain(|_, t| t.expires + 86_400_000 > now);
        }
    }

    /// Issues an access + refresh token pair.
    pub(crate) fn issue(
        &mut self,
        flavor: &Flavor,
        client_id: &str,
        scope: &str,
    ) -> (String, String) {
        self.prune();
        let access = random_hex(24);
        let refresh = random_hex(32);
        self.access.insert(
            access.clone(),
            AccessToken {
                expires: now_ms() + flavor.access_ttl_secs as i64 * 1000,
                scope: Some(scope.to_string()),
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshToken {
                client_id: client_id.to_string(),
                scope: scope.to_string(),
            },
        );
        (access, refresh)
    }

    pub(crate) fn token_body(
        &self,
        flavor: &Flavor,
        access: &str,
        refresh: &str,
        scope: &str,
    ) -> serde_json::Value {
        let mut v = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": flavor.access_ttl_secs,
            "refresh_token": refresh,
        });
        if flavor.include_scope {
            v["scope"] = json!(scope);
        }
        v
    }
}

fn error_page(flavor: &Flavor, status: StatusCode, error: &str, detail: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} sandbox: {error}</title></head>\
             <body><h1>{name} (sandbox)</h1><p><strong>{error}</strong></p><p>{detail}</p></body></html>",
            name = flavor.display_name,
            error = html_escape(error),
            detail = html_escape(detail),
        ),
    )
}

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", encode_query(params))
}

fn find_client<'a>(clients: &'a [OAuthClient], id: &str) -> Option<&'a OAuthClient> {
    clients.iter().find(|c| c.client_id == id)
}

/// `GET /{provider}/oauth/authorize`.
pub(crate) fn authorize(
    flavor: &Flavor,
    clients: &[OAuthClient],
    auto_approve: bool,
    st: &mut OAuthState,
    q: &[(String, String)],
) -> Response {
    let client_id = qget(q, "client_id").unwrap_or("");
    let Some(client) = find_client(clients, client_id) else {
        return error_page(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Unknown or missing client_id.",
        );
    };
    let redirect_uri = qget(q, "redirect_uri").unwrap_or("");
    if redirect_uri.is_empty() || !client.redirect_allowed(redirect_uri) {
        return error_page(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is missing or not registered for this client.",
        );
    }
    let state = qget(q, "state").map(str::to_string);
    let response_type = qget(q, "response_type").unwrap_or("");
    if response_type != flavor.response_type {
        if flavor.response_param {
            // FUB only knows `auth_code`.
            return error_page(
                flavor,
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "response_type must be auth_code.",
            );
        }
        return redirect_error(
            redirect_uri,
            "unsupported_response_type",
            "response_type must be code",
            state.as_deref(),
        );
    }
    if flavor.require_state && state.as_deref().unwrap_or("").is_empty() {
        return error_page(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "state is required.",
        );
    }
    let mut challenge = None;
    if flavor.pkce {
        match qget(q, "code_challenge") {
            Some(c) if !c.is_empty() => {
                let method = qget(q, "code_challenge_method").unwrap_or("plain");
                if method != "S256" && method != "plain" {
                    return redirect_error(
                        redirect_uri,
                        "invalid_request",
                        "code_challenge_method must be S256 or plain",
                        state.as_deref(),
                    );
                }
                challenge = Some((c.to_string(), method.to_string()));
            }
            _ if flavor.require_pkce => {
                return redirect_error(
                    redirect_uri,
                    "invalid_request",
                    "code_challenge is required",
                    state.as_deref(),
                );
            }
            _ => {}
        }
    }
    let scope = qget(q, "scope")
        .filter(|s| !s.is_empty())
        .unwrap_or(&flavor.default_scope)
        .to_string();
    let pending = Pending {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        state,
        scope,
        challenge,
        expires: now_ms() + 30 * 60_000,
    };
    if auto_approve {
        return approve(flavor, st, pending);
    }
    st.prune();
    let request_id = random_hex(16);
    let scopes_html: String = if flavor.include_scope {
        pending
            .scope
            .split_whitespace()
            .map(|s| format!("<li><code>{}</code></li>", html_escape(s)))
            .collect()
    } else {
        "<li>Full access to your account (no scopes)</li>".to_string()
    };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorize {app} — {name} sandbox</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}button{{font-size:1.1em;margin-right:1em}}</style></head>\
         <body><h1>{name} (sandbox)</h1>\
         <p><strong id=\"app-name\">{app}</strong> wants to access your {name} account.</p>\
         <p>Requested permissions:</p><ul id=\"scopes\">{scopes}</ul>\
         <p>You will be sent back to <code>{redirect}</code>.</p>\
         <form method=\"post\" action=\"/{prefix}/oauth/authorize\">\
         <input type=\"hidden\" name=\"request_id\" value=\"{rid}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\
         </form></body></html>",
        app = html_escape(&client.app_name),
        name = flavor.display_name,
        scopes = scopes_html,
        redirect = html_escape(&pending.redirect_uri),
        prefix = flavor.provider.name(),
        rid = request_id,
    );
    st.pending.insert(request_id, pending);
    html(StatusCode::OK, page)
}

/// `POST /{provider}/oauth/authorize` (the consent form).
pub(crate) fn decide(flavor: &Flavor, st: &mut OAuthState, body: &[u8]) -> Response {
    let form = form_pairs(body);
    let rid = qget(&form, "request_id").unwrap_or("");
    let Some(pending) = st.pending.remove(rid) else {
        return error_page(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Unknown or already used authorization request.",
        );
    };
    if pending.expires < now_ms() {
        return error_page(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The authorization request expired.",
        );
    }
    match qget(&form, "decision") {
        Some("approve") => approve(flavor, st, pending),
        _ => deny(flavor, pending),
    }
}

fn approve(flavor: &Flavor, st: &mut OAuthState, p: Pending) -> Response {
    let code = random_hex(20);
    let state = p.state.clone();
    let uri = p.redirect_uri.clone();
    st.codes.insert(
        code.clone(),
        AuthCode {
            client_id: p.client_id,
            redirect_uri: p.redirect_uri,
            state: p.state,
            scope: p.scope,
            challenge: p.challenge,
            expires: now_ms() + flavor.code_ttl_ms,
            used: false,
            issued: Vec::new(),
        },
    );
    let mut params: Vec<(&str, &str)> = Vec::new();
    if flavor.response_param {
        params.push(("response", "approved"));
    }
    params.push(("code", &code));
    if let Some(s) = state.as_deref() {
        params.push(("state", s));
    }
    redirect(&with_params(&uri, &params))
}

fn deny(flavor: &Flavor, p: Pending) -> Response {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if flavor.response_param {
        params.push(("response", "denied"));
    } else {
        params.push(("error", "access_denied"));
        params.push(("error_description", "The user denied the request"));
    }
    if let Some(s) = p.state.as_deref() {
        params.push(("state", s));
    }
    redirect(&with_params(&p.redirect_uri, &params))
}

fn redirect_error(uri: &str, error: &str, desc: &str, state: Option<&str>) -> Response {
    let mut params = vec![("error", error), ("error_description", desc)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    redirect(&with_params(uri, &params))
}

fn oauth_error(status: StatusCode, error: &str, desc: &str) -> Response {
    let mut r = json(status, &json!({"error": error, "error_description": desc}));
    set_header(&mut r, "cache-control", "no-store");
    if status == StatusCode::UNAUTHORIZED {
        set_header(&mut r, "www-authenticate", "Basic realm=\"oauth\"");
    }
    r
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = header_str(headers, "authorization")?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let dec = |x: &str| {
        form_urlencoded::parse(format!("v={x}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| x.to_string())
    };
    Some((dec(id), dec(secret)))
}

fn pkce_ok(challenge: &(String, String), verifier: &str) -> bool {
    if verifier.len() < 43 || verifier.len() > 128 {
        return false;
    }
    match challenge.1.as_str() {
        "S256" => {
            let digest = sha2::Sha256::digest(verifier.as_bytes());
            secret_eq(&b64url(&digest), &challenge.0)
        }
        _ => secret_eq(verifier, &challenge.0),
    }
}

/// `POST /{provider}/oauth/token`.
pub(crate) fn token(
    flavor: &Flavor,
    clients: &[OAuthClient],
    st: &mut OAuthState,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, TokenEvent) {
    let ct = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return (
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            ),
            TokenEvent::None,
        );
    }
    let form = form_pairs(body);
    let basic = basic_credentials(headers);
    let body_id = qget(&form, "client_id");
    let body_secret = qget(&form, "client_secret");
    if flavor.basic_only && basic.is_none() {
        return (
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication with HTTP Basic is required",
            ),
            TokenEvent::None,
        );
    }
    if basic.is_some() && body_secret.is_some() {
        return (
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Use only one client authentication method",
            ),
            TokenEvent::None,
        );
    }
    let (cid, secret) = match (&basic, body_id, body_secret) {
        (Some((id, s)), _, _) => (id.clone(), s.clone()),
        (None, Some(id), Some(s)) => (id.to_string(), s.to_string()),
        _ => {
            return (
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Client authentication failed",
                ),
                TokenEvent::None,
            );
        }
    };
    if let (Some((bid, _)), Some(fid)) = (&basic, body_id)
        && bid != fid
    {
        return (
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client_id does not match the authenticated client",
            ),
            TokenEvent::None,
        );
    }
    let client = match find_client(clients, &cid) {
        Some(c) if secret_eq(&c.client_secret, &secret) => c,
        _ => {
            return (
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Client authentication failed",
                ),
                TokenEvent::None,
            );
        }
    };
    let bad = |e: &str, d: &str| (oauth_error(StatusCode::BAD_REQUEST, e, d), TokenEvent::None);
    match qget(&form, "grant_type") {
        None | Some("") => bad("invalid_request", "grant_type is required"),
        Some("authorization_code") => {
            let Some(code) = qget(&form, "code").filter(|c| !c.is_empty()) else {
                return bad("invalid_request", "code is required");
            };
            let Some(entry) = st.codes.get_mut(code) else {
                return bad("invalid_grant", "Invalid authorization code");
            };
            if entry.used {
                // RFC 6749 §4.1.2: revoke what the code produced.
                let issued = std::mem::take(&mut entry.issued);
                for t in issued {
                    st.access.remove(&t);
                    st.refresh.remove(&t);
                }
                return bad("invalid_grant", "Authorization code already used");
            }
            if entry.expires < now_ms() {
                return bad("invalid_grant", "Authorization code expired");
            }
            if entry.client_id != client.client_id {
                return bad(
                    "invalid_grant",
                    "Authorization code was issued to another client",
                );
            }
            match qget(&form, "redirect_uri") {
                None => return bad("invalid_request", "redirect_uri is required"),
                Some(r) if r != entry.redirect_uri => {
                    return bad(
                        "invalid_grant",
                        "redirect_uri does not match the authorization request",
                    );
                }
                _ => {}
            }
            if flavor.require_state {
                match qget(&form, "state") {
                    None | Some("") => {
                        return bad("invalid_request", "Missing required parameter: state");
                    }
                    Some(s) if Some(s) != entry.state.as_deref() => {
                        return bad(
                            "invalid_grant",
                            "state does not match the authorization request",
                        );
                    }
                    _ => {}
                }
            }
            if let Some(ch) = &entry.challenge {
                match qget(&form, "code_verifier") {
                    None | Some("") => {
                        return bad("invalid_request", "code_verifier is required");
                    }
                    Some(v) if !pkce_ok(ch, v) => {
                        return bad("invalid_grant", "PKCE verification failed");
                    }
                    _ => {}
                }
            }
            entry.used = true;
            let scope = entry.scope.clone();
            let (access, refresh) = st.issue(flavor, &client.client_id, &scope);
            if let Some(e) = st.codes.get_mut(code) {
                e.issued.push(access.clone());
                e.issued.push(refresh.clone());
            }
            let mut r = json(
                StatusCode::OK,
                &st.token_body(flavor, &access, &refresh, &scope),
            );
            set_header(&mut r, "cache-control", "no-store");
            set_header(&mut r, "pragma", "no-cache");
            (r, TokenEvent::CodeExchange)
        }
        Some("refresh_token") => {
            let Some(rt) = qget(&form, "refresh_token").filter(|c| !c.is_empty()) else {
                return bad("invalid_request", "refresh_token is required");
            };
            let (rt_client, rt_scope) = match st.refresh.get(rt) {
                Some(t) => (t.client_id.clone(), t.scope.clone()),
                None => return bad("invalid_grant", "Invalid refresh token"),
            };
            if rt_client != client.client_id {
                return bad(
                    "invalid_grant",
                    "Refresh token was issued to another client",
                );
            }
            let (access, new_refresh) = st.issue(flavor, &client.client_id, &rt_scope);
            let refresh = if flavor.rotate_refresh {
                st.refresh.remove(rt);
                new_refresh
            } else {
                st.refresh.remove(&new_refresh);
                rt.to_string()
            };
            let mut r = json(
                StatusCode::OK,
                &st.token_body(flavor, &access, &refresh, &rt_scope),
            );
            set_header(&mut r, "cache-control", "no-store");
            set_header(&mut r, "pragma", "no-cache");
            (r, TokenEvent::Refresh)
        }
        Some(_) => bad(
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}
