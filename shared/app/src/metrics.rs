//! The CloudWatch metrics of crmsync, recorded through the [`metrics`] facade. In Lambda the edge
//! installs a recorder that prints them in Embedded Metric Format (one JSON line per set of
//! dimensions, read by CloudWatch Logs); elsewhere (the tests, the admin command) nothing is recorded.
//!
//! Namespace `crmsync`. Syncs and pushes have the dimension `Provider` (`rex`, `followupboss`,
//! `lofty`); the outbox and integration gauges have none. `template.yaml`'s alarms name these metrics.

use std::time::Duration;

use crmsync_domain::Provider;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::pull::SyncMetrics;

/// The CloudWatch namespace.
pub const NAMESPACE: &str = "crmsync";
/// The dimension of sync and push metrics.
pub const PROVIDER: &str = "Provider";

pub const CONTACTS_FETCHED: &str = "ContactsFetched";
pub const CONTACTS_UPSERTED: &str = "ContactsUpserted";
pub const CONTACTS_SKIPPED: &str = "ContactsSkipped";
pub const CONTACTS_DELETED: &str = "ContactsDeleted";
pub const SYNC_DURATION: &str = "SyncDuration";
pub const SYNCS_FAILED: &str = "SyncsFailed";
pub const PUSHES_DELIVERED: &str = "PushesDelivered";
pub const PUSHES_FAILED: &str = "PushesFailed";
pub const PUSHES_DEFERRED: &str = "PushesDeferred";
pub const PACING_WAIT: &str = "PacingWait";
pub const OUTBOX_DUE: &str = "OutboxDue";
pub const OUTBOX_PAUSED: &str = "OutboxPaused";
pub const INTEGRATIONS_PAUSED: &str = "IntegrationsPaused";
pub const INTEGRATIONS_NEEDS_REAUTH: &str = "IntegrationsNeedsReauth";

/// Gives each metric its unit (call once, after the recorder is installed).
pub fn describe() {
    for name in [
        CONTACTS_FETCHED,
        CONTACTS_UPSERTED,
        CONTACTS_SKIPPED,
        CONTACTS_DELETED,
        SYNCS_FAILED,
        PUSHES_DELIVERED,
        PUSHES_FAILED,
        PUSHES_DEFERRED,
    ] {
        describe_counter!(name, Unit::Count, "");
    }
    describe_counter!(
        PACING_WAIT,
        Unit::Milliseconds,
        "time pushes waited for their CRM account's turn"
    );
    describe_histogram!(
        SYNC_DURATION,
        Unit::Milliseconds,
        "duration of one pull sync"
    );
    for name in [
        OUTBOX_DUE,
        OUTBOX_PAUSED,
        INTEGRATIONS_PAUSED,
        INTEGRATIONS_NEEDS_REAUTH,
    ] {
        describe_gauge!(name, Unit::Count, "");
    }
}

/// A pull sync finished (`Ok`) or failed (`Err`, with what it had done).
pub fn sync_finished(provider: Provider, metrics: &SyncMetrics, failed: bool) {
    let p = provider.as_str();
    counter!(CONTACTS_FETCHED, PROVIDER => p).increment(metrics.total_fetched);
    counter!(CONTACTS_UPSERTED, PROVIDER => p).increment(metrics.upserted);
    counter!(CONTACTS_SKIPPED, PROVIDER => p).increment(metrics.skipped);
    counter!(CONTACTS_DELETED, PROVIDER => p).increment(metrics.deleted);
    histogram!(SYNC_DURATION, PROVIDER => p).record(metrics.duration_ms as f64);
    if failed {
        counter!(SYNCS_FAILED, PROVIDER => p).increment(1);
    }
}

/// What one push attempt ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Delivered,
    Failed,
    Deferred,
}

/// A delivery was pushed (or tried).
pub fn pushed(provider: Provider, outcome: Pushed) {
    let name = match outcome {
        Pushed::Delivered => PUSHES_DELIVERED,
        Pushed::Failed => PUSHES_FAILED,
        Pushed::Deferred => PUSHES_DEFERRED,
    };
    counter!(name, PROVIDER => provider.as_str()).increment(1);
}

/// A push waited `wait` for its CRM account's turn.
pub fn pacing_wait(provider: Provider, wait: Duration) {
    counter!(PACING_WAIT, PROVIDER => provider.as_str())
        .increment(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
}

/// The outbox and integrations as the scheduled run last counted them.
pub fn health(h: &crmsync_store::Health) {
    gauge!(OUTBOX_DUE).set(h.outbox_due as f64);
    gauge!(OUTBOX_PAUSED).set(h.outbox_paused as f64);
    gauge!(INTEGRATIONS_PAUSED).set(h.integrations_paused as f64);
    gauge!(INTEGRATIONS_NEEDS_REAUTH).set(h.integrations_needs_reauth as f64);
}
