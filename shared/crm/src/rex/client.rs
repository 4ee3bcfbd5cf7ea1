//! The REX client (crm-apis.md §3.4): contacts `list`/`search`, `read`, `create` and `update`.

use crmsync_domain::{Lead, PhoneNumber, Region, SyncCursor};
use http::Method;
use reqwest::Url;
use serde_json::{Map, Value, json};

use super::mapping as rex;
use crate::error::CrmError;
use crate::records::{has_phone, id_at, id_of, is_empty, pushed, record_phones};
use crate::transport::{Conn, Reply};
use crate::{
    Account, Crm, CrmKind, Page, PageRequest, PushAction, PushResult, Subscription,
    refuses_subscription,
};

const ID_KEYS: &[&str] = &["id", "_id"];
/// Candidates of a phone search looked at (each confirmed with a read).
const FIND_LIMIT: usize = 10;

/// One REX account.
pub struct RexClient {
    conn: Conn,
    /// The configured contacts list endpoint.
    contacts_endpoint: String,
    /// The RPC base (`…/v1/rex`).
    rpc_base: String,
}

impl RexClient {
    pub(super) fn new(conn: Conn, settings: &super::Settings) -> Self {
        RexClient {
            conn,
            contacts_endpoint: settings.contacts_endpoint.clone(),
            rpc_base: settings.rpc_base(),
        }
    }

    /// A contacts search (`url` is the configured list endpoint or `…/contacts/search`).
    async fn rex_search(
        &self,
        route: &'static str,
        url: Url,
        body: &Value,
    ) -> Result<Vec<Value>, CrmError> {
        let reply = self
            .conn
            .send(route, Method::POST, url, Some(body), true)
            .await?;
        rows(reply).ok_or_else(|| self.conn.shape_error("search rows"))
    }

    fn rex_contacts_url(&self) -> Result<Url, CrmError> {
        self.conn.url(&self.contacts_endpoint, &[], &[])
    }

