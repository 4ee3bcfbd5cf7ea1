//! Leads from our dashboard, to be pushed to the CRMs.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::json;
use crate::phone::{PhoneNumber, Region};

/// A raw lead as the webhook delivers it. Lenient on purpose: it reads both our camelCase
/// envelope (`{id,userId,firstName,lastName,phone,email,riskScore,source,tags,notes,updatedAt}`)
/// and the snake_case Supabase row (`user_id`, `first_name`, …); unknown fields are ignored.
///
/// Scalars arrive as whatever the sender had: `id` and `phone` may be numbers, `tags` an array
/// (non-string items are stringified or dropped) or null, and `riskScore` is kept as raw JSON so
/// that [`Lead::from_payload`] can tell "absent" from "not a number". Validation happens in
/// [`Lead::from_payload`], never here: deserializing a JSON object into `LeadPayload` only fails
/// when a key appears twice (e.g. both `userId` and `user_id`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeadPayload {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(alias = "user_id", deserialize_with = "lenient_string")]
    pub user_id: Option<String>,
    #[serde(alias = "first_name", deserialize_with = "lenient_string")]
    pub first_name: Option<String>,
    #[serde(alias = "last_name", deserialize_with = "lenient_string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub phone: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(alias = "risk_score")]
    pub risk_score: Option<Value>,
    #[serde(deserialize_with = "lenient_string")]
    pub source: Option<String>,
    #[serde(deserialize_with = "lenient_tags")]
    pub tags: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_string")]
    pub notes: Option<String>,
    #[serde(alias = "updated_at", deserialize_with = "lenient_string")]
    pub updated_at: Option<String>,
}

/// Strings as they are; integers in decimal (exactly, for int64 ids); anything else is absent.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match &v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(json::id(&v).unwrap_or_else(|| n.to_string())),
        _ => None,
    })
}

/// An array of tags (strings kept, numbers stringified, other items dropped), a comma-separated
/// string, or null.
fn lenient_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Array(items) => Some(items.iter().filter_map(json::text_or_integer).collect()),
        Value::String(s) => Some(s.split(',').map(str::to_owned).collect()),
        _ => None,
    })
}

/// A validated lead. Strings are trimmed (empty means absent), names whitespace-collapsed, the
/// e-mail lower-cased, the phone E.164 (or `None` when missing or unparseable: the push then logs
/// "skipped: no_phone" or "skipped: invalid_phone"), tags trimmed and de-duplicated in order. A risk
/// score outside 0–100 is kept as it came (rounded away from the range) for the push rules to skip.
///
/// Serializes in the camelCase envelope shape, so a serialized `Lead` reads back through
/// [`LeadPayload`] to the same `Lead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    pub id: String,
    pub user_id: Uuid,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<PhoneNumber>,
    /// A phone was given but is not a valid number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub phone_invalid: bool,
    pub email: Option<String>,
    pub risk_score: Option<i32>,
    pub source: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Why a webhook lead was refused. Messages quote at most a short prefix of the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("lead has no id")]
    MissingId,
    #[error("lead has no userId")]
    MissingUserId,
    #[error("lead userId {0:?} is not a UUID")]
    InvalidUserId(String),
    #[error("lead updatedAt {0:?} is not an RFC 3339 timestamp")]
    InvalidUpdatedAt(String),
    #[error("lead riskScore {0:?} is not a number")]
    InvalidRiskScore(String),
    #[error("webhook body is not a lead event: {0}")]
    InvalidEnvelope(&'static str),
    #[error("webhook event {0:?} is not a lead creation or update")]
    UnsupportedEvent(String),
}

