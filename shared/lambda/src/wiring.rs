//! The wiring of a function, built once per cold start: the settings from the environment, and —
//! on the first event that needs them — the secret, and with it the use cases' [`Context`] and the JWT
//! verifier.
//!
//! Building it is cheap and does no network I/O: the secret is fetched, and the database pool, vault
//! and JWT verifier are made, on the first event that needs them (then cached). The AWS SDK clients and
//! credentials chain (see `crmsync_aws::sdk`) and the CRM HTTP client are also made on first use: each
//! of them reads and parses the system's root certificates when it is made. So a cold start costs the
//! runtime's own start-up and parsing the environment.

use std::sync::Arc;
use std::time::Duration;

use crmsync_app::{Context, Crms};
use crmsync_aws::sdk::{Deferred, dynamo_client};
use crmsync_aws::{Rate, RateLimiter};
use crmsync_crm::{CrmConfig, CrmHttp};
use crmsync_store::{ConnectOptions, Store, Vault};
use tokio::sync::OnceCell;

use crate::auth::{Caller, JwtVerifier};
use crate::config::{AppSecrets, ConfigError, SecretsProvider, Settings};
use crate::error::ApiError;

/// Database connections per instance of an HTTP function. Lambda gives an instance one event at a
/// time; within one, a pull holds its sync lease's connection while its writer commits pages on a
/// second (and an OAuth refresh locks the integration's row on one), so two keep every request moving.
/// Through a transaction-mode pooler (Supabase's 6543, RDS Proxy) they cost the database nothing while
/// idle.
pub const DB_POOL_SIZE: usize = 2;

/// Database connections of the scheduled run's instance: its concurrent pulls each hold a lease's
/// connection, and one more lets their writers through (`crmsync_app::schedule` never runs more pulls
/// at once than the pool leaves room for).
pub const SCHEDULED_DB_POOL_SIZE: usize = crmsync_app::schedule::PULL_CONCURRENCY + 2;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the CRM HTTP client: {0}")]
    Http(String),
}

/// What needs the secret: made once, on first use.
pub struct Ready {
    pub secrets: Arc<AppSecrets>,
    pub jwt: JwtVerifier,
    /// What the use cases work with.
    pub ctx: Context,
}

/// One function's wiring.
pub struct App {
    pub settings: Settings,
    /// The DynamoDB buckets: caller limits here, CRM pacing and OAuth states in the use cases.
    pub limiter: Arc<Deferred<RateLimiter>>,
    pub http: CrmHttp,
    /// See `crmsync_app::Settings::push_backoff`.
    pub push_backoff: Duration,
    /// See `crmsync_app::Settings::create_settle`.
    pub create_settle: Duration,
    /// Database connections of this instance ([`DB_POOL_SIZE`]; the scheduled run's
    /// [`SCHEDULED_DB_POOL_SIZE`]). Read when the store is made, on the first event that needs it.
    pub db_pool_size: usize,
    secrets: Deferred<SecretsProvider>,
    /// The AWS configuration the sync queue is reached with (its client is made with the context).
    aws: aws_config::SdkConfig,
    ready: OnceCell<Ready>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("ready", &self.ready.initialized())
            .finish_non_exhaustive()
    }
}

impl App {
    /// From the process environment, as a function's `main` does: the AWS configuration of
    /// `crmsync_aws::sdk::lambda_config` (region, credentials chain and `AWS_ENDPOINT_URL` from the
    /// environment, the chain built on the first AWS call).
    pub async fn from_env() -> Result<Self, StartupError> {
        let settings = Settings::from_env()?;
        let aws = crmsync_aws::sdk::lambda_config().await;
        Self::new(settings, &aws)
    }

    /// From explicit settings and AWS configuration (tests point these at moto and the sandbox).
    pub fn new(settings: Settings, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Self::with_aws(settings, aws, aws)
    }

