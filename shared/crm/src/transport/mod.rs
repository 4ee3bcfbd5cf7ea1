//! The one transport of every CRM: the shared HTTP client with its retry policy ([`client`]), pacing by
//! the CRMs' rate-limit headers ([`pacer`]), and the per-account plumbing the CRM clients send through
//! ([`conn`]).

mod client;
mod conn;
pub(crate) mod deadline;
mod pacer;

pub(crate) use client::Reply;
pub use client::{CrmHttp, RetryPolicy, Sleeper, Timeouts};
pub(crate) use conn::{Conn, base_headers};
pub use deadline::with_deadline;
pub use pacer::Pacer;

pub(crate) use client::Call;
