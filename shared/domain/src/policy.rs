//! The rules of the push: which integrations a lead goes to, when a failing integration is paused, and
//! when a failed delivery is tried again. The store and the push engine apply them; they are decided here.

use std::fmt;

use chrono::Duration;

/// The risk threshold of a new integration: a lead whose risk score is at or under it is pushed.
pub const DEFAULT_RISK_THRESHOLD: i32 = 20;

/// Consecutive failed leads after which an integration is paused.
pub const PAUSE_AFTER_FAILURES: i32 = 10;

/// Attempts after which a delivery is given up (status `failed`).
pub const MAX_DELIVERY_ATTEMPTS: i32 = 40;

/// Retries of a push after its first attempt, within one call (the outbox retries later ones).
pub const PUSH_RETRIES: u32 = 3;

/// The longest wait between two tries of a failed delivery.
const MAX_RETRY_MINUTES: i64 = 360;

/// The lowest and highest risk scores: a score outside is skipped (and logged), not pushed.
pub const RISK_SCORES: std::ops::RangeInclusive<i32> = 0..=100;

/// Why a lead is not pushed to an integration. Logged as the `action` of a `skipped` push log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushSkip {
    /// The lead has no phone: the CRM person is found by phone.
    NoPhone,
    /// The lead has a phone that is not a valid number.
    InvalidPhone,
    /// The lead carries no risk score: only scored leads are pushed.
    NoRiskScore,
    /// The lead's risk score is outside 0–100.
    RiskOutOfRange,
    /// The lead's risk score is above the integration's threshold.
    RiskAboveThreshold,
}

impl PushSkip {
    pub fn as_str(self) -> &'static str {
        match self {
            PushSkip::NoPhone => "no_phone",
            PushSkip::InvalidPhone => "invalid_phone",
            PushSkip::NoRiskScore => "no_risk_score",
            PushSkip::RiskOutOfRange => "risk_out_of_range",
            PushSkip::RiskAboveThreshold => "risk_above_threshold",
        }
    }
}

/// What a lead's phone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeadPhone {
    Missing,
    Invalid,
    Usable,
}

impl fmt::Display for PushSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a lead goes to an integration whose risk threshold is `threshold`: only with a usable
/// phone and a risk score in 0–100 at or under the threshold (a score equal to the threshold is
/// pushed).
pub fn skip_reason(risk: Option<i32>, threshold: i32, phone: LeadPhone) -> Option<PushSkip> {
    match phone {
        LeadPhone::Missing => return Some(PushSkip::NoPhone),
        LeadPhone::Invalid => return Some(PushSkip::InvalidPhone),
        LeadPhone::Usable => {}
    }
    match risk {
        None => Some(PushSkip::NoRiskScore),
        Some(r) if !RISK_SCORES.contains(&r) => Some(PushSkip::RiskOutOfRange),
        Some(r) if r > threshold => Some(PushSkip::RiskAboveThreshold),
        Some(_) => None,
    }
}

/// Whether an integration with this many consecutive failed leads is paused.
pub fn pauses(consecutive_failures: i32) -> bool {
    consecutive_failures >= PAUSE_AFTER_FAILURES
}

/// Whether a delivery tried this many times in all is given up.
pub fn gives_up(total_attempts: i32) -> bool {
    total_attempts >= MAX_DELIVERY_ATTEMPTS
}

/// How long a delivery that has failed `total_attempts` times waits before it is tried again:
/// doubling from a minute, at most six hours.
pub fn retry_delay(total_attempts: i32) -> Duration {
    let minutes = 1i64 << total_attempts.clamp(0, 9);
    Duration::minutes(minutes.min(MAX_RETRY_MINUTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_are_pushed_only_at_or_under_the_threshold_with_a_phone() {
        let ok = LeadPhone::Usable;
        assert_eq!(skip_reason(Some(20), 20, ok), None);
        assert_eq!(skip_reason(Some(0), 20, ok), None);
        assert_eq!(
            skip_reason(Some(21), 20, ok),
            Some(PushSkip::RiskAboveThreshold)
        );
        assert_eq!(skip_reason(None, 20, ok), Some(PushSkip::NoRiskScore));
        assert_eq!(
            skip_reason(Some(-1), 20, ok),
            Some(PushSkip::RiskOutOfRange)
        );
        assert_eq!(
            skip_reason(Some(150), 200, ok),
            Some(PushSkip::RiskOutOfRange)
        );
        assert_eq!(
            skip_reason(Some(5), 20, LeadPhone::Missing),
            Some(PushSkip::NoPhone)
        );
        assert_eq!(
            skip_reason(Some(5), 20, LeadPhone::Invalid),
            Some(PushSkip::InvalidPhone)
        );
        assert_eq!(
            PushSkip::RiskAboveThreshold.as_str(),
            "risk_above_threshold"
        );
    }

    #[test]
    fn ten_failures_pause_and_forty_attempts_give_up() {
        assert!(!pauses(PAUSE_AFTER_FAILURES - 1));
        assert!(pauses(PAUSE_AFTER_FAILURES));
        assert!(!gives_up(39));
        assert!(gives_up(40));
    }

    #[test]
    fn retries_double_from_a_minute_up_to_six_hours() {
        assert_eq!(retry_delay(0), Duration::minutes(1));
        assert_eq!(retry_delay(1), Duration::minutes(2));
        assert_eq!(retry_delay(3), Duration::minutes(8));
        assert_eq!(retry_delay(9), Duration::minutes(360));
        assert_eq!(retry_delay(30), Duration::minutes(360));
        assert_eq!(retry_delay(-4), Duration::minutes(1));
    }
}
