//! The Lofty client (crm-apis.md §2.2): `GET|POST /v1.0/leads`, `PUT /v1.0/leads/{id}`.

use crmsync_domain::json::Json;
use crmsync_domain::{Lead, Mapped, PhoneNumber, Region};
use http::Method;
use serde_json::{Value, json};

use super::mapping as lofty;
use crate::error::CrmError;
use crate::records::{first_match, id_at, id_of, is_empty, pushed};
use crate::transport::Conn;
use crate::{
    Account, Crm, CrmKind, Page, PageRequest, PushAction, PushResult, Subscription,
    refuses_subscription,
};

/// Candidates of a phone search looked at.
const FIND_LIMIT: &str = "25";
const ID_KEYS: &[&str] = &["leadId", "id"];
/// The webhook list of lead changes (Lead Info, crm-apis §2.5).
const LEAD_INFO: u32 = 2;
/// Events one Lead Info delivery may carry (Lofty's default; at most 5000).
const WEBHOOK_LIMIT: u32 = 100;

/// One Lofty account.
pub struct LoftyClient {
    conn: Conn,
    /// The API base (`https://api.lofty.com`).
    api_base: String,
}

impl LoftyClient {
    pub(super) fn new(conn: Conn, settings: &super::Settings) -> Self {
        LoftyClient {
            conn,
            api_base: settings.api_base.clone(),
        }
    }
}

