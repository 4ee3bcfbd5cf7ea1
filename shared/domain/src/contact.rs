//! Contacts read from a CRM, normalized.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::phone::PhoneNumber;
use crate::provider::Provider;

/// A CRM contact normalized for our `contacts` table: the phone is E.164 and is the contact's
/// identity, the e-mail is lower-cased, the name is whitespace-collapsed and never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The CRM's id of the record, as a string (ids may arrive as JSON numbers).
    pub external_id: Option<String>,
    /// The name the record carries; `None` when it has none (see [`Contact::display_name`]).
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: PhoneNumber,
    pub notes: Option<String>,
    /// When the CRM last changed the record; `None` for a CRM whose records carry no update time.
    pub updated_at: Option<DateTime<Utc>>,
    /// When the record was created in the CRM, where it says.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    pub source: Provider,
    /// The CRM marks the record deleted (trashed, archived): it is no longer a live source.
    #[serde(default)]
    pub deleted: bool,
}

impl Contact {
    /// The name to show: the record's name, else its e-mail, else its phone.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.email.clone())
            .unwrap_or_else(|| self.phone.as_str().to_owned())
    }
}

/// The inspection shape returned by `contacts/fetch`: exactly
/// `{"externalId","name","email","phoneNumber","notes","updatedAt"}`, absent values as `null`,
/// `updatedAt` in RFC 3339 (UTC, `Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedContact {
    pub external_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub phone_number: PhoneNumber,
    pub notes: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&Contact> for NormalizedContact {
    fn from(c: &Contact) -> Self {
        NormalizedContact {
            external_id: c.external_id.clone(),
            name: c.display_name(),
            email: c.email.clone(),
            phone_number: c.phone.clone(),
            notes: c.notes.clone(),
            updated_at: c.updated_at,
        }
    }
}

impl From<Contact> for NormalizedContact {
    fn from(c: Contact) -> Self {
        NormalizedContact {
            name: c.display_name(),
            external_id: c.external_id,
            email: c.email,
            phone_number: c.phone,
            notes: c.notes,
            updated_at: c.updated_at,
        }
    }
}

/// The outcome of mapping one CRM record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Contact(Contact),
    Skipped(Skipped),
}

impl Mapped {
    pub fn contact(&self) -> Option<&Contact> {
        match self {
            Mapped::Contact(c) => Some(c),
            Mapped::Skipped(_) => None,
        }
    }

    pub fn into_contact(self) -> Option<Contact> {
        match self {
            Mapped::Contact(c) => Some(c),
            Mapped::Skipped(_) => None,
        }
    }

    pub fn skipped(&self) -> Option<&Skipped> {
        match self {
            Mapped::Contact(_) => None,
            Mapped::Skipped(s) => Some(s),
        }
    }

    /// Whether the CRM marks the record deleted (trashed, archived), mapped or not.
    pub fn deleted(&self) -> bool {
        match self {
            Mapped::Contact(c) => c.deleted,
            Mapped::Skipped(s) => s.deleted,
        }
    }

    /// When the CRM last changed the record, mapped or not.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Mapped::Contact(c) => c.updated_at,
            Mapped::Skipped(s) => s.updated_at,
        }
    }

    /// The CRM id of the record, mapped or not.
    pub fn external_id(&self) -> Option<&str> {
        match self {
            Mapped::Contact(c) => c.external_id.as_deref(),
            Mapped::Skipped(s) => s.external_id.as_deref(),
        }
    }
}

/// A CRM record that could not become a [`Contact`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub external_id: Option<String>,
    pub reason: SkipReason,
    /// When the CRM last changed the record: a sync's cursor moves past skipped records too.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The CRM marks the record deleted (trashed, archived).
    #[serde(default)]
    pub deleted: bool,
}

/// Why a record was skipped. Serialized in snake_case: `"no_phone"`, `"invalid_phone"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The record has no phone number at all (phones are our identity key).
    NoPhone,
    /// The record has phone numbers, but none is a valid number.
    InvalidPhone,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoPhone => "no_phone",
            SkipReason::InvalidPhone => "invalid_phone",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// De-duplicates by phone: for each phone keeps the record with the latest updated_at (None is