    async fn rex_call(
        &self,
        route: &'static str,
        method: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<Reply, CrmError> {
        let url = self.conn.url(&self.rpc_base, &["contacts", method], &[])?;
        self.conn
            .send(route, Method::POST, url, Some(body), idempotent)
            .await
    }

    /// `AdminWebhooks/<method>`.
    async fn admin_webhooks(
        &self,
        route: &'static str,
        method: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<Reply, CrmError> {
        let url = self
            .conn
            .url(&self.rpc_base, &["admin-webhooks", method], &[])?;
        self.conn
            .send(route, Method::POST, url, Some(body), idempotent)
            .await
    }
}

/// The contact events an admin webhook names (crm-apis §3.6).
const WEBHOOK_EVENTS: &[&str] = &["contacts.created", "contacts.updated"];

/// * List: a search from `cursor.since` (epoch seconds, `>=`) ordered by `system_modtime` ascending,
///   from the first record of that second (the records already stored there are dropped by
///   `cursor.admits`); `has_more` when the page is full. Only when a full page is all one second does
///   `next_token` carry the offset to read the rest of that second with.
/// * Find: one `contacts/search` for every written form of the number (`in`), each candidate
///   confirmed on its full record (`contacts/read`).
/// * Create: `contacts/create`; update: `contacts/update`.
#[async_trait::async_trait]
impl Crm for RexClient {
    fn kind(&self) -> &'static dyn CrmKind {
        self.conn.kind()
    }

    fn advertised_rate(&self) -> Option<(u32, std::time::Duration)> {
        self.conn.advertised_rate()
    }

    /// Changes and a complete scan are the same listing here, from the listing's position: a complete
    /// scan starts it from the beginning. (Archived and trashed contacts are not in an active search,
    /// §3.4: a complete scan no longer sees them.)
    async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError> {
        let (cursor, page_token, limit) = (request.position, request.page_token, request.limit);
        let second = cursor.since.map(|t| t.timestamp());
        let offset = second_offset(page_token, second);
        let body = list_body(cursor, offset, limit);
        let records = self
            .rex_search("contacts.list", self.rex_contacts_url()?, &body)
            .await?;
        let full = records.len() == limit as usize;
        // A full page all of one second: the rest of that second is read by offset (from the first
        // record of the second, so a record that left it since cannot make us skip one).
        let next_token = full.then(|| one_second(&records)).flatten().map(|s| {
            let before = if Some(s) == second { offset } else { 0 };
            format!("{s}:{}", before + u64::from(limit))
        });
        let records = records
            .iter()
            .map(|r| rex::map_contact(r, request.region))
            .collect();
        Ok(Page {
            has_more: full,
            records,
            next_token,
        })
    }

    async fn verify_credentials(&self) -> Result<(), CrmError> {
        let body = json!({"limit": 1, "offset": 0});
        self.rex_search("contacts.list", self.rex_contacts_url()?, &body)
            .await
            .map(drop)
    }

    /// REX documents no call that names the account a token belongs to (crm-apis §3.2).
    async fn account(&self) -> Result<Account, CrmError> {
        Ok(Account::default())
    }

    /// REX stores phones as typed and its search compares the stored string (crm-apis §4), and
    /// criteria combine with AND, `in` being the only OR (§3.4): one search asks for every form a
    /// person may have typed the number in, in the account's `region`.
    fn phone_searches(&self, phone: &PhoneNumber, region: Region) -> Vec<Vec<String>> {
        vec![phone.typed_forms(region)]
    }

    async fn find_by_phone_among(
        &self,
        phone: &PhoneNumber,
        region: Region,
        forms: &[String],
    ) -> Result<Option<(String, Value)>, CrmError> {
        let body = json!({
            "criteria": [{"name": "contact.phone_number", "type": "in", "value": forms}],
            "limit": FIND_LIMIT,
            "offset": 0,
        });
        let url = self
            .conn
            .url(&self.rpc_base, &["contacts", "search"], &[])?;
        let mut rows = self.rex_search("contacts.search", url, &body).await?;
        // A flattened row shows one `phone_number` (§3.5), while the search may have matched
        // another phone of the contact: rows showing the number are read first, the others
        // after, and each is confirmed on its full record.
        rows.sort_by_cached_key(|row| {
            if has_phone(row, phone, region) {
                0
            } else if record_phones(row).is_empty() {
                1
            } else {
                2
            }
        });
        for row in rows {
            let Some(raw_id) = ID_KEYS
                .iter()
                .find_map(|k| row.get(*k))
                .filter(|v| id_of(v).is_some())
                .cloned()
            else {
                continue;
            };
            let reply = match self
                .rex_call("contacts.read", "read", &json!({"id": raw_id}), true)
                .await
            {
                Ok(r) => r,
                Err(CrmError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let full = reply
                .json
                .as_ref()
                .and_then(|b| b.get("result"))
                .filter(|r| r.is_object())
                .cloned()
                .unwrap_or(row);
            if has_phone(&full, phone, region)
                && let Some(id) = id_at(&full, ID_KEYS).or_else(|| id_of(&raw_id))
            {
                return Ok(Some((id, full)));
            }
        }
        Ok(None)
    }

    async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        let reply = self
            .rex_call("contacts.create", "create", &rex::create_body(lead), false)
            .await?;
        // `result.id` (string or number), or a bare id as the result.
        let external_id = reply
            .json
            .as_ref()
            .and_then(|b| b.get("result"))
            .and_then(|r| id_at(r, ID_KEYS).or_else(|| id_of(r)));
        Ok(PushResult {
            external_id,
            action: PushAction::Created,
        })
    }

    async fn update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        let body = rex::update_body(external_id, lead, existing);
        let related = body.get("data").and_then(|d| d.get("related"));
        if related.is_none_or(is_empty) {
            return Ok(pushed(external_id, PushAction::Unchanged));
        }
        self.rex_call("contacts.update", "update", &body, false)
            .await?;
        Ok(pushed(external_id, PushAction::Updated))
    }

    /// `contacts/read {"id": …}` (crm-apis §3.4).
    /// `admin-webhooks/create` with both contact events, in the full-change format (§3.6).
    async fn subscribe(&self, callback: &str) -> Result<Option<Subscription>, CrmError> {
        let events: Vec<Value> = WEBHOOK_EVENTS
            .iter()
            .map(|e| json!({"event_id": e}))
            .collect();
        let body = json!({"data": {
            "name": "crmsync",
            "url": callback,
            "is_enabled": true,
            "send_format_id": "v1_full_change_detail",
            "events": events,
        }});
        let reply = match self
            .admin_webhooks("admin-webhooks.create", "create", &body, false)
            .await
        {
            Ok(r) => r,
            Err(e) if refuses_subscription(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = reply
            .json
            .as_ref()
            .and_then(|b| b.get("result"))
            .and_then(|r| id_at(r, ID_KEYS))
            .ok_or_else(|| self.conn.shape_error("a webhook id"))?;
        Ok(Some(Subscription { ids: vec![id] }))
    }

    /// `admin-webhooks/purge {"id"}` for each.
    async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), CrmError> {
        for id in &subscription.ids {
            let id = id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n));
            match self
                .admin_webhooks("admin-webhooks.purge", "purge", &json!({"id": id}), true)
                .await
            {
                Ok(_) | Err(CrmError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read(&self, external_id: &str) -> Result<Value, CrmError> {
        let id: Value = external_id
            .parse::<u64>()
            .map_or_else(|_| json!(external_id), |n| json!(n));
        let reply = self
            .rex_call("contacts.read", "read", &json!({"id": id}), true)
            .await?;
        reply
            .json
            .as_ref()
            .and_then(|b| b.get("result"))
            .filter(|r| r.is_object())
            .cloned()
            .ok_or(CrmError::NotFound)
    }
}

/// The list search: records from `cursor.since` (epoch seconds, `>=`) in ascending
/// `system_modtime`, from `offset` on.
///
/// The offset is not the count of records already stored at `since`: a stored record that changed
/// again has left that second, and skipping that many would skip a record never stored (a change
/// lost until it changed once more). Reading from the first record of the second and dropping the
/// stored ones (`SyncCursor::admits`) costs at most the few records of that second; only a second
/// with more records than a page is walked by offset (see [`second_offset`]).
fn list_body(cursor: &SyncCursor, offset: u64, limit: u32) -> Value {
    let mut body = Map::new();
    if let Some(since) = cursor.since {
        body.insert(
            "criteria".into(),
            json!([{"name": "system_modtime", "type": ">=", "value": since.timestamp()}]),
        );
    }
    body.insert("order_by".into(), json!({"system_modtime": "asc"}));
    body.insert("limit".into(), json!(limit));
    body.insert("offset".into(), json!(offset));
    Value::Object(body)
}

/// The offset of a page token `"<second>:<offset>"`, when it walks the second the cursor is at;
/// anything else (no token, another second, junk) starts from the first record of the second.
fn second_offset(page_token: Option<&str>, second: Option<i64>) -> u64 {
    page_token
        .and_then(|t| t.split_once(':'))
        .and_then(|(s, o)| Some((s.parse::<i64>().ok()?, o.parse::<u64>().ok()?)))
        .filter(|(s, _)| Some(*s) == second)
        .map_or(0, |(_, o)| o)
}

/// The epoch second every record of `records` changed in, if they share one.
fn one_second(records: &[Value]) -> Option<i64> {
    let mut seconds = records
        .iter()
        .map(|r| rex::updated_at(r).map(|t| t.timestamp()));
    let first = seconds.next()??;
    seconds.all(|s| s == Some(first)).then_some(first)
}

/// The rows of a search answer: `result.rows`, or `result` itself when it is a list.
fn rows(reply: Reply) -> Option<Vec<Value>> {
    let mut result = match reply.json? {
        Value::Object(mut body) => body.remove("result")?,
        _ => return None,
    };
    if let Some(rows) = result.get_mut("rows") {
        result = rows.take();
    }
    match result {
        Value::Array(rows) => Some(rows),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_body_follows_the_cursor() {
        let empty = list_body(&SyncCursor::default(), 0, 50);
        assert_eq!(
            empty,
            json!({"order_by": {"system_modtime": "asc"}, "limit": 50, "offset": 0})
        );
        let mut c = SyncCursor::starting_at("2023-09-08T17:30:02.900Z".parse().unwrap());
        c.boundary_ids = vec!["1".into(), "2".into()];
        // From the first record of the second, whatever is stored there already.
        assert_eq!(
            list_body(&c, second_offset(None, Some(1694194202)), 10),
            json!({
                "criteria": [{"name": "system_modtime", "type": ">=", "value": 1694194202}],
                "order_by": {"system_modtime": "asc"},
                "limit": 10,
                "offset": 0
            })
        );
    }

    #[test]
    fn a_second_fuller_than_a_page_is_walked_by_offset() {
        assert_eq!(second_offset(Some("1694194202:200"), Some(1694194202)), 200);
        assert_eq!(second_offset(Some("1694194202:200"), Some(1694194203)), 0);
        assert_eq!(second_offset(Some("junk"), Some(1694194202)), 0);
        assert_eq!(second_offset(None, None), 0);
        let at = |s: i64| json!({"id": s, "system_modtime": s});
        assert_eq!(one_second(&[at(5), at(5)]), Some(5));
        assert_eq!(one_second(&[at(5), at(6)]), None);
        assert_eq!(one_second(&[json!({"id": 1})]), None);
        assert_eq!(one_second(&[]), None);
    }
}
