//! [`CrmClient`]: one provider account, one interface. The provider specifics are in `fub`,
//! `lofty` and `rex`; this module holds the request plumbing they share.

mod fub;
mod lofty;
mod rex;

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use crmsync_domain::{Lead, PhoneNumber, Provider, SyncCursor};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use reqwest::Url;
use serde_json::Value;

use crate::endpoints::CrmEndpoints;
use crate::error::{self, CrmError};
use crate::http::{Call, CrmHttp, Reply};
use crate::pacer::Pacer;
use crate::{CrmAuth, Page, PushAction, PushResult};

/// The CRM client of one provider account. Cheap to clone; clones share pacing.
#[derive(Clone)]
pub struct CrmClient {
    http: CrmHttp,
    endpoints: Arc<CrmEndpoints>,
    provider: Provider,
    /// Authentication and fixed headers, or `Err` when the credentials cannot be sent as a
    /// header value (every call then fails with `InvalidCredentials`).
    headers: Result<HeaderMap, ()>,
    pacer: Arc<Pacer>,
}

impl fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmClient")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl CrmClient {
    pub fn new(
        http: &CrmHttp,
        endpoints: &CrmEndpoints,
        provider: Provider,
        auth: CrmAuth,
    ) -> Self {
        CrmClient {
            http: http.clone(),
            endpoints: Arc::new(endpoints.clone()),
            provider,
            headers: fixed_headers(provider, &auth, endpoints),
            pacer: http.pacer(provider, auth.secret()),
        }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The most restrictive limit this CRM account has advertised in its rate-limit headers
    /// (requests per window), once a response carried them.
    pub fn advertised_rate(&self) -> Option<(u32, std::time::Duration)> {
        self.pacer.advertised_rate()
    }

    /// One page of raw contact records in ascending update order. The caller maps them with
    /// `crmsync_domain::map_record` and filters with `cursor.admits`.
    ///
    /// * REX: a search from `cursor.since` (epoch seconds, `>=`) ordered by `system_modtime`
    ///   ascending, from the first record of that second (the records already stored there are
    ///   dropped by `cursor.admits`); `has_more` when the page is full. Only when a full page is all
    ///   one second does `next_token` carry the offset to read the rest of that second with.
    /// * FUB: `GET /people?sort=updated` following `_metadata.next`.
    /// * Lofty: `GET /v1.0/leads?sort=updateTime&desc=false` following the `scrollId` of
    ///   `_metadata` or `get_metadata`.
    ///
    /// `limit` is clamped to 1..=100.
    pub async fn list_page(
        &self,
        cursor: &SyncCursor,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page, CrmError> {
        let limit = limit.clamp(1, 100);
        match self.provider {
            Provider::FollowUpBoss => self.fub_list(page_token, limit).await,
            Provider::Lofty => self.lofty_list(page_token, limit).await,
            Provider::Rex => self.rex_list(cursor, page_token, limit).await,
        }
    }

    /// One cheap authenticated call, to check credentials when an account is connected.
    /// A refused key or token is [`CrmError::InvalidCredentials`].
    pub async fn verify_credentials(&self) -> Result<(), CrmError> {
        match self.provider {
            Provider::FollowUpBoss => self.fub_verify().await,
            Provider::Lofty => self.lofty_verify().await,
            Provider::Rex => self.rex_verify().await,
        }
    }

    /// The CRM person whose phone is `phone`: searched with the CRM's phone filter, each
    /// candidate confirmed with [`PhoneNumber::matches`] on its phones (CRMs store free
    /// formats). Returns the external id and the raw record (REX: the full record, read after
    /// the search, so that an update can address its existing entries).
    pub async fn find_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<(String, Value)>, CrmError> {
        match self.provider {
            Provider::FollowUpBoss => self.fub_find(phone).await,
            Provider::Lofty => self.lofty_find(phone).await,
            Provider::Rex => self.rex_find(phone).await,
        }
    }

    /// Creates the lead. FUB: `POST /events` (201 created, 200 matched an existing person →
    /// `Updated`, 204 → `Ignored`); Lofty: `POST /v1.0/leads`; REX: `contacts/create`.
    /// Not retried except on 429 and on connection failures before anything was sent.
    pub async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        match self.provider {
            Provider::FollowUpBoss => self.fub_create(lead).await,
            Provider::Lofty => self.lofty_create(lead).await,
            Provider::Rex => self.rex_create(lead).await,
        }
    }

    /// Updates the person `external_id` (whose record is `existing`) with the lead. When the
    /// mapping has nothing to send, no call is made and the action is `Unchanged`.
    pub async fn update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        match self.provider {
            Provider::FollowUpBoss => self.fub_update(external_id, existing, lead).await,
            Provider::Lofty => self.lofty_update(external_id, existing, lead).await,
            Provider::Rex => self.rex_update(external_id, existing, lead).await,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Plumbing shared by the providers.

    /// `base` + path segments (each percent-encoded, so an id can never change the path) +
    /// query pairs.
    fn url(&self, base: &str, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, CrmError> {
        let invalid = || {
            CrmError::Transport(format!(
                "the configured {} URL is not a valid URL",
                self.provider.label()
            ))
        };
        let mut url = Url::parse(base).map_err(|_| invalid())?;
        if !segments.is_empty() {
            url.path_segments_mut()
                .map_err(|_| invalid())?
                .pop_if_empty()
                .extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one call (paced, retried per the policy) and turns a non-success answer into a
    /// [`CrmError`]. A REX answer with `error` set is an error whatever its HTTP status.
    async fn send(
        &self,
        route: &'static str,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Reply, CrmError> {
        let mut headers = self
            .headers
            .clone()
            .map_err(|()| CrmError::InvalidCredentials)?;
        let body: Option<Bytes> = body.map(|b| Bytes::from(b.to_string()));
        if body.is_some() {
            headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        }
        let client = self.http.client()?;
        let build = || {
            let mut req = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            req.build().map_err(|_| {
                CrmError::Transport(format!(
                    "a request to {} could not be built",
                    self.provider.label()
                ))
            })
        };
        let call = Call {
            provider: self.provider,
            route,
            idempotent,
            pacer: Some(&self.pacer),
        };
        let reply = self.http.execute(&call, &build).await?;
        let failure = if !reply.status.is_success() {
            Some(reply.status.as_u16())
        } else if self.provider == Provider::Rex {
            error::rex_error(reply.json.as_ref()).map(error::rex_status)
        } else {
            None
        };
        match failure {
            None => Ok(reply),
            Some(status) => {
                let err = error::from_status(self.provider, status, reply.json.as_ref());
                tracing::warn!(
                    provider = self.provider.as_str(),
                    route,
                    http_status = reply.status.as_u16(),
                    status,
                    code = error::error_code(self.provider, reply.json.as_ref()).as_deref(),
                    "CRM call refused"
                );
                Err(err)
            }
        }
    }

    async fn get(&self, route: &'static str, url: Url) -> Result<Reply, CrmError> {
        self.send(route, Method::GET, url, None, true).await
    }

    /// The JSON body of a successful answer, or `Decode`.
    fn json<'r>(&self, reply: &'r Reply) -> Result<&'r Value, CrmError> {
        reply.json.as_ref().ok_or_else(|| {
            CrmError::Decode(format!(
                "{} answered without a JSON body",
                self.provider.label()
            ))
        })
    }

    fn shape_error(&self, what: &str) -> CrmError {
        CrmError::Decode(format!("{} answered without {what}", self.provider.label()))
    }
}

/// The headers every call of `provider` carries.
fn fixed_headers(
    provider: Provider,
    auth: &CrmAuth,
    endpoints: &CrmEndpoints,
) -> Result<HeaderMap, ()> {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, APPLICATION_JSON);
    let authorization = match (provider, auth) {
        (Provider::FollowUpBoss, CrmAuth::ApiKey(key)) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        ),
        (Provider::Lofty, CrmAuth::ApiKey(key)) => format!("token {key}"),
        (_, auth) => format!("Bearer {}", auth.secret()),
    };
    let mut value = HeaderValue::from_str(&authorization).map_err(|_| ())?;
    value.set_sensitive(true);
    h.insert(AUTHORIZATION, value);
    match provider {
        Provider::FollowUpBoss => {
            for (name, v) in [
                ("x-system", &endpoints.fub_system),
                ("x-system-key", &endpoints.fub_system_key),
            ] {
                if !v.is_empty() {
                    let mut value = HeaderValue::from_str(v).map_err(|_| ())?;
                    value.set_sensitive(name == "x-system-key");
                    h.insert(HeaderName::from_static(name), value);
                }
            }
        }
        // Lofty: some GETs and all DELETEs fail without it.
        Provider::Lofty => {
            h.insert(CONTENT_TYPE, APPLICATION_JSON);
        }
        Provider::Rex => {
            h.insert(CONTENT_TYPE, APPLICATION_JSON);
            h.insert(
                HeaderName::from_static("x-api-option"),
                HeaderValue::from_static("use_status_codes=true"),
            );
        }
    }
    Ok(h)
}

