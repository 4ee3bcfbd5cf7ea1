//! REX admin webhook deliveries (crm-apis §3.6): `{"data":[{"id","type","created_at","payload":{"format",
//! "context":{"account_id","service","record_id",…},"data":{"pre","post","changes"}}}, …]}`. No signature
//! scheme is documented. The record in `post` is not trusted: the receiver reads each record back.

use serde_json::Value;

use crate::records::id_of;
use crate::webhook::{Change, Hint, Refused, distinct, receipt_of};

pub(super) fn read(body: &[u8], account: Option<&str>) -> Result<Hint, Refused> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    // `data` is a list of events (Pipedream reads `body.data[0]`); a lone event object is read too.
    let events: Vec<&Value> = match v.get("data") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err(Refused::Malformed("no `data` events".into())),
    };
    let mut changed = Vec::new();
    let mut ids = Vec::new();
    for e in &events {
        if let Some(id) = e.get("id").and_then(Value::as_str) {
            ids.push(id);
        }
        let context = e.get("payload").and_then(|p| p.get("context"));
        if let (Some(account), Some(theirs)) = (
            account,
            context.and_then(|c| c.get("account_id")).and_then(id_of),
        ) && theirs != account
        {
            return Err(Refused::OtherAccount);
        }
        let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some((service, _)) = kind.split_once('.') else {
            continue;
        };
        if !service.eq_ignore_ascii_case("contacts") {
            continue;
        }
        let record = context
            .and_then(|c| c.get("record_id"))
            .and_then(id_of)
            .or_else(|| {
                e.get("payload")
                    .and_then(|p| p.get("data"))
                    .and_then(|d| d.get("post"))
                    .and_then(|p| p.get("id"))
                    .and_then(id_of)
            });
        // Only `created` and `updated` are documented; any other event about a contact is read back
        // like a change too: the read says what became of the record (a record not found is gone).
        if let Some(record) = record {
            changed.push(record);
        }
    }
    let change = if changed.is_empty() {
        Change::Nothing
    } else {
        Change::Records {
            changed: distinct(changed.into_iter()),
            deleted: Vec::new(),
        }
    };
    Ok(Hint {
        receipt: receipt_of(ids.into_iter()),
        change,
    })
}
