//! Lofty webhook deliveries (crm-apis §2.5). Every payload carries `teamId` and `listId`; nothing else is
//! documented, and no signature. The harsher reading: a Lead Info delivery (`listId` 2) says only that
//! leads of the team changed, so the receiver reads the account's changes. The integration's account is
//! Lofty's user (`GET /v1.0/me`, `userId`), not the team a delivery names, so the two are not compared:
//! the address's token says whose delivery it is, and a delivery at worst makes crmsync read its own
//! account's changes.

use serde_json::Value;

use crate::records::id_of;
use crate::webhook::{Change, Hint, Refused};

/// The list of lead changes.
const LEAD_INFO: u64 = 2;

pub(super) fn read(body: &[u8]) -> Result<Hint, Refused> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    if v.get("teamId").and_then(id_of).is_none() {
        return Err(Refused::Malformed("no `teamId`".into()));
    }
    let list = v
        .get("listId")
        .and_then(|l| l.as_u64().or_else(|| l.as_str()?.trim().parse().ok()))
        .ok_or_else(|| Refused::Malformed("no `listId`".into()))?;
    let change = if list == LEAD_INFO {
        Change::Account
    } else {
        Change::Nothing
    };
    Ok(Hint {
        receipt: None,
        change,
    })
}
