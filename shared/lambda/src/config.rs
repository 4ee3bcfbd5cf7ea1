//! Configuration: plain environment variables (with the seeds' defaults; each CRM's own are read in its
//! folder of `crmsync-crm`) and the one Secrets Manager secret of the contract.

use crmsync_aws::{FromSecret, SecretError};
use crmsync_crm::{Common, CrmSecrets, CrmSettings};
use crmsync_domain::Region;
use serde::Deserialize;

/// Where the local CRM sandbox listens when `REX_MOCK=1` and no `CRM_SANDBOX_URL` is given.
pub const DEFAULT_SANDBOX_URL: &str = "http://127.0.0.1:8787";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is invalid: {why}")]
    BadEnv { name: &'static str, why: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Everything configured by plain environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub app_secret_id: String,
    pub base_url: String,
    pub post_connect_url: String,
    /// Each CRM's endpoints and OAuth settings (read by `crmsync-crm`, each CRM in its folder).
    pub crm: CrmSettings,
    pub rate_limit_table: String,
    pub default_phone_region: Region,
    /// `CRM_WEBHOOK_BASE_URL`: the public base address of the API, under which CRMs call
    /// `/api/webhooks/crm/{provider}/{token}`. Unset: integrations are polled only.
    pub webhook_base: Option<String>,
    /// `SYNC_QUEUE_URL`: the sync queue (SQS) that `scheduled-sync` dispatches to and `sync-worker`
    /// consumes. Unset: the scheduled run syncs in its own Lambda, and a sync cut short continues at
    /// the next run.
    pub sync_queue_url: Option<String>,
    /// `SYNC_CLAIM_TTL_SECONDS` (default 7200): how long an integration stays claimed by a queued
    /// message its worker has not finished, at least the queue's visibility timeout times its
    /// receives before the dead-letter queue (see `crmsync_app::SyncQueue::claim_ttl`).
    pub sync_claim_ttl: std::time::Duration,
}

/// The default of `SYNC_CLAIM_TTL_SECONDS`: the template's queue redelivers a message after 1,800 s,
/// 4 times.
pub const DEFAULT_SYNC_CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(7200);

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
        let common = Common {
            base_url: base_url.clone(),
            sandbox_url: get("CRM_SANDBOX_URL"),
            default_sandbox_url: DEFAULT_SANDBOX_URL.into(),
        };
        let crm = CrmSettings::from_lookup(&get, &common).map_err(|e| ConfigError::BadEnv {
            name: e.name,
            why: e.why,
        })?;
        let default_phone_region = match get("DEFAULT_PHONE_REGION") {
            Some(v) => v.parse().map_err(|_| ConfigError::BadEnv {
                name: "DEFAULT_PHONE_REGION",
                why: format!("`{v}` is not a two-letter region code such as US, AU or GB"),
            })?,
            None => Region::default(),
        };
        let webhook_base = match get("CRM_WEBHOOK_BASE_URL") {
            None => None,
            Some(v) => {
                let url = http_base(&v).ok_or(ConfigError::BadEnv {
                    name: "CRM_WEBHOOK_BASE_URL",
                    why: format!(
                        "`{v}` is not an http(s) address such as https://api.example.com/Prod"
                    ),
                })?;
                Some(url)
            }
        };
        Ok(Settings {
            app_secret_id: get("APP_SECRET_ID").unwrap_or_else(|| "crmsync/app".into()),
            post_connect_url: get("POST_CONNECT_URL")
                .unwrap_or_else(|| format!("{base_url}/dashboard/settings/integrations")),
            base_url,
            crm,
            rate_limit_table: get("RATE_LIMIT_TABLE")
                .unwrap_or_else(|| "crmsync-rate-limits".into()),
            default_phone_region,
            webhook_base,
            sync_queue_url: get("SYNC_QUEUE_URL"),
            sync_claim_ttl: match get("SYNC_CLAIM_TTL_SECONDS") {
                None => DEFAULT_SYNC_CLAIM_TTL,
                Some(v) => match v.parse::<u64>() {
                    Ok(secs) if secs > 0 => std::time::Duration::from_secs(secs),
                    _ => {
                        return Err(ConfigError::BadEnv {
                            name: "SYNC_CLAIM_TTL_SECONDS",
                            why: format!("`{v}` is not a whole number of seconds above 0"),
                        });
                    }
                },
            },
        })
    }
}

