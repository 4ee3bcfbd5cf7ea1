//! Follow Up Boss (crm-apis.md §1): `GET /people`, `POST /events`, `PUT /people/{id}`.

use crmsync_domain::mapping::fub;
use crmsync_domain::{Lead, PhoneNumber};
use http::{Method, StatusCode};
use serde_json::Value;

use super::{CrmClient, first_match, id_of, is_empty, pushed};
use crate::error::CrmError;
use crate::{Page, PushAction, PushResult};

/// The `system` of events when no `X-System` is configured.
const DEFAULT_SYSTEM: &str = "crmsync";
/// Candidates of a phone search looked at.
const FIND_LIMIT: &str = "25";

impl CrmClient {
    pub(super) async fn fub_list(&self, token: Option<&str>, limit: u32) -> Result<Page, CrmError> {
        let limit = limit.to_string();
        let mut query = vec![
            ("sort", "updated"),
            ("limit", limit.as_str()),
            ("fields", "allFields"),
        ];
        if let Some(t) = token {
            query.push(("next", t));
        }
        let url = self.url(&self.endpoints.fub_base, &["people"], &query)?;
        let reply = self.get("people.list", url).await?;
        let body = self.json(&reply)?;
        let records = people(body).ok_or_else(|| self.shape_error("a people list"))?;
        let next_token = next_token(body);
        Ok(Page {
            has_more: next_token.is_some() && !records.is_empty(),
            records,
            next_token,
        })
    }

    pub(super) async fn fub_verify(&self) -> Result<(), CrmError> {
        let url = self.url(&self.endpoints.fub_base, &["people"], &[("limit", "1")])?;
        self.get("people.list", url).await.map(drop)
    }

    pub(super) async fn fub_find(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<(String, Value)>, CrmError> {
        let url = self.url(
            &self.endpoints.fub_base,
            &["people"],
            &[
                ("phone", phone.as_str()),
                ("fields", "allFields"),
                ("limit", FIND_LIMIT),
            ],
        )?;
        let reply = self.get("people.list", url).await?;
        let records =
            people(self.json(&reply)?).ok_or_else(|| self.shape_error("a people list"))?;
        Ok(first_match(&records, &["id"], phone))
    }

    pub(super) async fn fub_create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        let system = match self.endpoints.fub_system.as_str() {
            "" => DEFAULT_SYSTEM,
            s => s,
        };
        let body = fub::event_body(lead, system);
        let url = self.url(&self.endpoints.fub_base, &["events"], &[])?;
        let reply = self
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

    pub(super) async fn fub_update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        let body = fub::update_body(lead, existing);
        if is_empty(&body) {
            return Ok(pushed(external_id, PushAction::Unchanged));
        }
        let url = self.url(
            &self.endpoints.fub_base,
            &["people", external_id],
            &[("mergeTags", "true")],
        )?;
        self.send("people.update", Method::PUT, url, Some(&body), false)
            .await?;
        Ok(pushed(external_id, PushAction::Updated))
    }
}

/// The `people` of a list answer.
fn people(body: &Value) -> Option<Vec<Value>> {
    body.get("people").and_then(Value::as_array).cloned()
}

/// `_metadata.next`, or the `next` parameter of `_metadata.nextLink`.
fn next_token(body: &Value) -> Option<String> {
    let meta = body.get("_metadata")?;
    let direct = meta
        .get("next")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    direct.or_else(|| {
        let link = meta.get("nextLink").and_then(Value::as_str)?;
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
