//! The contract's behaviour of each function of its routes table (`docs/contract.md`), one file per
//! function, each driven through the function's handler as API Gateway or EventBridge calls it.
//! Concurrency, faults, crashes, security and hostile input across routes are in `qualities/`.

mod auth_status;
mod contacts_fetch;
pub(crate) mod contacts_sync;
mod contacts_sync_changes;
mod crm_webhook;
pub(crate) mod deliveries;
pub(crate) mod integration_sync;
pub(crate) mod integrations;
pub(crate) mod lead_webhook;
mod oauth_callback;
mod oauth_start;
pub(crate) mod scheduled_sync;
pub(crate) mod sync_logs;
pub(crate) mod sync_worker;
