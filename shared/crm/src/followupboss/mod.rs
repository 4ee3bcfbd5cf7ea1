//! Follow Up Boss, an American CRM (crm-apis.md §1): a REST API at `https://api.followupboss.com/v1`.
//!
//! * Auth: API key as HTTP Basic (`key:`), or OAuth 2.0 in FUB's flavour (`response_type=auth_code`,
//!   no PKCE, no scopes, `state` echoed in the code exchange); tokens as `Bearer`. `X-System` and
//!   `X-System-Key` identify crmsync on every call.
//! * Rate limits: a sliding 10-second window per context, advertised in `X-RateLimit-*` headers.
//! * Paging: `sort=updated` with the opaque `next` token, which survives a restart.
//! * Errors: `errorMessage` in 400 bodies.

mod client;
pub mod mapping;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use crmsync_domain::{Mapped, Provider, Region};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{BadSetting, Common, base, phone_region, sandbox_mount};
use crate::oauth::{OAuthConfig, OAuthFlavour};
use crate::transport::{Conn, base_headers};
use crate::{CrmAuth, CrmClient, CrmConfig, CrmHttp, CrmKind, CrmSettings};

pub use client::FollowUpBossClient;

/// Where the local sandbox serves Follow Up Boss, under `CRM_SANDBOX_URL`.
const SANDBOX_MOUNT: &str = "fub";

/// Follow Up Boss endpoints (environment variables, with the documented defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `FOLLOWUPBOSS_AUTH_URL`.
    pub auth_url: String,
    /// `FOLLOWUPBOSS_TOKEN_URL`.
    pub token_url: String,
    /// `FOLLOWUPBOSS_API_BASE` (`…/v1`), without a trailing slash.
    pub api_base: String,
    /// `FOLLOWUPBOSS_REDIRECT_URI` (default: the dashboard's callback route).
    pub redirect_uri: String,
    /// `FOLLOWUPBOSS_PHONE_REGION` (default `US`: Follow Up Boss is an American CRM).
    pub phone_region: Region,
}

impl Settings {
    pub(crate) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        common: &Common,
    ) -> Result<Self, BadSetting> {
        let host = sandbox_mount(common, SANDBOX_MOUNT);
        let default = |path: &str, real: &str| match &host {
            Some(host) => format!("{host}{path}"),
            None => real.to_owned(),
        };
        Ok(Settings {
            auth_url: get("FOLLOWUPBOSS_AUTH_URL").unwrap_or_else(|| {
                default(
                    "/oauth/authorize",
                    "https://app.followupboss.com/oauth/authorize",
                )
            }),
            token_url: get("FOLLOWUPBOSS_TOKEN_URL").unwrap_or_else(|| {
                default("/oauth/token", "https://app.followupboss.com/oauth/token")
            }),
            api_base: base(
                &get("FOLLOWUPBOSS_API_BASE")
                    .unwrap_or_else(|| default("/v1", "https://api.followupboss.com/v1")),
            ),
            redirect_uri: get("FOLLOWUPBOSS_REDIRECT_URI").unwrap_or_else(|| {
                format!(
                    "{}/api/integrations/followupboss/oauth/callback",
                    common.base_url
                )
            }),
            phone_region: phone_region(get, "FOLLOWUPBOSS_PHONE_REGION", Region::US)?,
        })
    }
}

/// Follow Up Boss's part of the application secret: the OAuth client and the registered system.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Secrets {
    #[serde(rename = "followupboss_client_id", default)]
    pub client_id: String,
    #[serde(rename = "followupboss_client_secret", default)]
    pub client_secret: String,
    /// `X-System`, sent on every call (and the `system` of events).
    #[serde(rename = "followupboss_system", default)]
    pub system: String,
    /// `X-System-Key`, sent on every call.
    #[serde(rename = "followupboss_system_key", default)]
    pub system_key: String,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("system", &self.system)
            .field("system_key", &"[redacted]")
            .finish()
    }
}

/// `response_type=auth_code`, no PKCE, no scopes, and `state` again in the code exchange (Nango PR
/// #6403: the token request fails without it).
pub const OAUTH: OAuthFlavour = OAuthFlavour {
    response_type: "auth_code",
    scopes: false,
    pkce: false,
    state_in_token_request: true,
};

/// The facts of Follow Up Boss.
#[derive(Debug, Clone, Copy)]
pub struct FollowUpBoss;

impl CrmKind for FollowUpBoss {
    fn provider(&self) -> Provider {
        Provider::FollowUpBoss
    }

