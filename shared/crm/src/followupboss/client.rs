//! The Follow Up Boss client (crm-apis.md §1.3): `GET /people`, `POST /events`, `PUT /people/{id}`.

use crmsync_domain::json::Json;
use crmsync_domain::{Lead, Mapped, PhoneNumber, Region};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::mapping as fub;
use crate::error::CrmError;
use crate::records::{first_match, id_of, is_empty, pushed};
use crate::transport::Conn;
use crate::{
    Account, Crm, CrmKind, Listing, Page, PageRequest, PushAction, PushResult, Subscription,
    refuses_subscription,
};

/// The `system` of events when no `X-System` is configured.
const DEFAULT_SYSTEM: &str = "crmsync";
/// Candidates of a phone search looked at.
const FIND_LIMIT: &str = "25";
/// The person fields a listing asks for: `fields=allFields` "may return very large responses", name
/// the fields needed (crm-apis §4).
const FIELDS: &str = "id,created,updated,name,firstName,lastName,stage,emails,phones,background";
/// The person events a subscription names, one webhook each (crm-apis §1.6): a trashing is a stage
/// change, and whether it is also `peopleUpdated` is not documented.
const WEBHOOK_EVENTS: &[&str] = &[
    "peopleCreated",
    "peopleUpdated",
    "peopleStageUpdated",
    "peopleDeleted",
];
/// The deepest offset Follow Up Boss pages to (deeper needs `next`; 2000 in public clients, §1.3).
const MAX_OFFSET: u64 = 2000;

/// Where the next page of a listing starts: FUB's keyset token, or an offset when FUB gave none.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Next(String),
    Offset(u64),
}

impl Position {
    fn read(token: Option<&str>) -> Self {
        match token {
            None => Position::Offset(0),
            Some(t) => match t.strip_prefix("offset:").map(str::parse) {
                Some(Ok(n)) => Position::Offset(n),
                _ => Position::Next(t.strip_prefix("next:").unwrap_or(t).to_owned()),
            },
        }
    }

    fn write(&self) -> String {
        match self {
            Position::Next(t) => format!("next:{t}"),
            Position::Offset(n) => format!("offset:{n}"),
        }
    }
}

/// One Follow Up Boss account.
pub struct FollowUpBossClient {
    conn: Conn,
    /// The API base (`…/v1`).
    api_base: String,
    /// The `system` of events.
    system: String,
}

impl FollowUpBossClient {
    pub(super) fn new(conn: Conn, settings: &super::Settings, secrets: &super::Secrets) -> Self {
        let system = match secrets.system.trim() {
            "" => DEFAULT_SYSTEM,
            s => s,
        };
        FollowUpBossClient {
            conn,
            api_base: settings.api_base.clone(),
            system: system.to_owned(),
        }
    }
}

