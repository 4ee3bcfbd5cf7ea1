//! The AWS parts of crmsync, each usable on its own:
//!
//! * [`secret`]: the application secret, fetched from Secrets Manager once per cold start and cached.
//! * [`limiter`]: token buckets in DynamoDB shared by every Lambda (caller limits, CRM pacing), and
//!   one-time claims (used OAuth states).
//! * [`queue`]: the sync queue in SQS (sending; Lambda's event source receives).
//! * [`sdk`]: the SDK configuration, with the credentials chain built on the first AWS call and every
//!   DynamoDB call bounded in time.

pub mod limiter;
pub mod queue;
pub mod sdk;
pub mod secret;

pub use limiter::{Decision, LimiterError, Rate, RateLimiter};
pub use queue::{Queue, QueueError};
pub use secret::{FromSecret, SecretError, SecretsProvider};