    fn oauth(&self, config: &CrmConfig) -> Option<OAuthConfig> {
        let (s, secrets) = (&config.settings.followupboss, &config.secrets.followupboss);
        Some(OAuthConfig {
            provider: Provider::FollowUpBoss,
            flavour: OAUTH,
            auth_url: s.auth_url.clone(),
            token_url: s.token_url.clone(),
            redirect_uri: s.redirect_uri.clone(),
            client_id: secrets.client_id.clone(),
            client_secret: secrets.client_secret.clone(),
            scope: String::new(),
            pkce: false,
        })
    }

    fn accepts_api_key(&self) -> bool {
        true
    }

    /// 250 requests per 10 s for a registered system (third-party figures vary; headers correct it).
    fn documented_rate(&self) -> (u32, Duration) {
        (250, Duration::from_secs(10))
    }

    /// `next` is an opaque keyset token: it lists the same records whenever it is used.
    fn page_token_survives_restart(&self) -> bool {
        true
    }

    /// `sort=-updated`, newest first (crm-apis §4).
    fn lists_changes(&self) -> bool {
        true
    }

    /// By FUB's `next` token, or an offset.
    fn pages_by_cursor(&self) -> bool {
        false
    }

    fn phone_region(&self, settings: &CrmSettings) -> Region {
        settings.followupboss.phone_region
    }

    fn read_webhook(
        &self,
        config: &CrmConfig,
        headers: &dyn crate::webhook::Headers,
        body: &[u8],
        _account: Option<&str>,
    ) -> Result<crate::webhook::Hint, crate::webhook::Refused> {
        webhook::read(config, headers, body)
    }

    fn map_record(&self, record: &Value, region: Region) -> Mapped {
        mapping::map_person(record, region)
    }

    fn client(&self, http: &CrmHttp, config: &CrmConfig, auth: CrmAuth) -> CrmClient {
        let secrets = &config.secrets.followupboss;
        let conn = Conn::new(http, &FollowUpBoss, headers(&auth, secrets), &auth);
        CrmClient::from_crm(std::sync::Arc::new(FollowUpBossClient::new(
            conn,
            &config.settings.followupboss,
            secrets,
        )))
    }

    /// `errorMessage`.
    fn error_code<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        body.get("errorMessage")
    }
}

/// An API key as HTTP Basic (`key:`), a token as `Bearer`, and the system's headers when configured.
fn headers(auth: &CrmAuth, secrets: &Secrets) -> Result<http::HeaderMap, ()> {
    let authorization = match auth {
        CrmAuth::ApiKey(key) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        ),
        CrmAuth::OAuth { access_token } => format!("Bearer {access_token}"),
    };
    let mut h = base_headers(&authorization)?;
    for (name, v) in [
        ("x-system", secrets.system.trim()),
        ("x-system-key", secrets.system_key.trim()),
    ] {
        if !v.is_empty() {
            let mut value = HeaderValue::from_str(v).map_err(|_| ())?;
            value.set_sensitive(name == "x-system-key");
            h.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    #[test]
    fn an_api_key_is_basic_and_header_values_that_cannot_be_sent_fail_as_credentials() {
        let secrets = Secrets {
            system: "crmsync".into(),
            system_key: "k".into(),
            ..Secrets::default()
        };
        let token = CrmAuth::OAuth {
            access_token: "a\nb".into(),
        };
        assert!(headers(&token, &secrets).is_err());
        let h = headers(&CrmAuth::ApiKey("abc".into()), &secrets).unwrap();
        // base64("abc:")
        assert_eq!(h[AUTHORIZATION], "Basic YWJjOg==");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h["x-system"], "crmsync");
        assert!(h["x-system-key"].is_sensitive());
    }

    #[test]
    fn the_api_base_loses_its_trailing_slash() {
        let common = Common {
            base_url: "https://dash.example.com".into(),
            sandbox_url: Some("http://127.0.0.1:9/".into()),
            default_sandbox_url: "http://127.0.0.1:8787".into(),
        };
        let s = Settings::from_lookup(&|_| None, &common).unwrap();
        assert_eq!(s.api_base, "http://127.0.0.1:9/fub/v1");
        let s = Settings::from_lookup(
            &|k| (k == "FOLLOWUPBOSS_API_BASE").then(|| " https://fub.example/v1/ ".to_owned()),
            &common,
        )
        .unwrap();
        assert_eq!(s.api_base, "https://fub.example/v1");
    }
}