/// An id as CRMs send it: a non-empty string, or an integer (ids are int64 in Lofty).
fn id_of(v: &Value) -> Option<String> {
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
fn id_at(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| v.get(*k).and_then(id_of))
}

/// Whether a request body has nothing to send (`{}`).
fn is_empty(body: &Value) -> bool {
    body.as_object().is_some_and(|m| m.is_empty())
}

fn pushed(external_id: &str, action: PushAction) -> PushResult {
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
fn record_phones(v: &Value) -> Vec<String> {
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

/// Whether the record carries `phone` in any written form.
fn has_phone(record: &Value, phone: &PhoneNumber) -> bool {
    record_phones(record).iter().any(|raw| phone.matches(raw))
}

/// The first candidate of a phone search that really has the phone, with its id.
fn first_match(
    records: &[Value],
    id_keys: &[&str],
    phone: &PhoneNumber,
) -> Option<(String, Value)> {
    records
        .iter()
        .filter(|r| has_phone(r, phone))
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
        let (id, _) = first_match(&records, &["id"], &phone).unwrap();
        assert_eq!(id, "651095960136641");
        assert!(first_match(&records[..1], &["id"], &phone).is_none());
    }

    #[test]
    fn header_values_that_cannot_be_sent_fail_as_credentials() {
        let e = CrmEndpoints {
            rex_contacts: String::new(),
            rex_base: String::new(),
            fub_base: String::new(),
            fub_system: "crmsync".into(),
            fub_system_key: "k".into(),
            lofty_base: String::new(),
        };
        assert!(fixed_headers(Provider::Lofty, &CrmAuth::ApiKey("a\nb".into()), &e).is_err());
        let h = fixed_headers(Provider::FollowUpBoss, &CrmAuth::ApiKey("abc".into()), &e).unwrap();
        // base64("abc:")
        assert_eq!(h[AUTHORIZATION], "Basic YWJjOg==");
        assert!(h[AUTHORIZATION].is_sensitive());
    }
}