/// * List: `GET /v1.0/leads` following the `scrollId` of `_metadata` or `get_metadata`.
/// * Find: `GET /v1.0/leads?phone=` for each written form of the number until one finds a lead
///   that really has it.
/// * Create: `POST /v1.0/leads`; update: `PUT /v1.0/leads/{id}` with only what changed.
#[async_trait::async_trait]
impl Crm for LoftyClient {
    fn kind(&self) -> &'static dyn CrmKind {
        self.conn.kind()
    }

    fn advertised_rate(&self) -> Option<(u32, std::time::Duration)> {
        self.conn.advertised_rate()
    }

    /// Lofty lists no changes ([`CrmKind::lists_changes`]): every listing is the whole account, in
    /// Lofty's own order (unknown `sort` values are ignored, crm-apis §2.6, §4), following `scrollId`,
    /// the only thing that pages.
    async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError> {
        let limit = request.limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(t) = request.page_token {
            query.push(("scrollId", t));
        }
        let url = self.conn.url(&self.api_base, &["v1.0", "leads"], &query)?;
        let reply = self.conn.get_page("leads.list", url).await?;
        let mut body = self.conn.page_json(&reply)?;
        let records: Vec<Mapped> = body
            .take_list("leads")
            .ok_or_else(|| self.conn.shape_error("a leads list"))?
            .iter()
            .map(|r| lofty::map_lead(r, request.region))
            .collect();
        let next_token = scroll_id(&body);
        // Followed while it comes back with records: the page-size cap is unconfirmed (25 vs
        // 100), so a short page with a scrollId is not taken as the last one.
        Ok(Page {
            has_more: next_token.is_some() && !records.is_empty(),
            records,
            next_token,
        })
    }

    async fn verify_credentials(&self) -> Result<(), CrmError> {
        let url = self
            .conn
            .url(&self.api_base, &["v1.0", "leads"], &[("limit", "1")])?;
        self.conn.get("leads.list", url).await.map(drop)
    }

    /// `GET /v1.0/me`: the user the key belongs to (an API key is a user's token, §2.1).
    async fn account(&self) -> Result<Account, CrmError> {
        let url = self.conn.url(&self.api_base, &["v1.0", "me"], &[])?;
        let reply = self.conn.get("me", url).await?;
        let id = reply.json.as_ref().and_then(|b| {
            ["userId", "id", "teamId"]
                .iter()
                .find_map(|k| b.get(*k).and_then(id_of))
        });
        Ok(Account { id })
    }

    /// The list filters by one `phone` value (crm-apis §2.2) and how it compares is not documented:
    /// read as REX's, the stored string (§4; the sandbox's default). So each form a person may have
    /// typed the number in is asked for in turn, most likely first, until a lead that really has the
    /// number is found (a miss costs one call per form).
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
        query.push(("limit", FIND_LIMIT));
        let url = self.conn.url(&self.api_base, &["v1.0", "leads"], &query)?;
        let reply = self.conn.get("leads.list", url).await?;
        let mut body = self.conn.owned_json(reply)?;
        let records = leads(&mut body).ok_or_else(|| self.conn.shape_error("a leads list"))?;
        Ok(first_match(&records, ID_KEYS, phone, region))
    }

    async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        let body = lofty::create_body(lead);
        let url = self.conn.url(&self.api_base, &["v1.0", "leads"], &[])?;
        let reply = self
            .conn
            .send("leads.create", Method::POST, url, Some(&body), false)
            .await?;
        // `{"leadId": …}`; also read inside `lead` / `data` wrappers.
        let external_id = reply.json.as_ref().and_then(|v| {
            [Some(v), v.get("lead"), v.get("data")]
                .into_iter()
                .flatten()
                .find_map(|v| id_at(v, ID_KEYS))
        });
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
        let body = lofty::update_body(lead, existing);
        if is_empty(&body) {
            return Ok(pushed(external_id, PushAction::Unchanged));
        }
        let url = self
            .conn
            .url(&self.api_base, &["v1.0", "leads", external_id], &[])?;
        self.conn
            .send("leads.update", Method::PUT, url, Some(&body), false)
            .await?;
        Ok(pushed(external_id, PushAction::Updated))
    }

    /// `POST /v1.0/webhook {"listId": 2, "callbackUrl", "limit"}`: Lead Info, "lead created,
    /// updated, or deleted" (§2.5).
    async fn subscribe(&self, callback: &str) -> Result<Option<Subscription>, CrmError> {
        let url = self.conn.url(&self.api_base, &["v1.0", "webhook"], &[])?;
        let body = json!({"listId": LEAD_INFO, "callbackUrl": callback, "limit": WEBHOOK_LIMIT});
        let reply = match self
            .conn
            .send("webhook.create", Method::POST, url, Some(&body), false)
            .await
        {
            Ok(r) => r,
            Err(e) if refuses_subscription(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = reply
            .json
            .as_ref()
            .and_then(|b| id_at(b, &["subscribeId"]))
            .ok_or_else(|| self.conn.shape_error("a subscribeId"))?;
        Ok(Some(Subscription { ids: vec![id] }))
    }

    /// `DELETE /v1.0/webhook/{subscribeId}`.
    async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), CrmError> {
        for id in &subscription.ids {
            let url = self
                .conn
                .url(&self.api_base, &["v1.0", "webhook", id], &[])?;
            match self
                .conn
                .send("webhook.delete", Method::DELETE, url, None, true)
                .await
            {
                Ok(_) | Err(CrmError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `GET /v1.0/leads/{id}`: 404 for a deleted lead, and briefly for a new one (crm-apis §2.2).
    async fn read(&self, external_id: &str) -> Result<Value, CrmError> {
        let url = self
            .conn
            .url(&self.api_base, &["v1.0", "leads", external_id], &[])?;
        let reply = self.conn.get("leads.get", url).await?;
        let lead = self.conn.json(&reply)?;
        if lead.is_object() {
            Ok(lead.clone())
        } else {
            Err(self.conn.shape_error("a lead"))
        }
    }
}

/// The `leads` of a list answer.
fn leads(body: &mut Value) -> Option<Vec<Value>> {
    crate::records::take_list(body, "leads")
}

/// The scroll cursor, from `_metadata` (what integrators read) or `get_metadata` (what the
/// reference page shows).
fn scroll_id<J: Json>(body: &J) -> Option<String> {
    ["_metadata", "get_metadata"].iter().find_map(|k| {
        body.key(k)?
            .key("scrollId")?
            .str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scroll_id_from_either_metadata_key() {
        assert_eq!(
            scroll_id(&json!({"_metadata": {"scrollId": "a"}})).as_deref(),
            Some("a")
        );
        assert_eq!(
            scroll_id(&json!({"get_metadata": {"scrollId": "b"}})).as_deref(),
            Some("b")
        );
        assert_eq!(
            scroll_id(&json!({"_metadata": {"scrollId": null}, "get_metadata": {"scrollId": "c"}}))
                .as_deref(),
            Some("c")
        );
        assert_eq!(scroll_id(&json!({"_metadata": {"scrollId": " "}})), None);
    }
}
