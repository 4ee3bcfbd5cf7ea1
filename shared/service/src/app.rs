//! The context every function builds once per cold start.
//!
//! Building it is cheap and does no network I/O: the secret is fetched, and the database pool, vault and
//! JWT verifier are made, on the first event that needs them (then cached). So a cold start costs the
//! runtime's own start-up plus parsing the environment.

use std::sync::Arc;
use std::time::Duration;

use crmsync_adapters::ApiError;
use crmsync_adapters::auth::{Caller, JwtVerifier};
use crmsync_adapters::config::{AppSecrets, ConfigError, SecretsProvider, Settings};
use crmsync_adapters::limiter::{Rate, RateLimiter};
use crmsync_adapters::store::Store;
use crmsync_adapters::vault::Vault;
use crmsync_crm::{CrmEndpoints, CrmHttp};
use tokio::sync::OnceCell;

/// Connections per process: one request at a time per Lambda, plus the scheduled sync's parallelism.
const DB_POOL_SIZE: usize = 8;

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
    pub store: Store,
    pub vault: Vault,
    pub jwt: JwtVerifier,
    pub endpoints: CrmEndpoints,
}

pub struct App {
    pub settings: Settings,
    pub limiter: RateLimiter,
    pub http: CrmHttp,
    /// First backoff between push attempts (doubles, with jitter). Tests shrink it.
    pub push_backoff: Duration,
    secrets: SecretsProvider,
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
    /// From the process environment, as a function's `main` does.
    pub async fn from_env() -> Result<Self, StartupError> {
        let settings = Settings::from_env()?;
        let aws = crmsync_adapters::config::aws_config().await;
        Self::new(settings, &aws)
    }

    /// From explicit settings and AWS configuration (tests point these at moto and the sandbox).
    pub fn new(settings: Settings, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let secrets = SecretsProvider::new(
            aws_sdk_secretsmanager::Client::new(aws),
            &settings.app_secret_id,
        );
        let limiter = RateLimiter::new(
            aws_sdk_dynamodb::Client::new(aws),
            &settings.rate_limit_table,
        );
        let http = CrmHttp::new().map_err(|e| StartupError::Http(e.to_string()))?;
        Ok(App {
            settings,
            limiter,
            http,
            push_backoff: Duration::from_millis(250),
            secrets,
            ready: OnceCell::new(),
        })
    }

    /// The secret-dependent parts, made on first use. A failure is logged and is a 500 to the caller;
    /// the next event tries again.
    pub async fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready
            .get_or_try_init(|| async {
                let secrets = self.secrets.get().await.map_err(ApiError::internal)?;
                let store = Store::connect(&secrets.database_url, DB_POOL_SIZE)
                    .map_err(ApiError::internal)?;
                let vault = Vault::new(
                    &secrets.encryption_key,
                    secrets.encryption_key_previous.as_deref(),
                )
                .map_err(ApiError::internal)?;
                let jwt = JwtVerifier::new(&secrets.jwt_secret);
                let endpoints = CrmEndpoints::from_config(&self.settings, &secrets);
                Ok(Ready {
                    secrets,
                    store,
                    vault,
                    jwt,
                    endpoints,
                })
            })
            .await
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
    use super::*;

    /// contacts-fetch: 20 calls a minute per user.
    pub const FETCH: Rate = Rate::per_minute(20);
    /// contacts-sync: 6 calls a minute per user.
    pub const SYNC: Rate = Rate::per_minute(6);
    /// Connecting by API key (one CRM call each): 10 a minute per user.
    pub const CONNECT: Rate = Rate::per_minute(10);
    /// Lifetime of an OAuth state (the cookie's Max-Age).
    pub const OAUTH_STATE_TTL: Duration = Duration::from_secs(600);
}