impl Lead {
    /// Validates a raw lead. `region` reads phone numbers written without a country code.
    pub fn from_payload(p: LeadPayload, region: Region) -> Result<Lead, LeadError> {
        let id =
            p.id.as_deref()
                .and_then(non_empty)
                .ok_or(LeadError::MissingId)?;
        let user_raw = p
            .user_id
            .as_deref()
            .and_then(non_empty)
            .ok_or(LeadError::MissingUserId)?;
        let user_id = Uuid::parse_str(&user_raw)
            .map_err(|_| LeadError::InvalidUserId(json::shorten(&user_raw, 40)))?;
        let updated_at = match p.updated_at.as_deref().and_then(non_empty) {
            None => None,
            Some(raw) => Some(
                json::time_str(&raw)
                    .ok_or_else(|| LeadError::InvalidUpdatedAt(json::shorten(&raw, 40)))?,
            ),
        };
        let risk_score = risk_score(p.risk_score.as_ref())?;

        let mut tags: Vec<String> = Vec::new();
        for t in p.tags.unwrap_or_default() {
            if let Some(t) = json::clean_name(&t)
                && !tags.contains(&t)
            {
                tags.push(t);
            }
        }

        let given = p.phone.as_deref().and_then(non_empty);
        let phone = given
            .as_deref()
            .and_then(|raw| PhoneNumber::parse(raw, region).ok());
        Ok(Lead {
            id,
            user_id,
            first_name: p.first_name.as_deref().and_then(json::clean_name),
            last_name: p.last_name.as_deref().and_then(json::clean_name),
            phone_invalid: given.is_some() && phone.is_none(),
            phone,
            email: p.email.as_deref().and_then(json::normalize_email),
            risk_score,
            source: p.source.as_deref().and_then(non_empty),
            tags,
            notes: p.notes.as_deref().and_then(non_empty),
            updated_at,
        })
    }

