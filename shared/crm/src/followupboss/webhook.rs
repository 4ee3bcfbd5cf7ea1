//! Follow Up Boss webhook deliveries (crm-apis §1.6): `{"eventId","eventCreated","event","resourceIds",
//! "uri"}`, thin (the people are read back), signed with `FUB-Signature`: lowercase hex
//! HMAC-SHA256 keyed with the system's `X-System-Key` over the base64 of the exact body.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use crate::CrmConfig;
use crate::records::id_of;
use crate::webhook::{Change, Headers, Hint, Refused, distinct};

/// The `FUB-Signature` of `body` under `key` (HMAC takes a key of any length: `None` never happens).
pub fn signature(key: &str, body: &[u8]) -> Option<String> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).ok()?;
    mac.update(
        base64::engine::general_purpose::STANDARD
            .encode(body)
            .as_bytes(),
    );
    Some(hex::encode(mac.finalize().into_bytes()))
}

pub(super) fn read(
    config: &CrmConfig,
    headers: &dyn Headers,
    body: &[u8],
) -> Result<Hint, Refused> {
    // Checked when a system key is configured (without one, FUB has nothing to sign with).
    let key = config.secrets.followupboss.system_key.trim();
    if !key.is_empty() {
        let given = headers
            .header("fub-signature")
            .map(|s| s.trim().to_ascii_lowercase())
            .ok_or(Refused::BadSignature)?;
        let expected = signature(key, body).ok_or(Refused::BadSignature)?;
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(Refused::BadSignature);
        }
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    let event = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::Malformed("no `event`".into()))?;
    let receipt = v.get("eventId").and_then(id_of);
    // `resourceIds`, else the `id` list of `uri` (`…/v1/people?id=1,2`).
    let mut ids: Vec<String> = v
        .get("resourceIds")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(id_of).collect())
        .unwrap_or_default();
    if ids.is_empty()
        && let Some(uri) = v.get("uri").and_then(Value::as_str)
        && let Ok(url) = reqwest::Url::parse(uri)
    {
        for (k, val) in url.query_pairs() {
            if k == "id" {
                ids.extend(
                    val.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    let ids = distinct(ids.into_iter());
    let change = match event {
        // "deleted events have no fetchable resource" (§1.6).
        "peopleDeleted" => Change::Records {
            changed: Vec::new(),
            deleted: ids,
        },
        "peopleCreated" | "peopleUpdated" | "peopleStageUpdated" | "peopleTagsCreated" => {
            Change::Records {
                changed: ids,
                deleted: Vec::new(),
            }
        }
        _ => Change::Nothing,
    };
    Ok(Hint { receipt, change })
}
