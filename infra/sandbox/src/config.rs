//! Sandbox configuration: credentials, switches for the UNCONFIRMED readings of the CRM
//! APIs, rate limits and fault injection. Every struct is `serde(default)`, so the control
//! API (`PUT /_sandbox/{provider}/config`) accepts partial JSON objects that are merged
//! into the current configuration.

use serde::{Deserialize, Serialize};

/// The three simulated CRMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Rex,
    Fub,
    Lofty,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Rex, Provider::Fub, Provider::Lofty];

    /// Path prefix / control-API name: `rex`, `fub`, `lofty`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Rex => "rex",
            Provider::Fub => "fub",
            Provider::Lofty => "lofty",
        }
    }

    /// Accepts `rex`, `fub`, `followupboss`, `follow-up-boss`, `lofty` (any case).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "rex" => Some(Provider::Rex),
            "fub" | "followupboss" | "follow-up-boss" | "follow_up_boss" => Some(Provider::Fub),
            "lofty" | "chime" => Some(Provider::Lofty),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Provider::Rex => 0,
            Provider::Fub => 1,
            Provider::Lofty => 2,
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The whole sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Authorize endpoints redirect straight back with an approval instead of rendering
    /// the consent page.
    pub auto_approve: bool,
    /// Size of the request-log ring buffer (`GET /_sandbox/requests`).
    pub request_log_capacity: usize,
    pub rex: RexConfig,
    pub fub: FubConfig,
    pub lofty: LoftyConfig,
    pub webhooks: WebhookConfig,
}

/// How the sandbox delivers webhooks (`crate::webhooks`). The CRMs' own schedules are hours long
/// ("retried 5 times over 8 hours", crm-apis §1.6); the sandbox keeps their shape on a shorter clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Changes are gathered this long and sent together (FUB: "large batch updates may be split
    /// across requests", so one request may name several records).
    pub batch_ms: u64,
    /// Records one request names at most.
    pub max_ids: usize,
    /// The receiver must answer 2xx within this (FUB: 10 s, crm-apis §1.6).
    pub deadline_ms: u64,
    /// Further attempts after a failed one (FUB: 5).
    pub retries: u32,
    /// Delay before the first retry, doubling after each.
    pub retry_base_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            batch_ms: 250,
            max_ids: 100,
            deadline_ms: 10_000,
            retries: 5,
            retry_base_ms: 1_000,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            auto_approve: false,
            request_log_capacity: 1000,
            rex: RexConfig::default(),
            fub: FubConfig::default(),
            lofty: LoftyConfig::default(),
            webhooks: WebhookConfig::default(),
        }
    }
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    /// Shown on the consent page.
    pub app_name: String,
    /// Allowed redirect URIs. An entry ending in `*` is a prefix pattern. Empty list = the
    /// default loopback patterns `http://127.0.0.1*`, `http://localhost*`, `http://[::1]*`.
    pub redirect_uris: Vec<String>,
}

impl Default for OAuthClient {
    fn default() -> Self {
        OAuthClient {
            client_id: String::new(),
            client_secret: String::new(),
            app_name: "crmsync".into(),
            redirect_uris: default_redirect_uris(),
        }
    }
}

fn default_redirect_uris() -> Vec<String> {
    vec![
        "http://127.0.0.1*".into(),
        "http://localhost*".into(),
        "http://[::1]*".into(),
    ]
}

impl OAuthClient {
    pub fn new(id: &str, secret: &str) -> Self {
        OAuthClient {
            client_id: id.into(),
            client_secret: secret.into(),
            ..OAuthClient::default()
        }
    }

    pub(crate) fn redirect_allowed(&self, uri: &str) -> bool {
        let patterns = if self.redirect_uris.is_empty() {
            default_redirect_uris()
        } else {
            self.redirect_uris.clone()
        };
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => uri == p,
        })
    }
}

/// How a phone filter of a CRM compares numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneSearch {
    /// The stored string, trimmed, case-insensitive: `0412 345 678` is found only by
    /// `0412 345 678` (crm-apis §4: REX "stores phone numbers as typed … its search
    /// compares the stored string").
    Exact,
    /// The national significant number: `+61 412 345 678` finds `0412 345 678`.
    Normalized,
}

