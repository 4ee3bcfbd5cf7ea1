//! The AWS SDK set up for Lambda: the credentials chain built on the first AWS call instead of at
//! start-up, and DynamoDB calls bounded in time.

use std::time::Duration;

use tokio::sync::OnceCell;

/// The shared AWS SDK configuration, as a function's `main` uses it: region, credentials and
/// `AWS_ENDPOINT_URL` (local emulators) from the environment, with the credentials chain built on the
/// first AWS call instead of now (see [`LazyCredentialsChain`]).
pub async fn lambda_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(LazyCredentialsChain::default())
        .load()
        .await
}

/// The SDK's default configuration, its credentials chain built at once (tools and tests).
pub async fn default_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// DynamoDB answers in milliseconds. Without these bounds, a DynamoDB endpoint that accepts
/// connections and never answers held every limited call (and every push's pacing) until the Lambda
/// timed out, instead of failing open as the limits are meant to (the fault tests).
const DYNAMO_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// All attempts of one DynamoDB call, retries and backoff included.
const DYNAMO_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// The DynamoDB client: the SDK's configuration, with every call bounded in time.
pub fn dynamo_client(aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
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

/// A value made on first use, then kept: the AWS SDK clients of a function. Making an SDK client checks its
/// HTTPS connector, which reads and parses every root certificate of the system, so none is made
/// before the first event that needs it (and functions that never call DynamoDB never make that one).
pub type Deferred<T> = std::sync::LazyLock<T, Box<dyn FnOnce() -> T + Send>>;

/// The SDK's default credentials chain (environment, profile, web identity, ECS, instance metadata),
/// built when credentials are first asked for rather than at start-up.
///
/// Building the chain eagerly (as `ConfigLoader::load` does) creates the web identity provider's STS
/// client, whose configuration check builds an HTTPS connector and so reads and parses every root
/// certificate of the system: milliseconds on every cold start, for a provider that a Lambda never
/// uses (its credentials are in the environment). The first AWS call (the secret, on the first event)
/// builds the chain instead; the SDK's identity cache then keeps its credentials as before.
#[derive(Debug, Default)]
pub struct LazyCredentialsChain {
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