/// `v` without trailing slashes when it is an `http://` or `https://` address with a host.
fn http_base(v: &str) -> Option<String> {
    let v = v.trim().trim_end_matches('/');
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    (!host.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then(|| v.to_owned())
}

/// The JSON object stored in the secret named by `APP_SECRET_ID`.
#[derive(Clone, Deserialize)]
pub struct AppSecrets {
    pub database_url: String,
    /// Optional: the CA certificates (PEM) that sign the database's certificate (the RDS global bundle,
    /// Supabase's CA), for `sslmode=verify-full` (the default) or `verify-ca`. Adds to `sslrootcert`.
    #[serde(default)]
    pub database_ca_pem: Option<String>,
    pub jwt_secret: String,
    /// 64 hex characters.
    pub encryption_key: String,
    #[serde(default)]
    pub encryption_key_previous: Option<String>,
    #[serde(default)]
    pub webhook_secret: String,
    /// The CRMs' OAuth clients and Follow Up Boss's system (`rex_client_id`, `followupboss_system`, …).
    #[serde(flatten)]
    pub crm: CrmSecrets,
}

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a secret never reaches a log line.
        f.debug_struct("AppSecrets")
            .field("crm", &self.crm)
            .finish_non_exhaustive()
    }
}

impl AppSecrets {
    /// Parses the secret's JSON and checks the values that have a format.
    pub fn from_json(secret_id: &str, json: &str) -> Result<Self, SecretError> {
        Self::from_secret(json).map_err(|why| SecretError::SecretMalformed {
            secret_id: secret_id.to_owned(),
            why,
        })
    }
}

impl FromSecret for AppSecrets {
    fn from_secret(json: &str) -> Result<Self, String> {
        // serde_json's message names the missing field, never a value.
        let secrets: AppSecrets = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let is_key = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_key(&secrets.encryption_key) {
            return Err("encryption_key must be 64 hexadecimal characters".into());
        }
        if let Some(prev) = secrets
            .encryption_key_previous
            .as_deref()
            .filter(|p| !p.is_empty())
            && !is_key(prev)
        {
            return Err("encryption_key_previous must be 64 hexadecimal characters".into());
        }
        if let Some(pem) = secrets
            .database_ca_pem
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(
                "database_ca_pem must hold PEM certificates (-----BEGIN CERTIFICATE----- blocks)"
                    .into(),
            );
        }
        if secrets.jwt_secret.len() < 32 {
            return Err("jwt_secret must be at least 32 characters".into());
        }
        Ok(secrets)
    }
}

/// The secret, fetched once per cold start.
pub type SecretsProvider = crmsync_aws::SecretsProvider<AppSecrets>;

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
        assert_eq!(s.base_url, "https://dash.example.com");
        assert_eq!(
            s.post_connect_url,
            "https://dash.example.com/dashboard/settings/integrations"
        );
        assert_eq!(s.app_secret_id, "crmsync/app");
        assert_eq!(s.rate_limit_table, "crmsync-rate-limits");
        assert_eq!(s.default_phone_region, Region::default());
        // Each CRM's defaults are its folder's (tested there); the redirect URIs follow the base URL.
        assert_eq!(
            s.crm.rex.redirect_uri,
            "https://dash.example.com/api/integrations/rex/oauth/callback"
        );
    }

    #[test]
    fn explicit_values_win_and_mock_points_at_the_sandbox() {
        let s = settings(&[("REX_MOCK", "1"), ("DEFAULT_PHONE_REGION", "AU")]).unwrap();
        assert!(s.crm.rex.mock);
        assert_eq!(
            s.crm.rex.auth_url,
            format!("{DEFAULT_SANDBOX_URL}/rex/oauth/authorize")
        );
        assert_eq!(s.default_phone_region, "AU".parse().unwrap());

        let s = settings(&[("CRM_SANDBOX_URL", "http://127.0.0.1:9999/")]).unwrap();
        assert_eq!(
            s.crm.rex.contacts_endpoint,
            "http://127.0.0.1:9999/rex/v1/rex/contacts/list"
        );
        assert_eq!(s.crm.followupboss.api_base, "http://127.0.0.1:9999/fub/v1");
        assert_eq!(s.crm.lofty.api_base, "http://127.0.0.1:9999/lofty");
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
        assert_eq!(s.database_ca_pem, None);
        let mut with_ca: serde_json::Value = serde_json::from_str(&json).unwrap();
        with_ca["database_ca_pem"] =
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into();
        let s = AppSecrets::from_json("id", &with_ca.to_string()).unwrap();
        assert!(s.database_ca_pem.unwrap().starts_with("-----BEGIN"));
        with_ca["database_ca_pem"] = "/etc/ssl/rds.pem".into();
        let err = AppSecrets::from_json("id", &with_ca.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("database_ca_pem"), "{err}");

        let missing = serde_json::json!({"jwt_secret": "x"}).to_string();
        assert!(
            AppSecrets::from_json("id", &missing)
                .unwrap_err()
                .to_string()
                .contains("database_url")
        );
    }
}
