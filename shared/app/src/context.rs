//! [`Context`]: what the use cases work with — the store and the vault, the CRMs, the shared DynamoDB
//! buckets, and the few settings they read. The edge builds it once per cold start (after the secret
//! has been read); nothing in it knows about HTTP, Lambda or the environment.

use std::sync::Arc;
use std::time::Duration;

use crmsync_aws::RateLimiter;
use crmsync_aws::sdk::Deferred;
use crmsync_crm::{CrmAuth, CrmClient, CrmConfig, CrmHttp};
use crmsync_domain::{Provider, Region};
use crmsync_store::{Store, Vault};

/// Makes the client of a CRM account: the real one by default; tests may put a fake CRM in its place.
pub type ConnectCrm = dyn Fn(&CrmHttp, &CrmConfig, Provider, CrmAuth) -> CrmClient + Send + Sync;

/// The CRMs: their configuration, the one HTTP transport, and how a client is made.
#[derive(Clone)]
pub struct Crms {
    pub config: CrmConfig,
    pub http: CrmHttp,
    connect: Arc<ConnectCrm>,
}

impl std::fmt::Debug for Crms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crms")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Crms {
    pub fn new(config: CrmConfig, http: CrmHttp) -> Self {
        Crms {
            config,
            http,
            connect: Arc::new(CrmClient::new),
        }
    }

    /// The same CRMs, with clients made by `connect` (a fake CRM in tests).
    pub fn with_connect(mut self, connect: Arc<ConnectCrm>) -> Self {
        self.connect = connect;
        self
    }

    /// A client for an account of `provider` with these credentials.
    pub fn client(&self, provider: Provider, auth: CrmAuth) -> CrmClient {
        (self.connect)(&self.http, &self.config, provider, auth)
    }
}

/// Settings the use cases read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The region phone numbers written without a country code are read in.
    pub phone_region: Region,
    /// The ceiling of the first backoff between push attempts (it doubles; each wait is drawn below
    /// its ceiling). Tests shrink it.
    pub push_backoff: Duration,
    /// How long after a create whose answer never came crmsync waits before it looks for the person
    /// (and creates it only if it is not there): the CRM may still be processing the create, and Lofty
    /// shows new leads only after a while (crm-apis §2.2, §4). Tests shrink it.
    pub create_settle: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            phone_region: Region::default(),
            push_backoff: Duration::from_millis(500),
            create_settle: Duration::from_secs(60),
        }
    }
}

/// Everything the use cases need.
pub struct Context {
    pub store: Store,
    pub vault: Vault,
    pub crms: Crms,
    /// The DynamoDB buckets shared by every Lambda: CRM pacing and used OAuth states. Made on first
    /// use.
    pub buckets: Arc<Deferred<RateLimiter>>,
    pub settings: Settings,
    /// The public address CRMs call crmsync at (`CRM_WEBHOOK_BASE_URL`, the API's base): with one, a
    /// connected integration subscribes to its CRM's contact changes ([`crate::live`]); without, it is
    /// polled only.
    pub webhook_base: Option<String>,
    /// The sync queue (`SYNC_QUEUE_URL`): with one, the scheduled run dispatches a message per due
    /// integration and syncs cut short continue in the background ([`crate::queue`]); without, the
    /// scheduled run syncs in its own Lambda ([`crate::schedule::run`]).
    pub queue: Option<crate::SyncQueue>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("store", &self.store)
            .field("vault", &self.vault)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
