//! Where the CRMs are and how crmsync identifies itself to them: each CRM's settings (from environment
//! variables with the seeds' defaults, read in its own folder) and its secrets (from the application
//! secret). Both are plain values; the caller supplies the lookups.

use std::fmt;

use crmsync_domain::Region;
use serde::Deserialize;

use crate::{followupboss, lofty, rex};

/// What every CRM's settings are derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// The dashboard's base URL (`NEXT_PUBLIC_BASE_URL`), without a trailing slash: OAuth redirect URIs
    /// default to routes under it.
    pub base_url: String,
    /// A server that stands in for every CRM, each under a path of its own (`CRM_SANDBOX_URL`, the local
    /// sandbox), without a trailing slash.
    pub sandbox_url: Option<String>,
    /// Where that server is when a CRM is told to use it (`REX_MOCK=1`) and no URL is given.
    pub default_sandbox_url: String,
}

/// The settings of every CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSettings {
    pub rex: rex::Settings,
    pub followupboss: followupboss::Settings,
    pub lofty: lofty::Settings,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name} is invalid: {why}")]
pub struct BadSetting {
    pub name: &'static str,
    pub why: String,
}

impl CrmSettings {
    /// Reads every CRM's settings through `lookup` (the environment, or a map in tests); empty values
    /// count as unset.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        common: &Common,
    ) -> Result<Self, BadSetting> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Ok(CrmSettings {
            rex: rex::Settings::from_lookup(&get, common)?,
            followupboss: followupboss::Settings::from_lookup(&get, common)?,
            lofty: lofty::Settings::from_lookup(&get, common)?,
        })
    }
}

/// The phone region of a CRM's integrations (numbers written without a country code are read in it):
/// the variable `name` when set, else `default`.
pub(crate) fn phone_region(
    get: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: Region,
) -> Result<Region, BadSetting> {
    match get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| BadSetting {
            name,
            why: format!("`{v}` is not a two-letter region code such as US, AU or GB"),
        }),
    }
}

/// The CRMs' part of the application secret (its keys are listed in each CRM's `Secrets`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CrmSecrets {
    #[serde(flatten)]
    pub rex: rex::Secrets,
    #[serde(flatten)]
    pub followupboss: followupboss::Secrets,
}

impl fmt::Debug for CrmSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmSecrets")
            .field("rex", &self.rex)
            .field("followupboss", &self.followupboss)
            .finish()
    }
}

/// Settings and secrets together: what the clients and OAuth flows are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmConfig {
    pub settings: CrmSettings,
    pub secrets: CrmSecrets,
}

impl CrmConfig {
    pub fn new(settings: CrmSettings, secrets: CrmSecrets) -> Self {
        CrmConfig { settings, secrets }
    }
}

/// `url` without surrounding spaces and trailing slashes.
pub(crate) fn base(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// The sandbox's mount of one CRM, when a sandbox stands in for every CRM.
pub(crate) fn sandbox_mount(common: &Common, mount: &str) -> Option<String> {
    common
        .sandbox_url
        .as_deref()
        .map(|s| format!("{}/{mount}", base(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn common() -> Common {
        Common {
            base_url: "https://dash.example.com".into(),
            sandbox_url: None,
            default_sandbox_url: "http://127.0.0.1:8787".into(),
        }
    }

    fn settings(pairs: &[(&str, &str)], common: &Common) -> CrmSettings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CrmSettings::from_lookup(&|k| map.get(k).cloned(), common).unwrap()
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let s = settings(&[], &common());
        assert_eq!(
            s.rex.auth_url,
            "https://api.rexsoftware.com/oauth/authorize"
        );
        assert_eq!(s.rex.token_url, "https://api.rexsoftware.com/oauth/token");
        assert_eq!(s.rex.scope, "openid profile rex.read rex.write");
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
        assert_eq!(
            s.followupboss.redirect_uri,
            "https://dash.example.com/api/integrations/followupboss/oauth/callback"
        );
        assert_eq!(s.lofty.api_base, "https://api.lofty.com");
        // REX is Australian; Follow Up Boss and Lofty are American.
        assert_eq!(s.rex.phone_region, Region::AU);
        assert_eq!(s.followupboss.phone_region, Region::US);
        assert_eq!(s.lofty.phone_region, Region::US);
    }

    #[test]
    fn a_deployment_sets_each_crms_phone_region() {
        let s = settings(
            &[("REX_PHONE_REGION", "nz"), ("LOFTY_PHONE_REGION", "CA")],
            &common(),
        );
        assert_eq!(s.rex.phone_region, "NZ".parse().unwrap());
        assert_eq!(s.lofty.phone_region, Region::CA);
        let map: HashMap<String, String> =
            HashMap::from([("FOLLOWUPBOSS_PHONE_REGION".into(), "Narnia".into())]);
        let err = CrmSettings::from_lookup(&|k| map.get(k).cloned(), &common()).unwrap_err();
        assert_eq!(err.name, "FOLLOWUPBOSS_PHONE_REGION");
    }

    #[test]
    fn explicit_values_win_and_rex_mock_points_rex_at_the_sandbox() {
        let s = settings(
            &[
                ("REX_MOCK", "1"),
                ("REX_TOKEN_URL", "https://rex.example/token"),
                ("REX_PKCE", "0"),
            ],
            &common(),
        );
        assert!(s.rex.mock && !s.rex.pkce);
        assert_eq!(s.rex.auth_url, "http://127.0.0.1:8787/rex/oauth/authorize");
        assert_eq!(s.rex.token_url, "https://rex.example/token");
        // REX_MOCK concerns REX only.
        assert_eq!(s.lofty.api_base, "https://api.lofty.com");
    }

    #[test]
    fn secrets_come_from_the_application_secret_and_are_never_printed() {
        let secrets: CrmSecrets = serde_json::from_value(serde_json::json!({
            "database_url": "postgres://x",
            "rex_client_id": "rex-id",
            "rex_client_secret": "rex-secret-value",
            "followupboss_system": "crmsync",
            "followupboss_system_key": "sys-key-123",
        }))
        .unwrap();
        assert_eq!(secrets.rex.client_id, "rex-id");
        assert_eq!(secrets.followupboss.system, "crmsync");
        assert_eq!(secrets.followupboss.system_key, "sys-key-123");
        assert_eq!(secrets.followupboss.client_id, "");
        let shown = format!("{secrets:?}");
        assert!(
            !shown.contains("sys-key-123") && !shown.contains("rex-secret-value"),
            "{shown}"
        );
        assert!(shown.contains("rex-id"), "{shown}");
    }
}
