//! Everything crmsync knows about talking to CRMs — REX (Rex Software), Follow Up Boss and Lofty.
//!
//! * One folder per CRM ([`rex`], [`followupboss`], [`lofty`]): its client calls, its JSON mapping in
//!   both directions, its settings and its quirks (OAuth flavour, auth headers, error dialect,
//!   documented rate, whether a page token survives a restart), described by its [`CrmKind`].
//! * One interface the rest of crmsync talks to: [`Crm`], one CRM account, reached through a
//!   [`CrmClient`] handle; [`kind`] gives the static facts of a provider.
//! * One transport ([`CrmHttp`]): the `reqwest` client, pacing by each CRM's rate-limit headers and the
//!   one [`RetryPolicy`]. Answers become [`CrmError`]s that never carry a token or a raw body.
//! * The OAuth flows ([`oauth`]), on the `oauth2` crate, parameterised by each CRM's flavour.
//!
//! This crate depends on `crmsync-domain` only and is built from plain configuration values
//! ([`CrmConfig`]). Facts about the APIs are in `docs/crm-apis.md`; where that page marks something
//! unconfirmed, the clients accept both readings.

mod config;
mod error;
mod mapping;
pub mod oauth;
mod records;
mod transport;
pub mod webhook;

pub mod followupboss;
pub mod lofty;
pub mod rex;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsync_domain::{Lead, Mapped, PhoneNumber, Provider, Region, SyncCursor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config::{BadSetting, Common, CrmConfig, CrmSecrets, CrmSettings};
pub use error::CrmError;
pub use oauth::{OAuthConfig, OAuthFlavour, TokenSet};
pub use transport::{CrmHttp, Pacer, RetryPolicy, Sleeper, Timeouts, with_deadline};

/// The static facts of one CRM: how it authenticates, how it answers, how fast it may be called, how
/// its records map to ours. One value per provider, from [`kind`].
pub trait CrmKind: Send + Sync + 'static {
    /// The provider this describes.
    fn provider(&self) -> Provider;

    /// The OAuth client of this CRM from the configuration, or `None` when it connects by API key only.
    fn oauth(&self, config: &CrmConfig) -> Option<OAuthConfig>;

    /// Whether an account can be connected with an API key.
    fn accepts_api_key(&self) -> bool;

    /// The documented request limit of one account, `(requests, per window)`, used until the CRM's own
    /// rate-limit headers say otherwise.
    fn documented_rate(&self) -> (u32, Duration);

    /// Whether a page token saved by an interrupted sync still lists the same records when a later run
    /// resumes with it. When it does not, a resumed sync starts from its cursor instead.
    fn page_token_survives_restart(&self) -> bool;

    /// Whether the CRM can list the records changed since a time ([`Listing::Changes`]). A CRM that
    /// cannot (its records carry no update time) is read in full every time and compared with what
    /// was stored.
    fn lists_changes(&self) -> bool;

    /// Whether the CRM's listings page by the cursor itself (the position of the last record read),
    /// rather than by a token of the CRM's: the reader then keeps the listing's position as a
    /// [`SyncCursor`] and passes it back.
    fn pages_by_cursor(&self) -> bool;

    /// The region numbers written without a country code are read in, for this CRM's accounts
    /// (its setting; users may choose another per integration).
    fn phone_region(&self, settings: &CrmSettings) -> Region;

    /// Maps one record of this CRM to a contact (or says why it cannot be one). Total: junk never
    /// panics.
    fn map_record(&self, record: &Value, region: Region) -> Mapped;

    /// A client for one account of this CRM.
    fn client(&self, http: &CrmHttp, config: &CrmConfig, auth: CrmAuth) -> CrmClient;

