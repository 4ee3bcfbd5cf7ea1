//! Pure domain of crmsync: providers, phone numbers, contacts, leads, incremental-sync cursors, the
//! vocabularies of integrations and logs, and the rules of the push ([`policy`]).
//!
//! Nothing in this crate does I/O and nothing here knows a CRM's wire format (that is `crmsync-crm`).
//! Every function is deterministic and total: malformed input never panics.

pub mod contact;
pub mod cursor;
pub mod json;
pub mod lead;
pub mod loose;
pub mod phone;
pub mod policy;
pub mod provider;
pub mod status;

pub use contact::{Contact, Mapped, NormalizedContact, SkipReason, Skipped, dedupe_by_phone};
pub use cursor::{MAX_CLOCK_SKEW, SyncCursor};
pub use lead::{Lead, LeadError, LeadEvent, LeadEventKind, LeadPayload};
pub use phone::{PhoneError, PhoneNumber, Region, UnknownRegion};
pub use provider::{Provider, UnknownProvider};
pub use status::DeliveryStatus;
pub use status::{AuthType, Direction, IntegrationStatus, LogStatus, Trigger, UnknownName};
