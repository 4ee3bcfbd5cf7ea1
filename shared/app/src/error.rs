//! The one error type of the use cases. It says what went wrong in the user's terms (a sentence, never a
//! secret or a CRM body) and keeps the cause of an internal failure for the log; the edge decides how
//! each kind is answered.

use std::fmt;

use crmsync_crm::CrmError;
use crmsync_domain::Provider;

/// Why a use case did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input cannot be used (a bad value, an operation the CRM does not support).
    #[error("{0}")]
    BadRequest(String),
    /// The caller could not prove who it is (a CRM delivery whose signature does not match).
    #[error("{0}")]
    Unauthorized(String),
    /// The integration (or whatever the sentence names) does not exist for this user.
    #[error("{0}")]
    NotFound(String),
    /// A sync of the integration is already running.
    #[error("{0}")]
    Busy(String),
    /// The CRM refused the credentials: the user has to connect again.
    #[error("{0}")]
    InvalidCredentials(String),
    /// The CRM failed, after retries.
    #[error("{0}")]
    Upstream(String),
    /// The CRM is limiting our requests: try again after `retry_after`.
    #[error("{detail}")]
    CrmRateLimited {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// Something failed on our side. The sentence is for operators' logs, with its cause.
    #[error("{0}")]
    Internal(Internal),
}

/// The cause of an internal failure: logged by the edge, never shown to a caller.
pub struct Internal(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Internal {
    /// The cause and its sources, `: `-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl AppError {
    /// An internal failure with its cause.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AppError::Internal(Internal(cause.into()))
    }

    /// The sentence for the user (for `Internal`, the cause, which the edge logs instead of showing).
    pub fn detail(&self) -> String {
        self.to_string()
    }

    /// The error for a CRM failure: our sentence, never the CRM's body. The CRM's short code and
    /// transport details go to the log.
    pub fn from_crm(provider: Provider, err: CrmError) -> Self {
        let crm = provider.label();
        match err {
            CrmError::InvalidCredentials => AppError::InvalidCredentials(format!(
                "{crm} refused the credentials; reconnect the integration."
            )),
            CrmError::RateLimited { retry_after } => AppError::CrmRateLimited {
                detail: format!(
                    "{crm} is limiting our requests; try again in {} s.",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            },
            CrmError::Upstream { status, message } => {
                tracing::warn!(provider = provider.as_str(), status, error = %message, "CRM call failed");
                AppError::Upstream(format!(
                    "{crm} answered with an error (HTTP {status}) after retries."
                ))
            }
            CrmError::Transport(why) => {
                tracing::warn!(provider = provider.as_str(), error = %why, "CRM unreachable");
                AppError::Upstream(format!("{crm} could not be reached."))
            }
            CrmError::Unanswered(why) => {
                tracing::warn!(provider = provider.as_str(), error = %why, "CRM answer lost");
                AppError::Upstream(format!(
                    "{crm} did not answer a write; crmsync checks whether it was done before trying again."
                ))
            }
            CrmError::Decode(why) => {
                tracing::warn!(provider = provider.as_str(), error = %why, "CRM answer not understood");
                AppError::Upstream(format!("{crm} sent an answer we could not read."))
            }
            CrmError::NotFound => AppError::Upstream(format!("{crm} did not find the record.")),
            CrmError::OutOfTime => AppError::Upstream(format!(
                "The time for calling {crm} ran out; the rest is done by the next run."
            )),
            CrmError::ListingTooDeep => {
                AppError::Upstream(format!("{crm} would not list the records any further."))
            }
        }
    }
}

impl From<crmsync_store::StoreError> for AppError {
    fn from(e: crmsync_store::StoreError) -> Self {
        AppError::internal(e)
    }
}

impl From<crmsync_store::VaultError> for AppError {
    fn from(e: crmsync_store::VaultError) -> Self {
        AppError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_internal_error_keeps_its_cause_chain() {
        let e = AppError::internal(Outer(std::io::Error::other("inner")));
        assert_eq!(e.detail(), "outer: inner");
    }

    #[test]
    fn crm_failures_become_our_sentences() {
        let e = AppError::from_crm(Provider::Lofty, CrmError::InvalidCredentials);
        assert!(matches!(e, AppError::InvalidCredentials(_)));
        assert_eq!(
            e.detail(),
            "Lofty refused the credentials; reconnect the integration."
        );
        let e = AppError::from_crm(
            Provider::FollowUpBoss,
            CrmError::Upstream {
                status: 503,
                message: "secret body".into(),
            },
        );
        assert!(!e.detail().contains("secret"), "{}", e.detail());
    }
}