/// oldest; on a tie the later one in the input wins); output keeps the order of first occurrence.
pub fn dedupe_by_phone(contacts: Vec<Contact>) -> Vec<Contact> {
    let mut out: Vec<Contact> = Vec::with_capacity(contacts.len());
    let mut slot: HashMap<PhoneNumber, usize> = HashMap::with_capacity(contacts.len());
    for c in contacts {
        match slot.get(&c.phone) {
            Some(&i) => {
                // Option's order puts None first, which is exactly "None is oldest".
                if c.updated_at >= out[i].updated_at {
                    out[i] = c;
                }
            }
            None => {
                slot.insert(c.phone.clone(), out.len());
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Region;
    use serde_json::json;

    fn contact(id: &str, phone: &str, updated: Option<&str>) -> Contact {
        Contact {
            external_id: Some(id.to_owned()),
            name: Some(format!("Name {id}")),
            email: None,
            phone: PhoneNumber::parse(phone, Region::US).unwrap(),
            notes: None,
            updated_at: updated.map(|s| s.parse().unwrap()),
            created_at: None,
            source: Provider::FollowUpBoss,
            deleted: false,
        }
    }

    fn ids(cs: &[Contact]) -> Vec<&str> {
        cs.iter()
            .map(|c| c.external_id.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn normalized_contact_has_exactly_the_contract_keys() {
        let mut c = contact("42", "(415) 555-0123", Some("2024-03-01T12:00:00Z"));
        c.email = Some("a@b.co".into());
        let v = serde_json::to_value(NormalizedContact::from(&c)).unwrap();
        assert_eq!(
            v,
            json!({
                "externalId": "42",
                "name": "Name 42",
                "email": "a@b.co",
                "phoneNumber": "+14155550123",
                "notes": null,
                "updatedAt": "2024-03-01T12:00:00Z"
            })
        );
        let mut bare = c.clone();
        bare.updated_at = None;
        bare.external_id = None;
        let v = serde_json::to_value(NormalizedContact::from(bare)).unwrap();
        assert_eq!(v["updatedAt"], json!(null));
        assert_eq!(v["externalId"], json!(null));
        assert_eq!(v.as_object().unwrap().len(), 6);
    }

    #[test]
    fn skip_reason_is_snake_case() {
        assert_eq!(
            serde_json::to_string(&SkipReason::NoPhone).unwrap(),
            "\"no_phone\""
        );
        assert_eq!(
            serde_json::to_string(&SkipReason::InvalidPhone).unwrap(),
            "\"invalid_phone\""
        );
        assert_eq!(SkipReason::InvalidPhone.to_string(), "invalid_phone");
    }

    #[test]
    fn dedupe_keeps_latest_in_first_position() {
        let out = dedupe_by_phone(vec![
            contact("a", "415-555-0123", Some("2024-01-01T00:00:00Z")),
            contact("b", "+61 412 345 678", None),
            contact("c", "(415) 555-0123", Some("2024-02-01T00:00:00Z")),
            contact("d", "415 555 0123", Some("2023-12-31T00:00:00Z")),
        ]);
        assert_eq!(ids(&out), ["c", "b"]);
    }

    #[test]
    fn dedupe_none_is_oldest_and_ties_go_to_the_later_record() {
        let out = dedupe_by_phone(vec![
            contact("a", "415-555-0123", None),
            contact("b", "415-555-0123", Some("2024-01-01T00:00:00Z")),
            contact("c", "415-555-0123", None),
        ]);
        assert_eq!(ids(&out), ["b"]);

        let out = dedupe_by_phone(vec![
            contact("x", "415-555-0123", Some("2024-01-01T00:00:00Z")),
            contact("y", "415-555-0123", Some("2024-01-01T00:00:00Z")),
        ]);
        assert_eq!(ids(&out), ["y"]);

        let out = dedupe_by_phone(vec![
            contact("p", "415-555-0123", None),
            contact("q", "415-555-0123", None),
        ]);
        assert_eq!(ids(&out), ["q"]);
        assert!(dedupe_by_phone(Vec::new()).is_empty());
    }
}