    /// The CRM's short error code in an error body, where this CRM puts it (`None` when it has none).
    fn error_code<'a>(&self, body: &'a Value) -> Option<&'a Value>;

    /// Whether an error code means the CRM refused the credentials, whatever the HTTP status.
    fn refuses_credentials(&self, _code: &str) -> bool {
        false
    }

    /// The status of a failure the CRM reported inside a success answer (`None`: the answer is what
    /// its HTTP status says).
    /// Whether the CRM takes an update of a person it created but does not show yet (Lofty persists
    /// creates asynchronously and "follow-up writes [are] unaffected", crm-apis §2.2): such an update
    /// is sent with no record to compare with.
    fn writes_before_visible(&self) -> bool {
        false
    }

    fn failure_in_body(&self, _body: Option<&Value>) -> Option<u16> {
        None
    }

    /// Reads a webhook delivery of this CRM (its headers and exact body) for the account `account`
    /// (its id at the CRM, where known): what changed, as a hint the receiver confirms by reading the
    /// records back, or why the delivery is refused. `config` gives the signing key where the CRM signs.
    fn read_webhook(
        &self,
        config: &CrmConfig,
        headers: &dyn webhook::Headers,
        body: &[u8],
        account: Option<&str>,
    ) -> Result<webhook::Hint, webhook::Refused>;
}

/// The static facts of `provider`.
pub fn kind(provider: Provider) -> &'static dyn CrmKind {
    match provider {
        Provider::Rex => &rex::Rex,
        Provider::FollowUpBoss => &followupboss::FollowUpBoss,
        Provider::Lofty => &lofty::Lofty,
    }
}

/// Maps one record of `provider`'s shape (see [`CrmKind::map_record`]).
pub fn map_record(provider: Provider, record: &Value, region: Region) -> Mapped {
    kind(provider).map_record(record, region)
}

/// What a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The records changed at or after `since`, with the records the CRM marks deleted where it lists
    /// them. A listing that could not go deeper ends with [`CrmError::ListingTooDeep`].
    Changes { since: Option<DateTime<Utc>> },
    /// Every record of the account (a complete scan: what it does not show is gone).
    All,
}

/// One page to read.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    pub listing: Listing,
    /// The listing's position: the last record read, for a CRM that pages by it
    /// ([`CrmKind::pages_by_cursor`]); others ignore it.
    pub position: &'a SyncCursor,
    /// The token of the previous page, if it gave one.
    pub page_token: Option<&'a str>,
    /// Records asked for (1..=100; a CRM may answer fewer).
    pub limit: u32,
    /// Where the account's numbers without a country code are read: the page's records are mapped
    /// as they are read.
    pub region: Region,
}

/// What a CRM says about the account credentials belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// The CRM's id of the account, where the CRM tells it (a reconnect to another account starts the
    /// sync afresh).
    pub id: Option<String>,
}

/// One CRM account: what the pull and the push ask of a CRM.
#[async_trait::async_trait]
pub trait Crm: Send + Sync {
    /// The CRM this account is at.
    fn kind(&self) -> &'static dyn CrmKind;

    /// The most restrictive limit this account has advertised in its rate-limit headers (requests per
    /// window), once a response carried them.
    fn advertised_rate(&self) -> Option<(u32, Duration)>;

    /// One page of raw records of a listing.
    async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError>;

    /// One cheap authenticated call, to check credentials. A refused key or token is
    /// [`CrmError::InvalidCredentials`].
    async fn verify_credentials(&self) -> Result<(), CrmError>;

    /// The account the credentials belong to, where the CRM tells it (checking the credentials on
    /// the way); a CRM that documents no such call answers without asking.
    async fn account(&self) -> Result<Account, CrmError>;

