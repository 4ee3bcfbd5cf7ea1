//! Configuration: plain environment variables (with the seeds' defaults) and the one Secrets Manager
//! secret of the contract, fetched once per cold start and cached.

use std::sync::Arc;

use crmsync_domain::Region;
use serde::Deserialize;
use tokio::sync::OnceCell;

/// Where the local CRM sandbox listens unless `CRM_SANDBOX_URL` says otherwise.
pub const DEFAULT_SANDBOX_URL: &str = "http://127.0.0.1:8787";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is invalid: {why}")]
    BadEnv { name: &'static str, why: String },
    #[error("cannot read secret {secret_id} from Secrets Manager: {why}")]
    SecretUnavailable { secret_id: String, why: String },
    #[error("secret {secret_id} is not the expected JSON object: {why}")]
    SecretMalformed { secret_id: String, why: String },
}

/// REX endpoints and OAuth settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RexSettings {
    pub auth_url: String,
    pub token_url: String,
    pub redirect_uri: String,
    pub scope: String,
    pub contacts_endpoint: String,
    /// Send a PKCE S256 challenge (`REX_PKCE` is not `0`).
    pub pkce: bool,
    /// `REX_MOCK=1`: the defaults point at the local sandbox.
    pub mock: bool,
}

/// Follow Up Boss endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpBossSettings {
    pub auth_url: String,
    pub token_url: String,
    pub api_base: String,
    pub redirect_uri: String,
}

/// Lofty endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoftySettings {
    pub api_base: String,
}

/// Everything configured by plain environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub app_secret_id: String,
    pub base_url: String,
    pub post_connect_url: String,
    pub rex: RexSettings,
    pub followupboss: FollowUpBossSettings,
    pub lofty: LoftySettings,
    pub rate_limit_table: String,
    pub default_phone_region: Region,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let base_url = get("NEXT_PUBLIC_BASE_URL")
            .unwrap_or_else(|| "http://localhost:3004".into())
            .trim_end_matches('/')
            .to_owned();
        let rex_mock = get("REX_MOCK").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let sandbox = get("CRM_SANDBOX_URL").map(|s| s.trim_end_matches('/').to_owned());
        // With REX_MOCK=1 REX talks to the sandbox; CRM_SANDBOX_URL points every CRM at it.
        let rex_host = match (&sandbox, rex_mock) {
            (Some(s), _) => Some(format!("{s}/rex")),
            (None, true) => Some(format!("{DEFAULT_SANDBOX_URL}/rex")),
            (None, false) => None,
        };
        let rex_default = |path: &str, real: &str| match &rex_host {
            Some(host) => format!("{host}{path}"),
            None => real.to_owned(),
        };
        let rex = RexSettings {
            auth_url: get("REX_AUTH_URL").unwrap_or_else(|| {
                rex_default(
                    "/oauth/authorize",
                    "https://api.rexsoftware.com/oauth/authorize",
                )
            }),
            token_url: get("REX_TOKEN_URL").unwrap_or_else(|| {
                rex_default("/oauth/token", "https://api.rexsoftware.com/oauth/token")
            }),
            redirect_uri: get("REX_REDIRECT_URI")
                .unwrap_or_else(|| format!("{base_url}/api/integrations/rex/oauth/callback")),
            scope: get("REX_SCOPE").unwrap_or_else(|| "openid profile rex.read".into()),
            contacts_endpoint: get("REX_CONTACTS_ENDPOINT").unwrap_or_else(|| {
                rex_default(
                    "/v1/rex/contacts/list",
                    "https://api.rexsoftware.com/v1/rex/contacts/list",
                )
            }),
            pkce: get("REX_PKCE").is_none_or(|v| v != "0"),
            mock: rex_mock,
        };
        let fub_default = |path: &str, real: &str| match &sandbox {
            Some(s) => format!("{s}/fub{path}"),
            None => real.to_owned(),
        };
        let followupboss = FollowUpBossSettings {
            auth_url: get("FOLLOWUPBOSS_AUTH_URL").unwrap_or_else(|| {
                fub_default(
                    "/oauth/authorize",
                    "https://app.followupboss.com/oauth/authorize",
                )
            }),
            token_url: get("FOLLOWUPBOSS_TOKEN_URL").unwrap_or_else(|| {
                fub_default("/oauth/token", "https://app.followupboss.com/oauth/token")
            }),
            api_base: get("FOLLOWUPBOSS_API_BASE")
                .unwrap_or_else(|| fub_default("/v1", "https://api.followupboss.com/v1"))
                .trim_end_matches('/')
                .to_owned(),
            redirect_uri: get("FOLLOWUPBOSS_REDIRECT_URI").unwrap_or_else(|| {
                format!("{base_url}/api/integrations/followupboss/oauth/callback")
            }),
        };
        let lofty = LoftySettings {
            api_base: get("LOFTY_API_BASE")
                .unwrap_or_else(|| match &sandbox {
                    Some(s) => format!("{s}/lofty"),
                    None => "https://api.lofty.com".into(),
                })
                .trim_end_matches('/')
                .to_owned(),
        };
        let default_phone_region = match get("DEFAULT_PHONE_REGION") {
            Some(v) => v.parse().map_err(|_| ConfigError::BadEnv {
                name: "DEFAULT_PHONE_REGION",
                why: format!("`{v}` is not a two-letter region code such as US, AU or GB"),
            })?,
            None => Region::default(),
        };
        Ok(Settings {
            app_secret_id: get("APP_SECRET_ID").unwrap_or_else(|| "crmsync/app".into()),
            post_connect_url: get("POST_CONNECT_URL")
                .unwrap_or_else(|| format!("{base_url}/dashboard/settings/integrations")),
            base_url,
            rex,
            followupboss,
            lofty,
            rate_limit_table: get("RATE_LIMIT_TABLE")
                .unwrap_or_else(|| "crmsync-rate-limits".into()),
            default_phone_region,
        })
    }
}

