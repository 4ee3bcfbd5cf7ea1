//! Pure domain of crmsync: providers, phone numbers, contacts, leads, incremental-sync cursors and
//! the field mapping between our records and the three CRMs (REX, Follow Up Boss, Lofty).
//!
//! Nothing in this crate does I/O. Every function is deterministic and total: malformed CRM
//! records never panic, they map to [`Mapped::Skipped`] or to absent fields.

pub mod contact;
pub mod cursor;
pub mod lead;
pub mod mapping;
pub mod phone;
pub mod provider;

mod json;

pub use contact::{Contact, Mapped, NormalizedContact, SkipReason, Skipped, dedupe_by_phone};
pub use cursor::SyncCursor;
pub use lead::{Lead, LeadError, LeadEvent, LeadEventKind, LeadPayload};
pub use mapping::map_record;
pub use phone::{PhoneError, PhoneNumber, Region, UnknownRegion};
pub use provider::{Provider, UnknownProvider};
