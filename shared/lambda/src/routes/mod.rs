//! One module per function: each parses its request, calls one use case of `crmsync-app` and answers.
//! A function's `main.rs` runs its module's `handle` (see [`crate::run_http`] and
//! [`crate::run_event`]).

pub mod auth_status;
pub mod contacts_fetch;
pub mod contacts_sync;
pub mod crm_webhook;
pub mod deliveries;
pub mod integration_sync;
pub mod integrations;
pub mod lead_webhook;
pub mod oauth_callback;
pub mod oauth_start;
pub mod scheduled_sync;
pub mod sync_logs;
pub mod sync_worker;