    /// The person whose phone is `phone`: its id and its record, as an update needs it. CRMs store
    /// phones as typed (crm-apis §4), so the search asks for the forms a person types the number in
    /// where numbers without a country code are read in `region` (the integration's phone region,
    /// [`PhoneNumber::typed_forms`]), one call after the other ([`Crm::phone_searches`]) until one
    /// finds the person; every hit is confirmed on the record's own phones, each read in `region`
    /// and compared in E.164, before it is returned.
    async fn find_by_phone(
        &self,
        phone: &PhoneNumber,
        region: Region,
    ) -> Result<Option<(String, Value)>, CrmError> {
        for forms in self.phone_searches(phone, region) {
            if let Some(found) = self.find_by_phone_among(phone, region, &forms).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The search calls a lookup of `phone` makes, in order, each as the written forms it asks for
    /// (a CRM that takes several values at once asks for them all in one call).
    fn phone_searches(&self, phone: &PhoneNumber, region: Region) -> Vec<Vec<String>>;

    /// One search call for `forms` (written forms of `phone`): the first record found that really
    /// has the number, read in `region`.
    async fn find_by_phone_among(
        &self,
        phone: &PhoneNumber,
        region: Region,
        forms: &[String],
    ) -> Result<Option<(String, Value)>, CrmError>;

    /// Creates the lead. Not retried except on 429 and on connection failures before anything was sent.
    async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError>;

    /// Updates the person `external_id` (whose record is `existing`) with the lead. When there is
    /// nothing to send, no call is made and the action is `Unchanged`.
    async fn update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError>;

    /// The person `external_id`'s record, as an update needs it; `NotFound` when the CRM does not
    /// show it (deleted, or not persisted yet: [`CrmKind::writes_before_visible`]).
    async fn read(&self, external_id: &str) -> Result<Value, CrmError>;

    /// Subscribes `callback` (an HTTPS address that carries the integration's secret token) to the
    /// account's contact changes: Follow Up Boss webhooks for people created, updated, moved to
    /// another stage (the trash is a stage) and deleted (crm-apis §1.6), Lofty's Lead Info list (§2.5),
    /// REX admin webhooks for contacts created and updated (§3.6). `Ok(None)` when the CRM refuses it
    /// for this account or these credentials (a key that is not the owner's, a cap on subscriptions):
    /// the integration is then polled. Nothing is left subscribed when it fails half way.
    async fn subscribe(&self, callback: &str) -> Result<Option<Subscription>, CrmError>;

    /// Removes what [`Crm::subscribe`] made. A subscription the CRM no longer has is not an error.
    async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), CrmError>;
}

/// The webhook subscriptions crmsync made at a CRM for one account: what a disconnect removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The CRM's ids of the subscriptions (Follow Up Boss: one per event).
    pub ids: Vec<String>,
}

/// Whether a CRM refused a subscription for this account or these credentials, rather than failed
/// to answer: a 4xx other than 408 and 429, or refused credentials (Follow Up Boss lets only the
/// owner's key manage webhooks, §1.6).
pub(crate) fn refuses_subscription(e: &CrmError) -> bool {
    match e {
        CrmError::InvalidCredentials | CrmError::NotFound => true,
        CrmError::Upstream { status, .. } => {
            (400..500).contains(status) && *status != 408 && *status != 429
        }
        _ => false,
    }
}

/// A handle to one CRM account. Cheap to clone; clones share pacing.
#[derive(Clone)]
pub struct CrmClient(Arc<dyn Crm>);

impl fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmClient")
            .field("provider", &self.provider())
            .finish_non_exhaustive()
    }
}

impl CrmClient {
    /// A client for an account of `provider` with these credentials.
    pub fn new(http: &CrmHttp, config: &CrmConfig, provider: Provider, auth: CrmAuth) -> Self {
        kind(provider).client(http, config, auth)
    }

    /// A handle to any implementation of [`Crm`] (tests give the pull and the push a fake).
    pub fn from_crm(crm: Arc<dyn Crm>) -> Self {
        CrmClient(crm)
    }

    pub fn provider(&self) -> Provider {
        self.0.kind().provider()
    }

