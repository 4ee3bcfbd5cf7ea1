//! The context every function builds once per cold start.
//!
//! Building it is cheap and does no network I/O: the secret is fetched, and the database pool, vault and
//! JWT verifier are made, on the first event that needs them (then cached). The AWS SDK clients, the
//! AWS credentials chain (see [`Deferred`] and [`LazyCredentialsChain`]) and the CRM HTTP client
//! (`CrmHttp`) are also made on first use: each of them reads and parses the system's root
//! certificates when it is made. So a cold start costs the runtime's own start-up and parsing the
//! environment.

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

/// DynamoDB answers in milliseconds. Without these bounds, a DynamoDB endpoint that accepts
/// connections and never answers held every limited call (and every push's pacing) until the Lambda
/// timed out, instead of failing open as the limits are meant to (`tests/integration/faults.rs`).
const DYNAMO_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// All attempts of one DynamoDB call, retries and backoff included.
const DYNAMO_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// The DynamoDB client: the SDK's configuration, with every call bounded in time.
fn dynamo_client(aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let timeouts = aws
        .timeout_config()
        .map(|t| t.to_builder())
        .unwrap_or_default()
        .operation_attempt_timeout(DYNAMO_ATTEMPT_TIMEOUT)
        .operation_timeout(DYNAMO_OPERATION_TIMEOUT)
        .build();
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(aws)
            .timeout_config(timeouts)
            .build(),
    )
}

/// A value made on first use, then kept: [`App`]'s AWS SDK clients. Making an SDK client checks its
/// HTTPS connector, which reads and parses every root certificate of the system, so none is made
/// before the first event that needs it (and functions that never call DynamoDB never make that one).
pub type Deferred<T> = std::sync::LazyLock<T, Box<dyn FnOnce() -> T + Send>>;

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
    pub limiter: Deferred<RateLimiter>,
    pub http: CrmHttp,
    /// First backoff between push attempts (doubles, with jitter). Tests shrink it.
    pub push_backoff: Duration,
    secrets: Deferred<SecretsProvider>,
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
    /// From the process environment, as a function's `main` does: the shared AWS configuration of
    /// [`crmsync_adapters::config::aws_config`] (region, credentials chain and `AWS_ENDPOINT_URL` from
    /// the environment), with the credentials chain built on the first AWS call instead of now.
    pub async fn from_env() -> Result<Self, StartupError> {
        let settings = Settings::from_env()?;
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(LazyCredentialsChain::default())
            .load()
            .await;
        Self::new(settings, &aws)
    }

    /// From explicit settings and AWS configuration (tests point these at moto and the sandbox).
    pub fn new(settings: Settings, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Self::with_aws(settings, aws, aws)
    }

    /// As [`App::new`], with Secrets Manager reached through `secrets_aws` and DynamoDB (caller limits,
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

/// The SDK's default credentials chain (environment, profile, web identity, ECS, instance metadata),
/// built when credentials are first asked for rather than at start-up.
///
/// Building the chain eagerly (as `ConfigLoader::load` does) creates the web identity provider's STS
/// client, whose configuration check builds an HTTPS connector and so reads and parses every root
/// certificate of the system: milliseconds on every cold start, for a provider that a Lambda never
/// uses (its credentials are in the environment). The first AWS call (the secret, on the first event)
/// builds the chain instead; the SDK's identity cache then keeps its credentials as before.
#[derive(Debug, Default)]
struct LazyCredentialsChain {
    chain: OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
}

impl aws_credential_types::provider::ProvideCredentials for LazyCredentialsChain {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            self.chain
                .get_or_init(|| {
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .configure(
                            aws_config::provider_config::ProviderConfig::default()
                                .with_behavior_version(Some(aws_config::BehaviorVersion::latest())),
                        )
                        .build()
                })
                .await
                .provide_credentials()
                .await
        })
    }

    fn fallback_on_interrupt(&self) -> Option<aws_credential_types::Credentials> {
        self.chain.get()?.fallback_on_interrupt()
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
