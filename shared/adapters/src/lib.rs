//! Adapters of crmsync: everything that touches the outside world, beside the pure domain.
//!
//! * [`config`]: environment settings and the Secrets Manager secret (fetched once per cold start).
//! * [`error`] and [`http`]: the one error type callers see, `{error, detail}`, and response helpers.
//! * [`auth`]: caller authentication by HS256 JWT.
//! * [`vault`]: AES-256-GCM sealing of CRM credentials.
//! * [`store`]: Postgres, with migrations and Row Level Security.
//! * [`limiter`]: token buckets in DynamoDB.

pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod limiter;
pub mod store;
pub mod vault;

pub use error::{ApiError, ErrorCode};
