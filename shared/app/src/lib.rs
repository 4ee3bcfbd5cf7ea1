//! The use cases of crmsync, with typed inputs and outputs and their own error type ([`AppError`]):
//! connecting CRM accounts ([`oauth`], [`integrations`]), checking them ([`auth_status`]), pulling
//! contacts ([`pull`]), pushing leads ([`push`]) and the scheduled run ([`schedule`]). They work with a
//! [`Context`]; none of them knows about HTTP, Lambda or the environment (that is `crmsync-lambda`), so
//! the benchmarks, the local stack and the tests call them as they are.

pub mod auth_status;
pub mod context;
pub mod credentials;
pub mod deliveries;
mod error;
#[cfg(test)]
mod fake;
pub mod integrations;
pub mod live;
pub mod metrics;
pub mod oauth;
pub mod pull;
pub mod push;
pub mod queue;
pub mod schedule;

pub use context::{Context, Crms, Settings};
pub use error::{AppError, Internal};
pub use queue::SyncQueue;
