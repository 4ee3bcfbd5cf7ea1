//! The small vocabularies of integrations and sync logs: how an integration authenticates, the state it
//! is in, and what a log row says. Each has one wire name (`as_str`, `Display`, `FromStr`), the same in
//! JSON, in the database and in log lines.

use std::fmt;
use std::str::FromStr;

/// A string that is not one of the names of a vocabulary. The message names the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        /// Compares with a wire name: `status == "active"`.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            /// Exact, case-sensitive match on the wire name.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        value: crate::json::shorten(s, 40),
                    })
            }
        }
    };
}

vocabulary!(
    /// How an integration authenticates with its CRM.
    AuthType, "auth type", {
        OAuth => "oauth",
        ApiKey => "api_key",
    }
);

vocabulary!(
    /// The state of an integration. A user sets `active` or `paused`; crmsync pauses an integration
    /// itself after repeated push failures (see [`crate::policy`]).
    IntegrationStatus, "integration status", {
        Active => "active",
        Paused => "paused",
        /// Set by the system only.
        Error => "error",
        /// The CRM refused the credentials (a revoked grant, a deleted key): the user has to connect
        /// again. Set by the system; a successful reconnect makes the integration active.
        NeedsReauth => "needs_reauth",
    }
);

vocabulary!(
    /// The direction of a logged sync.
    Direction, "direction", {
        Pull => "pull",
        Push => "push",
    }
);

vocabulary!(
    /// What started a logged sync.
    Trigger, "trigger", {
        Manual => "manual",
        Webhook => "webhook",
        Schedule => "schedule",
    }
);

vocabulary!(
    /// The outcome of a logged sync.
    LogStatus, "log status", {
        Success => "success",
        Failed => "failed",
        Skipped => "skipped",
        Partial => "partial",
    }
);

vocabulary!(
    /// The state of a push delivery (one lead version to one integration): waiting to be pushed (or
    /// pushed again), in the CRM, left out by the push rules, or given up after its attempts.
    DeliveryStatus, "delivery status", {
        Pending => "pending",
        Delivered => "delivered",
        Skipped => "skipped",
        Failed => "failed",
        /// A newer version of the lead was pushed instead.
        Superseded => "superseded",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for s in IntegrationStatus::ALL {
            assert_eq!(s.as_str().parse::<IntegrationStatus>(), Ok(*s));
        }
        for t in Trigger::ALL {
            assert_eq!(t.to_string().parse::<Trigger>(), Ok(*t));
        }
        assert_eq!(AuthType::ApiKey.as_str(), "api_key");
        assert_eq!(LogStatus::Partial.as_str(), "partial");
        assert_eq!(Direction::Push.as_str(), "push");
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>(), Ok(*s));
        }
    }

    #[test]
    fn unknown_names_say_which_vocabulary() {
        let err = "Active".parse::<IntegrationStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown integration status \"Active\"");
        assert!(
            "x".repeat(1000)
                .parse::<Trigger>()
                .unwrap_err()
                .to_string()
                .len()
                < 100
        );
    }
}