/// * List: changes newest first, `GET /people?sort=-updated&includeTrash=true`, stopping at the page
///   that reaches the stored changes; all people in the default order; each following `next`, or an
///   offset where FUB gives no `next`.
/// * Find: `GET /people?phone=` for each written form of the number until one finds a person that
///   really has it.
/// * Create: `POST /events` (201 created, 200 matched an existing person → `Updated`, 204 → `Ignored`);
///   update: `PUT /people/{id}?mergeTags=true`.
#[async_trait::async_trait]
impl Crm for FollowUpBossClient {
    fn kind(&self) -> &'static dyn CrmKind {
        self.conn.kind()
    }

    fn advertised_rate(&self) -> Option<(u32, std::time::Duration)> {
        self.conn.advertised_rate()
    }

    async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError> {
        let limit = request.limit.to_string();
        let (mut query, since) = match request.listing {
            // Newest first (crm-apis §4: `sort=-updated`, as public clients use it), so an
            // incremental read stops where the stored changes begin; trashed people included, to be
            // marked deleted (§1.3: Trash is hidden unless `includeTrash=true`).
            Listing::Changes { since } => (vec![("sort", "-updated")], since),
            // The default order (reverse id), the one keyset paging is documented for (§1.3).
            Listing::All => (vec![], None),
        };
        query.extend([
            ("includeTrash", "true"),
            ("limit", limit.as_str()),
            ("fields", FIELDS),
        ]);
        let position = Position::read(request.page_token);
        let offset;
        match &position {
            Position::Next(next) => query.push(("next", next.as_str())),
            Position::Offset(n) if *n > MAX_OFFSET => return Err(CrmError::ListingTooDeep),
            Position::Offset(n) => {
                offset = n.to_string();
                if *n > 0 {
                    query.push(("offset", offset.as_str()));
                }
            }
        }
        let url = self.conn.url(&self.api_base, &["people"], &query)?;
        let reply = match self.conn.get_page("people.list", url).await {
            // "If you are going deep into result sets with high offset values … the API enforces the
            // use of the `next` parameter" (§1.3).
            Err(CrmError::Upstream { status: 400, .. }) if matches!(position, Position::Offset(n) if n > 0) =>
            {
                return Err(CrmError::ListingTooDeep);
            }
            other => other?,
        };
        let mut body = self.conn.page_json(&reply)?;
        let records: Vec<Mapped> = body
            .take_list("people")
            .ok_or_else(|| self.conn.shape_error("a people list"))?
            .iter()
            .map(|r| fub::map_person(r, request.region))
            .collect();
        let body = &body;
        // Newest first: the page that reaches the stored changes is the last one needed.
        let reached_since = since.is_some_and(|since| {
            records
                .last()
                .and_then(Mapped::updated_at)
                .is_some_and(|t| t < since)
        });
        let full = records.len() >= request.limit as usize;
        // `next` is given "when keyset pagination is possible" (crm-apis §4); otherwise the next page
        // is read by offset.
        let next_token = match (next_token(body), &position) {
            (Some(next), _) => Some(Position::Next(next).write()),
            (None, Position::Offset(n)) if full => {
                Some(Position::Offset(n + records.len() as u64).write())
            }
            (None, _) => None,
        };
        Ok(Page {
            has_more: next_token.is_some() && !records.is_empty() && !reached_since,
            records,
            next_token,
        })
    }

    async fn verify_credentials(&self) -> Result<(), CrmError> {
        let url = self
            .conn
            .url(&self.api_base, &["people"], &[("limit", "1")])?;
        self.conn.get("people.list", url).await.map(drop)
    }

    /// `GET /identity`: `account.id`.
    async fn account(&self) -> Result<Account, CrmError> {
        let url = self.conn.url(&self.api_base, &["identity"], &[])?;
        let reply = self.conn.get("identity", url).await?;
        let id = reply
            .json
            .as_ref()
            .and_then(|b| b.get("account"))
            .and_then(|a| a.get("id"))
            .and_then(id_of);
        Ok(Account { id })
    }

    /// The `phone` filter of `GET /people` is known from public clients only (crm-apis §1.3), and
    /// how Follow Up Boss normalizes phones is unconfirmed (§1.3, §6). The harsher reading: it may
    /// compare the stored string, so each form a person may have typed the number in is asked for
    /// in turn, most likely first (E.164 first, which a normalizing search matches at once), until
    /// a person that really has the number is found (a miss costs one call per form).
    fn phone_searches(&self, phone: &PhoneNumber, region: Region) -> Vec<Vec<String>> {
        phone
            .typed_forms(region)
            .into_iter()
            .map(|f| vec![f])
            .collect()
    }

    /// `phone=` once per form (each search asks for one).
    async fn find_by_phone_among(
        &self,
        phone: &PhoneNumber,
        region: Region,
        forms: &[String],
    ) -> Result<Option<(String, Value)>, CrmError> {
        let mut query: Vec<(&str, &str)> = forms.iter().map(|f| ("phone", f.as_str())).collect();
        query.extend([("fields", "allFields"), ("limit", FIND_LIMIT)]);
        let url = self.conn.url(&self.api_base, &["people"], &query)?;
        let reply = self.conn.get("people.list", url).await?;
        let records = people(&mut self.conn.owned_json(reply)?)
            .ok_or_else(|| self.conn.shape_error("a people list"))?;
        Ok(first_match(&records, &["id"], phone, region))
    }

    async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        let body = fub::event_body(lead, &self.system);
        let url = self.conn.url(&self.api_base, &["events"], &[])?;
        let reply = self
            .conn
            .send("events.create", Method::POST, url, Some(&body), false)
            .await?;
        let external_id = reply
            .json
            .as_ref()
            .and_then(|p| p.get("id"))
            .and_then(id_of);
        let action = match reply.status {
            StatusCode::NO_CONTENT => PushAction::Ignored,
            StatusCode::OK => PushAction::Updated,
            _ => PushAction::Created,
        };
        Ok(PushResult {
            external_id,
            action,
        })
    }

    async fn update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        let body = fub::update_body(lead, existing);
        if is_empty(&body) {
            return Ok(pushed(external_id, PushAction::Unchanged));
        }
        let url = self.conn.url(
            &self.api_base,
            &["people", external_id],
            &[("mergeTags", "true")],
        )?;
        self.conn
            .send("people.update", Method::PUT, url, Some(&body), false)
            .await?;
        Ok(pushed(external_id, PushAction::Updated))
    }

    /// `POST /v1/webhooks {"event","url"}` once per event (§1.6); signed with the system's key.
    async fn subscribe(&self, callback: &str) -> Result<Option<Subscription>, CrmError> {
        let url = self.conn.url(&self.api_base, &["webhooks"], &[])?;
        let mut made = Subscription::default();
        for event in WEBHOOK_EVENTS {
            let body = json!({"event": event, "url": callback});
            let made_one = self
                .conn
                .send(
                    "webhooks.create",
                    Method::POST,
                    url.clone(),
                    Some(&body),
                    false,
                )
                .await
                .and_then(|reply| {
                    reply
                        .json
                        .as_ref()
                        .and_then(|b| b.get("id"))
                        .and_then(id_of)
                        .ok_or_else(|| self.conn.shape_error("a webhook id"))
                });
            match made_one {
                Ok(id) => made.ids.push(id),
                Err(e) => {
                    // Half a subscription would miss changes without telling: undo it.
                    let _ = self.unsubscribe(&made).await;
                    return if refuses_subscription(&e) {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
            }
        }
        Ok(Some(made))
    }

    /// `DELETE /v1/webhooks/{id}` for each.
    async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), CrmError> {
        for id in &subscription.ids {
            let url = self.conn.url(&self.api_base, &["webhooks", id], &[])?;
            match self
                .conn
                .send("webhooks.delete", Method::DELETE, url, None, true)
                .await
            {
                Ok(_) | Err(CrmError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read(&self, external_id: &str) -> Result<Value, CrmError> {
        let url = self.conn.url(
            &self.api_base,
            &["people", external_id],
            &[("fields", "allFields")],
        )?;
        let reply = self.conn.get("people.get", url).await?;
        let person = self.conn.json(&reply)?;
        if person.is_object() {
            Ok(person.clone())
        } else {
            Err(self.conn.shape_error("a person"))
        }
    }
}

/// The `people` of a list answer.
fn people(body: &mut Value) -> Option<Vec<Value>> {
    crate::records::take_list(body, "people")
}

/// `_metadata.next`, or the `next` parameter of `_metadata.nextLink`.
fn next_token<J: Json>(body: &J) -> Option<String> {
    let meta = body.key("_metadata")?;
    let direct = meta
        .key("next")
        .and_then(J::str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    direct.or_else(|| {
        let link = meta.key("nextLink").and_then(J::str)?;
        let url = reqwest::Url::parse(link).ok()?;
        url.query_pairs()
            .find(|(k, v)| k == "next" && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_comes_from_metadata_or_its_link() {
        assert_eq!(
            next_token(&json!({"_metadata": {"next": "eyJzaW5jZUlkIjoxMDV9"}})).as_deref(),
            Some("eyJzaW5jZUlkIjoxMDV9")
        );
        let link = json!({"_metadata": {"next": null,
            "nextLink": "https://api.followupboss.com/v1/people?limit=25&&next=abc%3D"}});
        assert_eq!(next_token(&link).as_deref(), Some("abc="));
        assert_eq!(next_token(&json!({"_metadata": {"next": ""}})), None);
        assert_eq!(next_token(&json!({"people": []})), None);
    }
}
