//! [`Conn`]: the request plumbing every CRM client sends through — one account's headers and pacer, URLs
//! built safely, answers turned into [`CrmError`]s in the CRM's own dialect.

use std::sync::Arc;

use bytes::Bytes;
use crmsync_domain::Provider;
use crmsync_domain::json::Loose;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use reqwest::Url;
use serde_json::Value;

use super::client::{Call, CrmHttp, Reply};
use super::pacer::Pacer;
use crate::error::{self, CrmError};
use crate::{CrmAuth, CrmKind};

pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// `Accept: application/json` and `Authorization: <authorization>` (marked sensitive), or `Err` when
/// the credentials cannot be sent as a header value.
pub(crate) fn base_headers(authorization: &str) -> Result<HeaderMap, ()> {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, APPLICATION_JSON);
    let mut value = HeaderValue::from_str(authorization).map_err(|_| ())?;
    value.set_sensitive(true);
    h.insert(AUTHORIZATION, value);
    Ok(h)
}

/// One CRM account's connection: the shared HTTP client, the account's headers and its pacer.
#[derive(Clone)]
pub(crate) struct Conn {
    http: CrmHttp,
    kind: &'static dyn CrmKind,
    /// Authentication and fixed headers, or `Err` when the credentials cannot be sent as a header
    /// value (every call then fails with `InvalidCredentials`).
    headers: Result<HeaderMap, ()>,
    pacer: Arc<Pacer>,
}

impl Conn {
    pub(crate) fn new(
        http: &CrmHttp,
        kind: &'static dyn CrmKind,
        headers: Result<HeaderMap, ()>,
        auth: &CrmAuth,
    ) -> Self {
        Conn {
            http: http.clone(),
            kind,
            headers,
            pacer: http.pacer(kind.provider(), auth.secret()),
        }
    }

    pub(crate) fn kind(&self) -> &'static dyn CrmKind {
        self.kind
    }

    fn provider(&self) -> Provider {
        self.kind.provider()
    }

    pub(crate) fn advertised_rate(&self) -> Option<(u32, std::time::Duration)> {
        self.pacer.advertised_rate()
    }

    /// `base` + path segments (each percent-encoded, so an id can never change the path) + query pairs.
    pub(crate) fn url(
        &self,
        base: &str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, CrmError> {
        let invalid = || {
            CrmError::Transport(format!(
                "the configured {} URL is not a valid URL",
                self.provider().label()
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
    /// [`CrmError`], as well as a failure the CRM reports inside a success answer.
    pub(crate) async fn send(
        &self,
        route: &'static str,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Reply, CrmError> {
        self.call(route, method, url, body, idempotent, false).await
    }

    async fn call(
        &self,
        route: &'static str,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
        page: bool,
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
                    self.provider().label()
                ))
            })
        };
        let call = Call {
            provider: self.provider(),
            route,
            idempotent,
            pacer: Some(&self.pacer),
            page,
        };
        let reply = self.http.execute(&call, &build).await?;
        let failure = if !reply.status.is_success() {
            Some(reply.status.as_u16())
        } else {
            self.kind.failure_in_body(reply.json.as_ref())
        };
        match failure {
            None => Ok(reply),
            Some(status) => {
                let err = error::from_status(self.kind, status, reply.json.as_ref());
                tracing::warn!(
                    provider = self.provider().as_str(),
                    route,
                    http_status = reply.status.as_u16(),
                    status,
                    code = error::error_code(self.kind, reply.json.as_ref()).as_deref(),
                    "CRM call refused"
                );
                Err(err)
            }
        }
    }

    pub(crate) async fn get(&self, route: &'static str, url: Url) -> Result<Reply, CrmError> {
        self.send(route, Method::GET, url, None, true).await
    }

    /// A GET of a list page: its body is read by [`Conn::page_json`], not into `Reply::json`.
    pub(crate) async fn get_page(&self, route: &'static str, url: Url) -> Result<Reply, CrmError> {
        self.call(route, Method::GET, url, None, true, true).await
    }

    /// The JSON body of a list page ([`Conn::get_page`]), its strings borrowed from the reply.
    pub(crate) fn page_json<'r>(&self, reply: &'r Reply) -> Result<Loose<'r>, CrmError> {
        serde_json::from_slice(&reply.body).map_err(|_| {
            CrmError::Decode(format!(
                "{} answered without a JSON body",
                self.provider().label()
            ))
        })
    }

    /// The JSON body of a successful answer, or `Decode`.
    pub(crate) fn json<'r>(&self, reply: &'r Reply) -> Result<&'r Value, CrmError> {
        reply.json.as_ref().ok_or_else(|| {
            CrmError::Decode(format!(
                "{} answered without a JSON body",
                self.provider().label()
            ))
        })
    }

    /// The reply's JSON body, taken out of it (a list's records are moved, not copied).
    pub(crate) fn owned_json(&self, reply: Reply) -> Result<Value, CrmError> {
        reply.json.ok_or_else(|| {
            CrmError::Decode(format!(
                "{} answered without a JSON body",
                self.provider().label()
            ))
        })
    }

    pub(crate) fn shape_error(&self, what: &str) -> CrmError {
        CrmError::Decode(format!(
            "{} answered without {what}",
            self.provider().label()
        ))
    }
}
