//! Reading the records a CRM returns, whatever their shape: ids as strings or numbers, the phones
//! written on a record, and the candidate of a phone search that really has the phone.

use crmsync_domain::{PhoneNumber, Region};
use serde_json::Value;

use crate::{PushAction, PushResult};

/// An id as CRMs send it: a non-empty string, or an integer (ids are int64 in Lofty).
pub(crate) fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The first id found under `keys` of `v`.
pub(crate) fn id_at(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| v.get(*k).and_then(id_of))
}

/// The list under `key` of `body`, moved out of it (`None` when it is not a list).
pub(crate) fn take_list(body: &mut Value, key: &str) -> Option<Vec<Value>> {
    match body.get_mut(key)?.take() {
        Value::Array(list) => Some(list),
        _ => None,
    }
}

/// Whether a request body has nothing to send (`{}`).
pub(crate) fn is_empty(body: &Value) -> bool {
    body.as_object().is_some_and(|m| m.is_empty())
}

pub(crate) fn pushed(external_id: &str, action: PushAction) -> PushResult {
    PushResult {
        external_id: Some(external_id.to_owned()),
        action,
    }
}

/// Phone values to look at per record (bounds the work of a hostile record).
const MAX_PHONES: usize = 50;

/// Every phone written on a record, in any of the shapes the three CRMs use: `phones[]` of
/// strings or `{value|number|phone|phone_number|phoneNumber}` objects, `phone`,
/// `phone_number`, `primary_phone`, REX `related.contact_phones[]`, and the same inside a Lofty
/// `{"lead": {…}}` wrapper.
pub(crate) fn record_phones(v: &Value) -> Vec<String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            Value::Object(_) => ["value", "number", "phone", "phone_number", "phoneNumber"]
                .iter()
                .find_map(|k| v.get(*k).and_then(text)),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let records = [Some(v), v.get("lead")];
    for r in records.into_iter().flatten() {
        let lists = [
            r.get("phones"),
            r.get("related").and_then(|x| x.get("contact_phones")),
        ];
        for item in lists
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
        {
            out.extend(text(item));
        }
        for key in ["phone", "phone_number", "primary_phone"] {
            out.extend(r.get(key).and_then(text));
        }
    }
    out.truncate(MAX_PHONES);
    out
}

/// Whether the record carries `phone` in any written form, its phones read in the account's
/// `region` ([`crate::mapping::is_phone`]).
pub(crate) fn has_phone(record: &Value, phone: &PhoneNumber, region: Region) -> bool {
    crate::mapping::has_phone(
        record_phones(record).iter().map(String::as_str),
        phone,
        region,
    )
}

/// The first candidate of a phone search that really has the phone, with its id: a CRM's search
/// is never trusted to have compared the number as we do.
pub(crate) fn first_match(
    records: &[Value],
    id_keys: &[&str],
    phone: &PhoneNumber,
    region: Region,
) -> Option<(String, Value)> {
    records
        .iter()
        .filter(|r| has_phone(r, phone, region))
        .find_map(|r| Some((id_at(r, id_keys)?, r.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_domain::Region;
    use serde_json::json;

    #[test]
    fn phones_are_read_from_every_crm_shape() {
        let fub =
            json!({"phones": [{"value": "(415) 555-0123", "type": "mobile"}, {"value": null}]});
        let lofty = json!({"lead": {"phones": ["415.555.0124"], "phone": 4155550125_u64}});
        let rex = json!({"related": {"contact_phones": [{"phone_number": "+1 415 555 0126"}]},
                         "phone_number": "4155550127"});
        assert_eq!(record_phones(&fub), ["(415) 555-0123"]);
        assert_eq!(record_phones(&lofty), ["415.555.0124", "4155550125"]);
        assert_eq!(record_phones(&rex), ["+1 415 555 0126", "4155550127"]);
        let many = json!({"phones": vec!["1"; 500]});
        assert_eq!(record_phones(&many).len(), MAX_PHONES);
    }

    #[test]
    fn a_candidate_must_really_have_the_phone() {
        let phone = PhoneNumber::parse("+14155550123", Region::US).unwrap();
        let records = vec![
            json!({"id": 1, "phones": [{"value": "415-555-0199"}]}),
            json!({"id": "", "phones": [{"value": "415-555-0123"}]}),
            json!({"id": 651095960136641_i64, "phones": ["(415) 555 0123"]}),
        ];
        let (id, _) = first_match(&records, &["id"], &phone, Region::US).unwrap();
        assert_eq!(id, "651095960136641");
        assert!(first_match(&records[..1], &["id"], &phone, Region::US).is_none());
        // Typed without a country code in an Australian account, it is not this US number.
        assert!(first_match(&records, &["id"], &phone, Region::AU).is_none());
        let au = PhoneNumber::from_e164("+61412345678").unwrap();
        let rex =
            json!({"id": 7, "related": {"contact_phones": [{"phone_number": "0412 345 678"}]}});
        assert!(has_phone(&rex, &au, Region::AU));
        assert!(!has_phone(&rex, &au, Region::US));
    }
}