    pub fn kind(&self) -> &'static dyn CrmKind {
        self.0.kind()
    }

    /// See [`Crm::advertised_rate`].
    pub fn advertised_rate(&self) -> Option<(u32, Duration)> {
        self.0.advertised_rate()
    }

    /// See [`Crm::list_page`]. `limit` is clamped to 1..=100.
    pub async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError> {
        let limit = request.limit.clamp(1, 100);
        self.0.list_page(PageRequest { limit, ..request }).await
    }

    /// See [`Crm::verify_credentials`].
    pub async fn verify_credentials(&self) -> Result<(), CrmError> {
        self.0.verify_credentials().await
    }

    /// See [`Crm::account`].
    pub async fn account(&self) -> Result<Account, CrmError> {
        self.0.account().await
    }

    /// See [`Crm::find_by_phone`].
    pub async fn find_by_phone(
        &self,
        phone: &PhoneNumber,
        region: Region,
    ) -> Result<Option<(String, Value)>, CrmError> {
        self.0.find_by_phone(phone, region).await
    }

    /// [`Crm::find_by_phone`], each search call waiting for its turn from `pace` first (a push's
    /// share of the account's rate): a lookup costs one turn per call it makes, no more.
    /// `Err(wait)` when a turn is past the caller's deadline (no call is made for it).
    pub async fn find_by_phone_paced<P, F>(
        &self,
        phone: &PhoneNumber,
        region: Region,
        pace: &mut P,
    ) -> Result<Result<Option<(String, Value)>, CrmError>, Duration>
    where
        P: FnMut() -> F,
        F: std::future::Future<Output = Result<(), Duration>>,
    {
        for forms in self.0.phone_searches(phone, region) {
            pace().await?;
            match self.0.find_by_phone_among(phone, region, &forms).await {
                Ok(None) => {}
                found => return Ok(found),
            }
        }
        Ok(Ok(None))
    }

    /// See [`Crm::create`].
    pub async fn create(&self, lead: &Lead) -> Result<PushResult, CrmError> {
        self.0.create(lead).await
    }

    /// See [`Crm::read`].
    pub async fn read(&self, external_id: &str) -> Result<Value, CrmError> {
        self.0.read(external_id).await
    }

    /// See [`Crm::subscribe`].
    pub async fn subscribe(&self, callback: &str) -> Result<Option<Subscription>, CrmError> {
        self.0.subscribe(callback).await
    }

    /// See [`Crm::unsubscribe`].
    pub async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), CrmError> {
        self.0.unsubscribe(subscription).await
    }

    /// See [`Crm::update`].
    pub async fn update(
        &self,
        external_id: &str,
        existing: &Value,
        lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        self.0.update(external_id, existing, lead).await
    }

    /// Maps one record of this CRM (see [`CrmKind::map_record`]).
    pub fn map_record(&self, record: &Value, region: Region) -> Mapped {
        self.kind().map_record(record, region)
    }
}

/// The credentials of one CRM account. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum CrmAuth {
    /// An OAuth access token (REX, Follow Up Boss), or a REX login session token: sent as
    /// `Authorization: Bearer`.
    OAuth { access_token: String },
    /// An API key, sent the way its CRM takes keys.
    ApiKey(String),
}

impl CrmAuth {
    pub(crate) fn secret(&self) -> &str {
        match self {
            CrmAuth::OAuth { access_token } => access_token,
            CrmAuth::ApiKey(key) => key,
        }
    }
}

impl fmt::Debug for CrmAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrmAuth::OAuth { .. } => f
                .debug_struct("OAuth")
                .field("access_token", &"[redacted]")
                .finish(),
            CrmAuth::ApiKey(_) => f.debug_tuple("ApiKey").field(&"[redacted]").finish(),
        }
    }
}

/// One page of CRM records, each mapped as it was read ([`CrmKind::map_record`]'s mapping, from the
/// page's body without building a `serde_json::Value` of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Mapped>,
    /// The token for the next page (FUB `next` or an offset, Lofty `scrollId`, REX an offset within one
    /// second).
    pub next_token: Option<String>,
    /// Whether another page should be asked for.
    pub has_more: bool,
}

/// The outcome of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    /// The CRM's id of the person, when the CRM told us.
    pub external_id: Option<String>,
    pub action: PushAction,
}

/// What a push did in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushAction {
    /// A new person was created.
    Created,
    /// An existing person was changed (FUB: the event matched an existing person).
    Updated,
    /// The person already had everything; no call was made.
    Unchanged,
    /// The CRM accepted and ignored the lead (FUB 204: the lead flow of the source is archived).
    Ignored,
}

impl PushAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PushAction::Created => "created",
            PushAction::Updated => "updated",
            PushAction::Unchanged => "unchanged",
            PushAction::Ignored => "ignored",
        }
    }
}

impl fmt::Display for PushAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_debug_never_shows_the_secret() {
        let a = CrmAuth::ApiKey("key-123".into());
        let b = CrmAuth::OAuth {
            access_token: "tok-456".into(),
        };
        assert_eq!(format!("{a:?}"), "ApiKey(\"[redacted]\")");
        assert!(!format!("{b:?}").contains("tok-456"));
    }

    #[test]
    fn push_action_wire_names() {
        for a in [
            PushAction::Created,
            PushAction::Updated,
            PushAction::Unchanged,
            PushAction::Ignored,
        ] {
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
            assert_eq!(a.to_string(), a.as_str());
        }
    }

    #[test]
    fn every_provider_has_its_kind() {
        for p in Provider::ALL {
            assert_eq!(kind(p).provider(), p);
        }
    }
}
