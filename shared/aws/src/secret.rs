//! The application secret: one Secrets Manager secret, fetched once per cold start and cached. What it
//! holds is the caller's type ([`FromSecret`]); its values never reach an error or a log line.

use std::sync::Arc;

use tokio::sync::OnceCell;

/// Why the secret is not available.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret {secret_id} from Secrets Manager: {why}")]
    SecretUnavailable { secret_id: String, why: String },
    #[error("secret {secret_id} is not the expected JSON object: {why}")]
    SecretMalformed { secret_id: String, why: String },
}

/// A value read from the secret's text. `why` must never quote a value of the secret.
pub trait FromSecret: Sized + Send + Sync + 'static {
    fn from_secret(json: &str) -> Result<Self, String>;
}

/// Fetches the secret once and caches it for the life of the process (one cold start). A failed fetch
/// is not cached: the next call tries again.
#[derive(Debug)]
pub struct SecretsProvider<T> {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: OnceCell<Arc<T>>,
}

impl<T: FromSecret> SecretsProvider<T> {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        SecretsProvider {
            client,
            secret_id: secret_id.into(),
            cached: OnceCell::new(),
        }
    }

    /// The secret, fetched on first use.
    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        self.cached
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_secret_value()
                    .secret_id(&self.secret_id)
                    .send()
                    .await
                    .map_err(|e| SecretError::SecretUnavailable {
                        secret_id: self.secret_id.clone(),
                        why: aws_error_text(&e),
                    })?;
                let json = out
                    .secret_string()
                    .ok_or_else(|| SecretError::SecretMalformed {
                        secret_id: self.secret_id.clone(),
                        why: "it has no SecretString".into(),
                    })?;
                T::from_secret(json)
                    .map(Arc::new)
                    .map_err(|why| SecretError::SecretMalformed {
                        secret_id: self.secret_id.clone(),
                        why,
                    })
            })
            .await
            .cloned()
    }
}

/// A short description of an AWS SDK error: the service's error code and message, never a payload.
pub fn aws_error_text<E, R>(err: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match err {
        SdkError::ServiceError(e) => {
            let meta = e.err();
            format!(
                "{}: {}",
                meta.code().unwrap_or("service error"),
                meta.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "could not reach the service".into(),
        _ => "the request failed".into(),
    }
}