/// REX (Rex Software). See README for the UNCONFIRMED readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RexConfig {
    pub oauth_clients: Vec<OAuthClient>,
    /// `Authentication/login` credentials.
    pub login_email: String,
    pub login_password: String,
    /// OAuth access-token lifetime.
    pub access_token_lifetime_secs: u64,
    /// Login-session lifetime when the login body has no `token_lifetime` (UNCONFIRMED).
    pub login_token_lifetime_secs: u64,
    /// Refresh returns a new refresh token and invalidates the old one (UNCONFIRMED).
    pub rotate_refresh_tokens: bool,
    /// Scope granted when the authorize request has none.
    pub default_scope: String,
    /// Authorize requests must carry a PKCE `code_challenge`.
    pub require_pkce: bool,
    /// UNCONFIRMED: errors are HTTP 200 with `error` set unless the request has
    /// `X-Api-Option: use_status_codes=true`. `true` = always use HTTP status codes.
    pub errors_always_use_status_codes: bool,
    /// `limit` when a search has none.
    pub search_default_limit: u32,
    /// Largest accepted `limit` (larger = validation error).
    pub search_max_limit: u32,
    /// `contact.phone_number` criteria (and the phones `update` appends): `exact` (crm-apis
    /// §4) or `normalized` (the kinder reading).
    pub phone_search: PhoneSearch,
    /// UNCONFIRMED: archiving, trashing or recovering a contact changes its
    /// `system_modtime`. `false` (harsher): it does not, so a `system_modtime` cursor never
    /// sees it.
    pub archive_bumps_modtime: bool,
    /// The account the login and the OAuth grants belong to. A login that names another
    /// `account_id` (crm-apis §3.2) is refused.
    pub account_id: u64,
}

impl Default for RexConfig {
    fn default() -> Self {
        RexConfig {
            oauth_clients: vec![OAuthClient {
                app_name: "crmsync (REX sandbox client)".into(),
                ..OAuthClient::new("sandbox-rex-client", "sandbox-rex-secret")
            }],
            login_email: "agent@example.com".into(),
            login_password: "sandbox-password".into(),
            access_token_lifetime_secs: 3600,
            login_token_lifetime_secs: 3600,
            rotate_refresh_tokens: true,
            default_scope: "openid profile rex.read".into(),
            require_pkce: false,
            errors_always_use_status_codes: false,
            search_default_limit: 20,
            search_max_limit: 100,
            phone_search: PhoneSearch::Exact,
            archive_bumps_modtime: false,
            account_id: 3_487,
        }
    }
}

/// Which attributes `POST /v1/events` dedupes on after an email match failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventPhoneMatch {
    /// Phone alone matches an existing person.
    Phone,
    /// Phone AND first and last name must match (FUB's product-level rule).
    PhoneAndName,
    /// Never match on phone.
    Off,
}

/// How `isPrimary` is rendered in FUB emails/phones (UNCONFIRMED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryFlag {
    /// `1` / `0`
    Int,
    /// `true` / `false`
    Bool,
}