    /// Identity of this version of the lead, for idempotent delivery: `sha256:<hex>` of a canonical
    /// serialization of every field but `updatedAt` (key order and whitespace of the original JSON do
    /// not matter; tags are compared as a set), preceded by `updated_at` in RFC 3339 with millisecond
    /// precision and a `/` when present (`2024-05-01T10:00:00.123Z/sha256:…`). The content is always
    /// part of it: a sender that does not bump `updatedAt` still sends each edit as a new version. The
    /// key identifies a version of *one* lead: pair it with [`Lead::id`] (and the user).
    pub fn version_key(&self) -> String {
        let hash = self.content_hash();
        match self.updated_at {
            Some(t) => format!("{}/{hash}", t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => hash,
        }
    }

    /// What a lead's phone is, for the push rules.
    pub fn phone_state(&self) -> crate::policy::LeadPhone {
        use crate::policy::LeadPhone;
        match (&self.phone, self.phone_invalid) {
            (Some(_), _) => LeadPhone::Usable,
            (None, true) => LeadPhone::Invalid,
            (None, false) => LeadPhone::Missing,
        }
    }

    fn content_hash(&self) -> String {
        let mut tags: Vec<&str> = self.tags.iter().map(String::as_str).collect();
        tags.sort_unstable();
        // An array of [key, value] pairs in a fixed order: independent of serde_json's map
        // ordering features.
        let canonical = serde_json::json!([
            ["v", "crmsync.lead.1"],
            ["id", self.id],
            ["userId", self.user_id.to_string()],
            ["firstName", self.first_name],
            ["lastName", self.last_name],
            ["phone", self.phone.as_ref().map(PhoneNumber::as_str)],
            ["email", self.email],
            ["riskScore", self.risk_score],
            ["source", self.source],
            ["tags", tags],
            ["notes", self.notes],
        ]);
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        format!("sha256:{}", hex::encode(digest))
    }

    /// `"First Last"`, trimmed; empty when the lead has no name.
    pub fn display_name(&self) -> String {
        json::join_name(self.first_name.as_deref(), self.last_name.as_deref()).unwrap_or_default()
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// A number or a numeric string. A fractional score is rounded *up* (20.2 counts as 21), so that a
/// lead just above an integration's risk threshold is never pushed because of rounding; a negative
/// one is rounded down (-0.5 counts as -1), so that it stays out of range. A score outside 0–100 is
/// not an error here: the push rules skip it (and log why) for every integration.
fn risk_score(v: Option<&Value>) -> Result<Option<i32>, LeadError> {
    let number: f64 = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => return int_score(i).map(Some),
            None => n.as_f64().unwrap_or(f64::NAN),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if let Ok(i) = s.parse::<i64>() {
                return int_score(i).map(Some);
            }
            match s.parse::<f64>() {
                Ok(f) if f.is_finite() => f,
                _ => return Err(LeadError::InvalidRiskScore(json::shorten(s, 20))),
            }
        }
        Some(other) => {
            let kind = match other {
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            return Err(LeadError::InvalidRiskScore(kind.to_owned()));
        }
    };
    if !number.is_finite() {
        return Err(LeadError::InvalidRiskScore(
            "a non-finite number".to_owned(),
        ));
    }
    let rounded = if number < 0.0 {
        number.floor()
    } else {
        number.ceil()
    };
    // `as` saturates: a huge score stays out of range.
    Ok(Some(rounded as i32))
}

fn int_score(i: i64) -> Result<i32, LeadError> {
    Ok(i.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// What happened to the lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadEventKind {
    Created,
    Updated,
}

impl LeadEventKind {
    /// `"lead.created"` / `"lead.updated"`.
    pub fn as_event_name(self) -> &'static str {
        match self {
            LeadEventKind::Created => "lead.created",
            LeadEventKind::Updated => "lead.updated",
        }
    }
}

/// A lead webhook body in either accepted shape: our envelope
/// `{"event":"lead.created"|"lead.updated","lead":{…}}`, or a Supabase database webhook
/// `{"type":"INSERT"|"UPDATE","table","schema","record":{…},"old_record"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadEvent {
    pub kind: LeadEventKind,
    pub payload: LeadPayload,
}

impl LeadEvent {
    /// Reads a webhook body. Supabase `DELETE` events and unknown event names are
    /// [`LeadError::UnsupportedEvent`]; a body that is neither shape is
    /// [`LeadError::InvalidEnvelope`]. An envelope without `event` counts as `lead.created`.
    pub fn from_json(body: &Value) -> Result<LeadEvent, LeadError> {
        let obj = body
            .as_object()
            .ok_or(LeadError::InvalidEnvelope("expected a JSON object"))?;
        let (kind, record) = if let Some(lead) = obj.get("lead") {
            let kind = match obj.get("event").and_then(Value::as_str).map(str::trim) {
                None | Some("lead.created") => LeadEventKind::Created,
                Some("lead.updated") => LeadEventKind::Updated,
                Some(other) => return Err(LeadError::UnsupportedEvent(json::shorten(other, 40))),
            };
            (kind, lead)
        } else if let Some(record) = obj.get("record") {
            let kind = match obj.get("type").and_then(Value::as_str).map(str::trim) {
                Some(t) if t.eq_ignore_ascii_case("INSERT") => LeadEventKind::Created,
                Some(t) if t.eq_ignore_ascii_case("UPDATE") => LeadEventKind::Updated,
                Some(other) => return Err(LeadError::UnsupportedEvent(json::shorten(other, 40))),
                None => return Err(LeadError::InvalidEnvelope("Supabase payload without type")),
            };
            (kind, record)
        } else {
            return Err(LeadError::InvalidEnvelope(
                "expected {event, lead} or a Supabase {type, record} payload",
            ));
        };
        if !record.is_object() {
            return Err(LeadError::InvalidEnvelope("the lead is not a JSON object"));
        }
        let payload = LeadPayload::deserialize(record)
            .map_err(|_| LeadError::InvalidEnvelope("the lead has a field given twice"))?;
        Ok(LeadEvent { kind, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = "6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f";

    fn lead(v: Value) -> Result<Lead, LeadError> {
        Lead::from_payload(serde_json::from_value(v).unwrap(), Region::US)
    }

    #[test]
    fn camel_case_envelope_lead() {
        let l = lead(json!({
            "id": "lead_1", "userId": USER, "firstName": "  Mary ", "lastName": "Ann  Lee",
            "phone": "(415) 555-0123", "email": " Mary@Example.com ", "riskScore": 15,
            "source": "Echo Safe", "tags": ["buyer", " hot ", "buyer", ""], "notes": " call after 5 ",
            "updatedAt": "2024-05-01T10:00:00.123456Z", "somethingNew": {"x": 1}
        }))
        .unwrap();
        assert_eq!(l.id, "lead_1");
        assert_eq!(l.user_id.to_string(), USER);
        assert_eq!(l.display_name(), "Mary Ann Lee");
        assert_eq!(l.phone.as_ref().unwrap().as_str(), "+14155550123");
        assert_eq!(l.email.as_deref(), Some("mary@example.com"));
        assert_eq!(l.risk_score, Some(15));
        assert_eq!(l.source.as_deref(), Some("Echo Safe"));
        assert_eq!(l.tags, ["buyer", "hot"]);
        assert_eq!(l.notes.as_deref(), Some("call after 5"));
        assert!(
            l.version_key()
                .starts_with("2024-05-01T10:00:00.123Z/sha256:")
        );
    }

    #[test]
    fn snake_case_supabase_row_with_numeric_id_and_string_score() {
        let l = lead(json!({
            "id": 9007199254740993_i64, "user_id": USER, "first_name": "Bob", "last_name": null,
            "phone": "+61 412 345 678", "email": null, "risk_score": "15", "source": null,
            "tags": null, "notes": null, "updated_at": "2024-05-01 10:00:00+00",
            "created_at": "2024-04-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(l.id, "9007199254740993");
        assert_eq!(l.risk_score, Some(15));
        assert_eq!(l.display_name(), "Bob");
        assert_eq!(l.phone.unwrap().as_str(), "+61412345678");
        assert!(l.tags.is_empty());
        assert_eq!(l.updated_at, Some("2024-05-01T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn missing_or_bad_phone_is_not_an_error() {
        let l = lead(json!({"id": "1", "userId": USER})).unwrap();
        assert_eq!(l.phone, None);
        assert_eq!(l.display_name(), "");
        assert_eq!(l.phone_state(), crate::policy::LeadPhone::Missing);
        let l = lead(json!({"id": "1", "userId": USER, "phone": "n/a"})).unwrap();
        assert_eq!(l.phone, None);
        assert_eq!(l.phone_state(), crate::policy::LeadPhone::Invalid);
        let l = lead(json!({"id": "1", "userId": USER, "phone": 4155550123_u64})).unwrap();
        assert_eq!(l.phone.unwrap().as_str(), "+14155550123");
    }

    #[test]
    fn validation_errors_name_the_problem() {
        assert_eq!(lead(json!({"userId": USER})), Err(LeadError::MissingId));
        assert_eq!(
            lead(json!({"id": "  ", "userId": USER})),
            Err(LeadError::MissingId)
        );
        assert_eq!(lead(json!({"id": "1"})), Err(LeadError::MissingUserId));
        assert_eq!(
            lead(json!({"id": "1", "userId": "user-42"})),
            Err(LeadError::InvalidUserId("user-42".into()))
        );
        assert_eq!(
            lead(json!({"id": "1", "userId": USER, "updatedAt": "last tuesday"})),
            Err(LeadError::InvalidUpdatedAt("last tuesday".into()))
        );
        assert_eq!(
            lead(json!({"id": "1", "userId": USER, "riskScore": "high"})),
            Err(LeadError::InvalidRiskScore("high".into()))
        );
        assert_eq!(
            lead(json!({"id": "1", "userId": USER, "riskScore": {"v": 1}})),
            Err(LeadError::InvalidRiskScore("an object".into()))
        );
        let long = "x".repeat(5000);
        let msg = lead(json!({"id": "1", "userId": long}))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 120, "{msg}");
    }

    #[test]
    fn risk_score_shapes() {
        let score = |v: Value| {
            lead(json!({"id": "1", "userId": USER, "riskScore": v})).map(|l| l.risk_score)
        };
        assert_eq!(score(json!(null)), Ok(None));
        assert_eq!(score(json!("")), Ok(None));
        assert_eq!(score(json!(" 15 ")), Ok(Some(15)));
        assert_eq!(score(json!(0)), Ok(Some(0)));
        assert_eq!(score(json!(100)), Ok(Some(100)));
        assert_eq!(score(json!(15.0)), Ok(Some(15)));
        assert_eq!(score(json!(20.2)), Ok(Some(21)));
        assert_eq!(score(json!("99.5")), Ok(Some(100)));
        // Out of range is kept (and skipped by the push rules), never rounded into range.
        assert_eq!(score(json!(100.5)), Ok(Some(101)));
        assert_eq!(score(json!(-0.5)), Ok(Some(-1)));
        assert_eq!(score(json!(-1)), Ok(Some(-1)));
        assert_eq!(score(json!("150")), Ok(Some(150)));
        assert_eq!(score(json!(1e300)), Ok(Some(i32::MAX)));
        assert_eq!(score(json!(-9_000_000_000_i64)), Ok(Some(i32::MIN)));
    }

    #[test]
    fn version_key_without_time_ignores_key_order_and_whitespace() {
        let a: LeadPayload = serde_json::from_str(&format!(
            r#"{{"id":"7","userId":"{USER}","firstName":"Ann","phone":"4155550123","tags":["a","b"]}}"#
        ))
        .unwrap();
        let b: LeadPayload = serde_json::from_str(&format!(
            "{{\n  \"tags\" : [\"b\", \"a\"],\n  \"phone\": \"(415) 555-0123\",\n  \"first_name\": \" Ann \",\n  \"user_id\": \"{}\",\n  \"id\": 7\n}}",
            USER.to_uppercase()
        ))
        .unwrap();
        let ka = Lead::from_payload(a, Region::US).unwrap().version_key();
        let kb = Lead::from_payload(b, Region::US).unwrap().version_key();
        assert_eq!(ka, kb);
        assert!(ka.starts_with("sha256:"));
        assert_eq!(ka.len(), "sha256:".len() + 64);

        let c = lead(json!({"id": "7", "userId": USER, "firstName": "Anne", "phone": "4155550123", "tags": ["a", "b"]}))
            .unwrap()
            .version_key();
        assert_ne!(ka, c, "a changed field is a new version");
    }

    #[test]
    fn version_key_with_time_is_millisecond_rfc3339() {
        let k = |t: &str| {
            lead(json!({"id": "1", "userId": USER, "updatedAt": t}))
                .unwrap()
                .version_key()
        };
        assert!(k("2024-05-01T12:00:00+02:00").starts_with("2024-05-01T10:00:00.000Z/sha256:"));
        assert!(k("2024-05-01T10:00:00.1234Z").starts_with("2024-05-01T10:00:00.123Z/sha256:"));
        // An edit that does not bump updatedAt is still a new version.
        let a = lead(
            json!({"id": "1", "userId": USER, "firstName": "A", "updatedAt": "2024-05-01T10:00:00Z"}),
        );
        let b = lead(
            json!({"id": "1", "userId": USER, "firstName": "B", "updatedAt": "2024-05-01T10:00:00Z"}),
        );
        assert_ne!(a.unwrap().version_key(), b.unwrap().version_key());
    }

    #[test]
    fn serialized_lead_reads_back_through_the_payload() {
        let l = lead(json!({
            "id": "9", "userId": USER, "firstName": "Zoë", "phone": "+44 20 7946 0958",
            "riskScore": "3", "tags": ["x"], "updatedAt": "2024-05-01T10:00:00Z"
        }))
        .unwrap();
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["phone"], json!("+442079460958"));
        assert_eq!(v["userId"], json!(USER));
        assert_eq!(lead(v).unwrap(), l);
    }

    #[test]
    fn webhook_envelopes() {
        let e = LeadEvent::from_json(
            &json!({"event": "lead.updated", "lead": {"id": "1", "userId": USER}}),
        )
        .unwrap();
        assert_eq!(e.kind, LeadEventKind::Updated);
        assert_eq!(e.payload.id.as_deref(), Some("1"));

        let e = LeadEvent::from_json(&json!({
            "type": "INSERT", "table": "leads", "schema": "public",
            "record": {"id": 5, "user_id": USER, "risk_score": 4}, "old_record": null
        }))
        .unwrap();
        assert_eq!(e.kind, LeadEventKind::Created);
        assert_eq!(
            Lead::from_payload(e.payload, Region::US)
                .unwrap()
                .risk_score,
            Some(4)
        );

        assert_eq!(
            LeadEvent::from_json(&json!({"type": "DELETE", "record": {}})),
            Err(LeadError::UnsupportedEvent("DELETE".into()))
        );
        assert_eq!(
            LeadEvent::from_json(&json!({"event": "lead.deleted", "lead": {}})),
            Err(LeadError::UnsupportedEvent("lead.deleted".into()))
        );
        assert!(matches!(
            LeadEvent::from_json(&json!([1])),
            Err(LeadError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            LeadEvent::from_json(&json!({"lead": "x"})),
            Err(LeadError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            LeadEvent::from_json(&json!({"lead": {"userId": USER, "user_id": USER}})),
            Err(LeadError::InvalidEnvelope(_))
        ));
        assert_eq!(LeadEventKind::Created.as_event_name(), "lead.created");
    }
}
