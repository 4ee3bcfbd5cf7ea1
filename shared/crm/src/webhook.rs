//! What a CRM's webhook delivery says, once read: a hint of what changed (the receiver confirms it by
//! reading the records back, crm-apis §1.6 "handlers must re-fetch"), or why it is refused. Each CRM
//! reads its own deliveries (`CrmKind::read_webhook`, in its folder).

use sha2::{Digest, Sha256};

/// The headers of a delivery, by lower-case name (so that callers need not share an HTTP crate).
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Records a delivery names at most (a larger batch is cut here; the safety-net poll reads the rest).
pub const MAX_RECORDS: usize = 500;

/// What a delivery says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The CRM's id of the delivery, where it gives one: a second delivery with the same id is a replay
    /// or a retry, and changes nothing.
    pub receipt: Option<String>,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These records were created or changed (read them back: a record may be gone by then), and these
    /// were deleted (they cannot be read back).
    Records {
        changed: Vec<String>,
        deleted: Vec<String>,
    },
    /// Something in the account changed and the delivery does not say what (Lofty): read the account's
    /// changes.
    Account,
    /// Nothing crmsync keeps changed (another event family).
    Nothing,
}

/// Why a delivery is refused. Nothing is changed for a refused delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The signature is missing or wrong (a forged delivery, or a signing key that changed).
    #[error("the delivery's signature does not match")]
    BadSignature,
    /// The delivery names another account than the integration's.
    #[error("the delivery is for another account")]
    OtherAccount,
    /// The body is not a delivery of this CRM.
    #[error("the body is not a webhook delivery of this CRM: {0}")]
    Malformed(String),
}

/// A short, fixed-length receipt for a delivery that names several event ids: the SHA-256 of them in
/// order, hex.
pub(crate) fn receipt_of<'a>(ids: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut h = Sha256::new();
    let mut any = false;
    for id in ids {
        h.update(id.as_bytes());
        h.update([0]);
        any = true;
    }
    any.then(|| hex::encode(h.finalize()))
}

/// `ids` without repeats, in order, at most [`MAX_RECORDS`].
pub(crate) fn distinct(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if out.len() == MAX_RECORDS {
            break;
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}
