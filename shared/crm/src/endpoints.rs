//! Where the CRMs are, and how crmsync identifies itself to Follow Up Boss.

use std::fmt;

use crmsync_adapters::config::{AppSecrets, Settings};

/// The CRM base URLs and the FUB system identification, from [`Settings`] and [`AppSecrets`].
#[derive(Clone, PartialEq, Eq)]
pub struct CrmEndpoints {
    /// `REX_CONTACTS_ENDPOINT`, the contacts list/search RPC (`…/v1/rex/contacts/list`).
    pub rex_contacts: String,
    /// The REX RPC base (`…/v1/rex`), for `contacts/search|read|create|update`.
    pub rex_base: String,
    /// `FOLLOWUPBOSS_API_BASE` (`…/v1`), without a trailing slash.
    pub fub_base: String,
    /// `X-System` sent on every FUB call (and the `system` of events).
    pub fub_system: String,
    /// `X-System-Key` sent on every FUB call.
    pub fub_system_key: String,
    /// `LOFTY_API_BASE` (`https://api.lofty.com`), without a trailing slash.
    pub lofty_base: String,
}

impl fmt::Debug for CrmEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmEndpoints")
            .field("rex_contacts", &self.rex_contacts)
            .field("rex_base", &self.rex_base)
            .field("fub_base", &self.fub_base)
            .field("fub_system", &self.fub_system)
            .field("fub_system_key", &"[redacted]")
            .field("lofty_base", &self.lofty_base)
            .finish()
    }
}

impl CrmEndpoints {
    pub fn from_config(settings: &Settings, secrets: &AppSecrets) -> Self {
        let rex_contacts = settings.rex.contacts_endpoint.trim().to_owned();
        CrmEndpoints {
            rex_base: rex_base(&rex_contacts),
            rex_contacts,
            fub_base: settings
                .followupboss
                .api_base
                .trim()
                .trim_end_matches('/')
                .to_owned(),
            fub_system: secrets.followupboss_system.trim().to_owned(),
            fub_system_key: secrets.followupboss_system_key.trim().to_owned(),
            lofty_base: settings
                .lofty
                .api_base
                .trim()
                .trim_end_matches('/')
                .to_owned(),
        }
    }
}

/// The REX RPC base from the contacts endpoint: `…/v1/rex/contacts/list` → `…/v1/rex`. Any
/// `/contacts/<method>` ending (any case) is stripped; an endpoint without one is taken as the
/// base itself.
pub(crate) fn rex_base(contacts_endpoint: &str) -> String {
    let trimmed = contacts_endpoint.trim_end_matches('/');
    let (rest, _method) = trimmed.rsplit_once('/').unwrap_or((trimmed, ""));
    match rest.rsplit_once('/') {
        Some((base, service)) if service.eq_ignore_ascii_case("contacts") => base.to_owned(),
        _ => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rex_base_strips_the_contacts_method() {
        assert_eq!(
            rex_base("https://api.rexsoftware.com/v1/rex/contacts/list"),
            "https://api.rexsoftware.com/v1/rex"
        );
        assert_eq!(
            rex_base("http://127.0.0.1:8787/rex/v1/rex/Contacts/search/"),
            "http://127.0.0.1:8787/rex/v1/rex"
        );
        assert_eq!(
            rex_base("https://api.uk.rexsoftware.com/v1/rex"),
            "https://api.uk.rexsoftware.com/v1/rex"
        );
    }

    #[test]
    fn from_config_reads_settings_and_secrets_and_redacts_the_key() {
        let settings = Settings::from_lookup(|k| {
            (k == "CRM_SANDBOX_URL").then(|| "http://127.0.0.1:9/".to_owned())
        })
        .unwrap();
        let secrets = AppSecrets::from_json(
            "id",
            &serde_json::json!({
                "database_url": "postgres://x",
                "jwt_secret": "j".repeat(32),
                "encryption_key": "ab".repeat(32),
                "followupboss_system": "crmsync",
                "followupboss_system_key": "sys-key-123",
            })
            .to_string(),
        )
        .unwrap();
        let e = CrmEndpoints::from_config(&settings, &secrets);
        assert_eq!(
            e.rex_contacts,
            "http://127.0.0.1:9/rex/v1/rex/contacts/list"
        );
        assert_eq!(e.rex_base, "http://127.0.0.1:9/rex/v1/rex");
        assert_eq!(e.fub_base, "http://127.0.0.1:9/fub/v1");
        assert_eq!(e.lofty_base, "http://127.0.0.1:9/lofty");
        assert_eq!(e.fub_system, "crmsync");
        assert_eq!(e.fub_system_key, "sys-key-123");
        assert!(!format!("{e:?}").contains("sys-key-123"));
    }
}