    /// As [`App::new`], with Secrets Manager (and the sync queue) reached through `secrets_aws` and DynamoDB (caller limits,
    /// CRM pacing, OAuth states) through `dynamo_aws`. Production passes the same configuration twice;
    /// the reliability tests give DynamoDB a dead endpoint while the secret still comes from moto.
    pub fn with_aws(
        settings: Settings,
        secrets_aws: &aws_config::SdkConfig,
        dynamo_aws: &aws_config::SdkConfig,
    ) -> Result<Self, StartupError> {
        let secrets: Deferred<SecretsProvider> = {
            let (aws, id) = (secrets_aws.clone(), settings.app_secret_id.clone());
            Deferred::new(Box::new(move || {
                SecretsProvider::new(aws_sdk_secretsmanager::Client::new(&aws), id)
            }))
        };
        let limiter: Deferred<RateLimiter> = {
            let (aws, table) = (dynamo_aws.clone(), settings.rate_limit_table.clone());
            Deferred::new(Box::new(move || {
                RateLimiter::new(dynamo_client(&aws), table)
            }))
        };
        let http = CrmHttp::new().map_err(|e| StartupError::Http(e.to_string()))?;
        Ok(App {
            settings,
            limiter: Arc::new(limiter),
            http,
            push_backoff: crmsync_app::Settings::default().push_backoff,
            create_settle: crmsync_app::Settings::default().create_settle,
            db_pool_size: DB_POOL_SIZE,
            secrets,
            aws: secrets_aws.clone(),
            ready: OnceCell::new(),
        })
    }

    /// The secret-dependent parts, made on first use. A failure is logged and is a 500 to the caller;
    /// the next event tries again.
    pub async fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready
            .get_or_try_init(|| async {
                let secrets = self.secrets.get().await.map_err(ApiError::internal)?;
                let options = ConnectOptions {
                    ca_pem: secrets.database_ca_pem.clone(),
                };
                let store = Store::connect_with(&secrets.database_url, self.db_pool_size, &options)
                    .map_err(ApiError::internal)?;
                let vault = Vault::new(
                    &secrets.encryption_key,
                    secrets.encryption_key_previous.as_deref(),
                )
                .map_err(ApiError::internal)?;
                let jwt = JwtVerifier::new(&secrets.jwt_secret);
                let crm = CrmConfig::new(self.settings.crm.clone(), secrets.crm.clone());
                let ctx = Context {
                    store,
                    vault,
                    crms: Crms::new(crm, self.http.clone()),
                    buckets: self.limiter.clone(),
                    settings: crmsync_app::Settings {
                        phone_region: self.settings.default_phone_region,
                        push_backoff: self.push_backoff,
                        create_settle: self.create_settle,
                    },
                    webhook_base: self.settings.webhook_base.clone(),
                    queue: self.settings.sync_queue_url.as_ref().map(|url| {
                        crmsync_app::SyncQueue {
                            queue: crmsync_aws::Queue::new(&self.aws, url.clone()),
                            claim_ttl: self.settings.sync_claim_ttl,
                        }
                    }),
                };
                Ok(Ready { secrets, jwt, ctx })
            })
            .await
    }

    /// The use cases' context.
    pub async fn context(&self) -> Result<&Context, ApiError> {
        Ok(&self.ready().await?.ctx)
    }

    /// The caller of an HTTP request (JWT from the `alto_admin` cookie or a Bearer header).
    pub async fn authenticate(&self, req: &lambda_http::Request) -> Result<Caller, ApiError> {
        self.ready().await?.jwt.authenticate(req.headers())
    }

    /// Takes one token from the caller's bucket `name`, or answers 429 with `Retry-After`. If DynamoDB
    /// cannot be reached the call is let through (and the failure logged): caller limits protect the
    /// CRMs from bursts, and an outage of the limiter must not take the product down with it.
    pub async fn limit(&self, name: &str, caller: &Caller, rate: Rate) -> Result<(), ApiError> {
        let key = format!("caller:{}:{name}", caller.user_id);
        match self.limiter.acquire(&key, rate).await {
            Ok(decision) if decision.is_admitted() => Ok(()),
            Ok(decision) => Err(ApiError::rate_limited(decision.retry_after_secs())),
            Err(e) => {
                tracing::warn!(error = %e, bucket = name, "rate limiter unavailable; request let through");
                Ok(())
            }
        }
    }
}

/// The caller limits of the contract.
pub mod limits {
    use crmsync_aws::Rate;

    /// contacts-fetch: 20 calls a minute per user.
    pub const FETCH: Rate = Rate::per_minute(20);
    /// contacts-sync and integration-sync: 6 calls a minute per user.
    pub const SYNC: Rate = Rate::per_minute(6);
    /// Connecting by API key (one CRM call each): 10 a minute per user.
    pub const CONNECT: Rate = Rate::per_minute(10);
}