/// The JSON object stored in the secret named by `APP_SECRET_ID`.
#[derive(Clone, Deserialize)]
pub struct AppSecrets {
    pub database_url: String,
    pub jwt_secret: String,
    /// 64 hex characters.
    pub encryption_key: String,
    #[serde(default)]
    pub encryption_key_previous: Option<String>,
    #[serde(default)]
    pub webhook_secret: String,
    #[serde(default)]
    pub rex_client_id: String,
    #[serde(default)]
    pub rex_client_secret: String,
    #[serde(default)]
    pub followupboss_client_id: String,
    #[serde(default)]
    pub followupboss_client_secret: String,
    #[serde(default)]
    pub followupboss_system: String,
    #[serde(default)]
    pub followupboss_system_key: String,
}

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a secret never reaches a log line.
        f.debug_struct("AppSecrets")
            .field("followupboss_system", &self.followupboss_system)
            .finish_non_exhaustive()
    }
}

impl AppSecrets {
    /// Parses the secret's JSON and checks the values that have a format.
    pub fn from_json(secret_id: &str, json: &str) -> Result<Self, ConfigError> {
        let malformed = |why: String| ConfigError::SecretMalformed {
            secret_id: secret_id.to_owned(),
            why,
        };
        // serde_json's message names the missing field, never a value.
        let secrets: AppSecrets =
            serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
        let is_key = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_key(&secrets.encryption_key) {
            return Err(malformed(
                "encryption_key must be 64 hexadecimal characters".into(),
            ));
        }
        if let Some(prev) = secrets
            .encryption_key_previous
            .as_deref()
            .filter(|p| !p.is_empty())
            && !is_key(prev)
        {
            return Err(malformed(
                "encryption_key_previous must be 64 hexadecimal characters".into(),
            ));
        }
        if secrets.jwt_secret.len() < 32 {
            return Err(malformed(
                "jwt_secret must be at least 32 characters".into(),
            ));
        }
        Ok(secrets)
    }
}

/// Fetches the application secret once and caches it for the life of the process (one cold start).
/// A failed fetch is not cached: the next call tries again.
#[derive(Debug)]
pub struct SecretsProvider {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: OnceCell<Arc<AppSecrets>>,
}

impl SecretsProvider {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        SecretsProvider {
            client,
            secret_id: secret_id.into(),
            cached: OnceCell::new(),
        }
    }

    /// The secrets, fetched on first use.
    pub async fn get(&self) -> Result<Arc<AppSecrets>, ConfigError> {
        self.cached
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_secret_value()
                    .secret_id(&self.secret_id)
                    .send()
                    .await
                    .map_err(|e| ConfigError::SecretUnavailable {
                        secret_id: self.secret_id.clone(),
                        why: aws_error_text(&e),
                    })?;
                let json = out
                    .secret_string()
                    .ok_or_else(|| ConfigError::SecretMalformed {
                        secret_id: self.secret_id.clone(),
                        why: "it has no SecretString".into(),
                    })?;
                AppSecrets::from_json(&self.secret_id, json).map(Arc::new)
            })
            .await
            .cloned()
    }
}

