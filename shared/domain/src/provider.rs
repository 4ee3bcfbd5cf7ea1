//! The CRMs crmsync talks to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A CRM. Its wire name (serde, [`Provider::as_str`], [`fmt::Display`], [`FromStr`]) is one of
/// `"rex"`, `"followupboss"`, `"lofty"`; the same string is used in URL paths and database rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "rex")]
    Rex,
    #[serde(rename = "followupboss")]
    FollowUpBoss,
    #[serde(rename = "lofty")]
    Lofty,
}

impl Provider {
    /// Every provider, in a stable order.
    pub const ALL: [Provider; 3] = [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty];

    /// The wire name: `"rex"`, `"followupboss"` or `"lofty"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Rex => "rex",
            Provider::FollowUpBoss => "followupboss",
            Provider::Lofty => "lofty",
        }
    }

    /// A human-readable product name, for log lines and messages.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Rex => "REX",
            Provider::FollowUpBoss => "Follow Up Boss",
            Provider::Lofty => "Lofty",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the three provider names. The message quotes the (shortened,
/// escaped) bad value and lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}: expected one of \"rex\", \"followupboss\", \"lofty\"")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    /// Exact, case-sensitive match on the wire name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(crate::json::shorten(s, 40)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_every_representation() {
        for (p, name) in [
            (Provider::Rex, "rex"),
            (Provider::FollowUpBoss, "followupboss"),
            (Provider::Lofty, "lofty"),
        ] {
            assert_eq!(p.as_str(), name);
            assert_eq!(p.to_string(), name);
            assert_eq!(name.parse::<Provider>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Provider>(&format!("\"{name}\"")).unwrap(),
                p
            );
        }
        assert_eq!(Provider::ALL.len(), 3);
    }

    #[test]
    fn unknown_provider_names_the_bad_value_and_the_valid_ones() {
        let err = "hubspot".parse::<Provider>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown provider \"hubspot\": expected one of \"rex\", \"followupboss\", \"lofty\""
        );
        // Wire names are exact: no case folding, no aliases.
        assert!("REX".parse::<Provider>().is_err());
        assert!("follow_up_boss".parse::<Provider>().is_err());
        assert!(serde_json::from_str::<Provider>("\"fub\"").is_err());
    }

    #[test]
    fn unknown_provider_message_stays_short_for_long_input() {
        let long = "x".repeat(10_000);
        let msg = long.parse::<Provider>().unwrap_err().to_string();
        assert!(msg.len() < 150, "{msg}");
    }
}