/// Follow Up Boss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FubConfig {
    pub oauth_clients: Vec<OAuthClient>,
    /// Valid API keys (HTTP Basic `key:`).
    pub api_keys: Vec<String>,
    /// Registered `X-System` / `X-System-Key`.
    pub system: String,
    pub system_key: String,
    /// Missing `X-System`/`X-System-Key` → 401; wrong values → 403. `false` = allow calls
    /// without them (wrong values still 403).
    pub require_system_headers: bool,
    pub access_token_lifetime_secs: u64,
    /// UNCONFIRMED: refresh returns a new refresh token and the old one stops working.
    /// `false` = the same refresh token is returned and stays valid.
    pub rotate_refresh_tokens: bool,
    /// Default `sort` of `GET /v1/people` (docs conflict: "reverse id order" vs `created`).
    pub default_sort: String,
    /// UNCONFIRMED: honour `updatedAfter` on `GET /v1/people` (off = silently ignored).
    pub updated_after_filter: bool,
    pub default_limit: u32,
    /// Larger `limit` values are clamped to this.
    pub max_limit: u32,
    /// `offset` above this → 400 "Deep pagination disabled…" (UNCONFIRMED value).
    pub deep_pagination_max_offset: u64,
    /// Requests per sliding window for the `global` context.
    pub rate_limit_global: u32,
    /// Requests per sliding window for the `events` context (`POST /v1/events`).
    pub rate_limit_events: u32,
    /// Sliding window length (FUB: 10 s).
    pub rate_limit_window_secs: u32,
    /// Event sources whose lead flow is archived: `POST /v1/events` → 204, nothing stored.
    pub archived_sources: Vec<String>,
    pub events_phone_match: EventPhoneMatch,
    pub is_primary_format: PrimaryFlag,
    /// UNCONFIRMED: moving a person to the `Trash` stage (or out of it) changes `updated`.
    /// `false` (harsher): it does not, so a `sort=updated` cursor never sees a trashing.
    pub trash_bumps_updated: bool,
    /// `next` (keyset) is returned "when keyset pagination is possible" (pagination
    /// reference). `false` (harsher): only for id-ordered lists (`id`, `-id`); other sorts
    /// page by `offset` alone. `true`: `next` for every sort.
    pub keyset_for_all_sorts: bool,
    /// The account and the user behind every key and token (`GET /v1/identity`, `/v1/me`,
    /// the `FUB-Account-ID` / `FUB-User-ID` response headers).
    pub account_id: u64,
    pub user_id: u64,
    /// Webhooks one system may register per event. Public code enforces a cap it calls
    /// `MAX_WEBHOOKS_PER_EVENT`; a third party says 2 (crm-apis §1.6): the harsher 2.
    pub webhooks_per_event: u32,
}

impl Default for FubConfig {
    fn default() -> Self {
        FubConfig {
            oauth_clients: vec![OAuthClient {
                app_name: "crmsync (FUB sandbox client)".into(),
                ..OAuthClient::new("sandbox-fub-client", "sandbox-fub-secret")
            }],
            api_keys: vec!["sandbox-fub-key".into()],
            system: "crmsync".into(),
            system_key: "sandbox-system-key".into(),
            require_system_headers: true,
            access_token_lifetime_secs: 3600,
            rotate_refresh_tokens: true,
            default_sort: "-id".into(),
            updated_after_filter: false,
            default_limit: 10,
            max_limit: 100,
            deep_pagination_max_offset: 2000,
            rate_limit_global: 250,
            rate_limit_events: 250,
            rate_limit_window_secs: 10,
            archived_sources: Vec::new(),
            events_phone_match: EventPhoneMatch::Phone,
            is_primary_format: PrimaryFlag::Int,
            trash_bumps_updated: false,
            keyset_for_all_sorts: false,
            account_id: 1,
            user_id: 1,
            webhooks_per_event: 2,
        }
    }
}

/// Which Lofty requests fail without `Content-Type: application/json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonContentTypeRule {
    /// DELETE requests (and POST/PUT, whose bodies are JSON anyway).
    Delete,
    /// Every request, GETs included.
    All,
    /// Only POST/PUT with a body.
    BodyOnly,
}

/// What `POST /v1.0/leads` does when a lead with the same email exists (UNCONFIRMED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateEmailCreate {
    /// 200 `{"leadId": <existing id>}`, nothing changes.
    ReturnExisting,
    /// A second lead is created.
    Create,
    /// 400 `{"code":"LEAD_ALREADY_EXIST",…}`.
    Error,
}