/// A short description of an AWS SDK error: the service's error code and message, never a payload.
pub fn aws_error_text<E, R>(err: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match err {
        SdkError::ServiceError(e) => {
            let meta = e.err();
            format!(
                "{}: {}",
                meta.code().unwrap_or("service error"),
                meta.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "could not reach the service".into(),
        _ => "the request failed".into(),
    }
}

/// The shared AWS SDK configuration: region and credentials from the environment, and
/// `AWS_ENDPOINT_URL` (local emulators) honoured by the SDK itself.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let s = settings(&[("NEXT_PUBLIC_BASE_URL", "https://dash.example.com/")]).unwrap();
        assert_eq!(
            s.rex.auth_url,
            "https://api.rexsoftware.com/oauth/authorize"
        );
        assert_eq!(s.rex.token_url, "https://api.rexsoftware.com/oauth/token");
        assert_eq!(s.rex.scope, "openid profile rex.read");
        assert_eq!(
            s.rex.redirect_uri,
            "https://dash.example.com/api/integrations/rex/oauth/callback"
        );
        assert_eq!(
            s.rex.contacts_endpoint,
            "https://api.rexsoftware.com/v1/rex/contacts/list"
        );
        assert!(s.rex.pkce);
        assert!(!s.rex.mock);
        assert_eq!(
            s.followupboss.auth_url,
            "https://app.followupboss.com/oauth/authorize"
        );
        assert_eq!(
            s.followupboss.token_url,
            "https://app.followupboss.com/oauth/token"
        );
        assert_eq!(s.followupboss.api_base, "https://api.followupboss.com/v1");
        assert_eq!(s.lofty.api_base, "https://api.lofty.com");
        assert_eq!(
            s.post_connect_url,
            "https://dash.example.com/dashboard/settings/integrations"
        );
        assert_eq!(s.default_phone_region, Region::default());
    }

    #[test]
    fn explicit_values_win_and_mock_points_at_the_sandbox() {
        let s = settings(&[
            ("REX_MOCK", "1"),
            ("REX_TOKEN_URL", "https://rex.example/token"),
            ("REX_PKCE", "0"),
            ("DEFAULT_PHONE_REGION", "AU"),
        ])
        .unwrap();
        assert!(s.rex.mock && !s.rex.pkce);
        assert_eq!(
            s.rex.auth_url,
            format!("{DEFAULT_SANDBOX_URL}/rex/oauth/authorize")
        );
        assert_eq!(s.rex.token_url, "https://rex.example/token");
        assert_eq!(s.default_phone_region, "AU".parse().unwrap());

        let s = settings(&[("CRM_SANDBOX_URL", "http://127.0.0.1:9999/")]).unwrap();
        assert_eq!(
            s.rex.contacts_endpoint,
            "http://127.0.0.1:9999/rex/v1/rex/contacts/list"
        );
        assert_eq!(s.followupboss.api_base, "http://127.0.0.1:9999/fub/v1");
        assert_eq!(s.lofty.api_base, "http://127.0.0.1:9999/lofty");
    }

    #[test]
    fn a_bad_region_is_a_clear_error() {
        let err = settings(&[("DEFAULT_PHONE_REGION", "Narnia")]).unwrap_err();
        assert!(err.to_string().contains("DEFAULT_PHONE_REGION"), "{err}");
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let key = "ab".repeat(32);
        let json = serde_json::json!({
            "database_url": "postgres://u:hunter2@db/x",
            "jwt_secret": "j".repeat(40),
            "encryption_key": key,
            "webhook_secret": "whsec_abc",
        })
        .to_string();
        let s = AppSecrets::from_json("id", &json).unwrap();
        assert_eq!(s.encryption_key, key);
        assert!(!format!("{s:?}").contains("hunter2"));

        let short = json.replace(&key, "abcd");
        let err = AppSecrets::from_json("id", &short).unwrap_err().to_string();
        assert!(
            err.contains("encryption_key") && !err.contains("abcd"),
            "{err}"
        );
        let missing = serde_json::json!({"jwt_secret": "x"}).to_string();
        assert!(
            AppSecrets::from_json("id", &missing)
                .unwrap_err()
                .to_string()
                .contains("database_url")
        );
    }
}