/// Lofty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoftyConfig {
    /// Valid API keys (`Authorization: token <key>`).
    pub api_keys: Vec<String>,
    pub default_limit: u32,
    /// UNCONFIRMED (25 vs 100, crm-apis §2.6): the largest page served.
    pub max_limit: u32,
    /// A `limit` above `max_limit` is served as `max_limit` without a word (`true`, the
    /// harsher reading of "pages hard-capped at 25"), or refused with 400
    /// `LIMIT_NOT_VALID` (`false`).
    pub cap_silently: bool,
    /// UNCONFIRMED: list metadata key, `_metadata` or `get_metadata`.
    pub metadata_key: String,
    /// UNCONFIRMED: `GET /v1.0/leads/{id}` wraps the lead as `{"lead":{…}}`.
    pub wrap_single_lead: bool,
    /// For this long after a create the lead is not persisted yet (crm-apis §2.2): `GET
    /// /v1.0/leads/{id}` answers 404 `LEAD_NOT_EXIST`, and lists, phone and email searches
    /// and the duplicate-email check do not see it. Writes to it work.
    pub visibility_lag_ms: u64,
    /// Requests per 60-second window per API key.
    pub rate_limit_per_minute: u32,
    /// UNCONFIRMED: add `Retry-After` to 429 responses.
    pub retry_after_on_429: bool,
    /// Default list order: `createTime`, `updateTime` or `leadId`.
    pub default_sort: String,
    /// Default direction.
    pub default_desc: bool,
    /// `sort` values `GET /v1.0/leads` honours (case-insensitive; `updateTime`/`UpdateTime`,
    /// `createTime`/`CreateTime`, `leadId`, `LastActivity` (the internal update time)).
    /// Any other value, and `desc` with it, is silently ignored (crm-apis §2.6, §4). Default
    /// `[]`: the documented v1 value (`LastActivity`) cannot be reproduced reliably, so none.
    pub honoured_sorts: Vec<String>,
    /// Serve `updateTime` on leads. `false` (crm-apis §2.2, §4): the documented lead has
    /// `createTime` and `assignTime` only.
    pub emit_update_time: bool,
    /// The `phone` filter of `GET /v1.0/leads`: `exact` (the stored string, as REX) or
    /// `normalized`.
    pub phone_search: PhoneSearch,
    /// `teamId` and `userId` of `GET /v1.0/me`: the account behind every API key.
    pub account_id: u64,
    pub user_id: u64,
    pub require_json_content_type: JsonContentTypeRule,
    pub duplicate_email_on_create: DuplicateEmailCreate,
    /// Honour `offset` on the list (docs list it; integrators say only `scrollId` works).
    pub offset_param: bool,
}

impl Default for LoftyConfig {
    fn default() -> Self {
        LoftyConfig {
            api_keys: vec!["sandbox-lofty-key".into()],
            default_limit: 10,
            max_limit: 25,
            cap_silently: true,
            metadata_key: "_metadata".into(),
            wrap_single_lead: false,
            visibility_lag_ms: 1500,
            rate_limit_per_minute: 100,
            retry_after_on_429: false,
            default_sort: "createTime".into(),
            default_desc: true,
            require_json_content_type: JsonContentTypeRule::Delete,
            duplicate_email_on_create: DuplicateEmailCreate::ReturnExisting,
            offset_param: false,
            honoured_sorts: Vec::new(),
            emit_update_time: false,
            phone_search: PhoneSearch::Exact,
            account_id: 2_000_001,
            user_id: 1_000_001,
        }
    }
}

/// Fault injection for one provider's API routes (not `/_sandbox`, not the consent pages).
/// Each request draws one number: `drop_rate`, `error_rate`, `rate_429` and
/// `truncate_rate` are disjoint bands, so each happens at its configured share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of requests answered with a 5xx (500/502/503).
    pub error_rate: f64,
    /// Share of requests answered with 429 + `Retry-After`.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// Added to every API request.
    pub latency_ms: u64,
    /// Share of requests whose connection is closed without any response.
    pub drop_rate: f64,
    /// Share of responses whose JSON body is cut in half (status and headers intact).
    pub truncate_rate: f64,
    /// Makes the draws reproducible (sequential requests only).
    pub seed: Option<u64>,
    /// Errors and drops happen after the request was processed (default: before, so the
    /// request had no effect).
    pub after_processing: bool,
    /// The next this-many API requests are answered 503 (counted down, then the rates apply):
    /// a CRM that fails a known number of times and recovers.
    pub fail_next: u32,
    /// The next this-many *writes* (REX `Contacts/create|update`; FUB and Lofty POST, PUT,
    /// DELETE) are processed and then their connection is closed without an answer: the
    /// write landed, the client saw a connection error. Reads do not count. Checked before
    /// `fail_next`.
    pub drop_next_after_processing: u32,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_rate: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            drop_rate: 0.0,
            truncate_rate: 0.0,
            seed: None,
            after_processing: false,
            fail_next: 0,
            drop_next_after_processing: 0,
        }
    }
}

impl FaultConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_rate", self.error_rate),
            ("rate_429", self.rate_429),
            ("drop_rate", self.drop_rate),
            ("truncate_rate", self.truncate_rate),
        ];
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be within 0..=1"));
            }
        }
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        if sum > 1.0 + 1e-9 {
            return Err("the fault rates add up to more than 1".into());
        }
        Ok(())
    }
}
