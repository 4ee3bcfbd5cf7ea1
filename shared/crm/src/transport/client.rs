//! The shared HTTP client: one `reqwest::Client` per cold start, the retry policy, and the loop
//! that paces, sends, retries and reads every CRM call.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crmsync_domain::Provider;
use http::{HeaderMap, StatusCode};
use rand::RngExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::deadline;
use super::pacer::{self, Pacer};
use crate::error::CrmError;

/// When and how often failed calls are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before attempt `n + 1` is a random duration in `0..=min(cap, base * 2^(n-1))`
    /// ("full jitter").
    pub base: Duration,
    pub cap: Duration,
    /// The longest wait we accept before a call (pacing, `Retry-After`). A CRM that asks for
    /// more gets [`CrmError::RateLimited`] at once instead of a sleeping function.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff after failed attempt `attempt` (1-based).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random backoff after failed attempt `attempt`, in `0..=backoff_ceiling(attempt)`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// How waits are performed. The default sleeps on the tokio timer; tests install one that
/// records the waits the client decided on.
pub trait Sleeper: Send + Sync + 'static {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole request, body included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// The `reqwest` client of a [`CrmHttp`], made on first use (a failure is kept: it is a property of
/// the system's TLS roots, not of one call).
struct LazyClient {
    timeouts: Timeouts,
    cell: std::sync::OnceLock<Result<reqwest::Client, ()>>,
}

/// The pacer of each provider account, keyed by provider and a SHA-256 of the credential.
type Pacers = HashMap<(Provider, [u8; 32]), Arc<Pacer>>;

/// Pacers kept before idle ones are dropped.
const MAX_PACERS: usize = 256;

/// The one HTTP client of the process (rustls, no redirects, pooled connections), built once per
/// cold start and cloned into every CRM client. Also holds the retry policy and the pacers of
/// every provider account seen, so that clients built per call still share pacing.
#[derive(Clone)]
pub struct CrmHttp {
    client: Arc<LazyClient>,
    pub(crate) retry: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
    pacers: Arc<Mutex<Pacers>>,
}

impl fmt::Debug for CrmHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmHttp")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl CrmHttp {
    /// The client with the default timeouts (connect 5 s, request 30 s) and retry policy.
    pub fn new() -> Result<Self, CrmError> {
        Self::with_timeouts(Timeouts::default())
    }

    /// The client with these timeouts. The `reqwest` client itself (which reads and parses the
    /// system's root certificates, milliseconds of every cold start) is made on the first CRM call,
    /// or by [`CrmHttp::build_client`]; a failure to make it is that call's transport error.
    pub fn with_timeouts(timeouts: Timeouts) -> Result<Self, CrmError> {
        Ok(CrmHttp {
            client: Arc::new(LazyClient {
                timeouts,
                cell: std::sync::OnceLock::new(),
            }),
            retry: RetryPolicy::default(),
            sleeper: Arc::new(TokioSleeper),
            pacers: Arc::default(),
        })
    }

    /// Makes the `reqwest` client now instead of on the first CRM call.
    pub fn build_client(&self) -> Result<(), CrmError> {
        self.client().map(drop)
    }

    /// The `reqwest` client, made on first use.
    pub(crate) fn client(&self) -> Result<&reqwest::Client, CrmError> {
        let lazy = &*self.client;
        lazy.cell
            .get_or_init(|| {
                let t = lazy.timeouts;
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(t.connect)
                    .timeout(t.request)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(8)
                    .tcp_keepalive(Duration::from_secs(30))
                    .user_agent(concat!("crmsync/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|_| ())
            })
            .as_ref()
            .map_err(|()| CrmError::Transport("the HTTP client could not be built".into()))
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The pacer of one provider account; `account` is hashed, never kept.
    pub(crate) fn pacer(&self, provider: Provider, account: &str) -> Arc<Pacer> {
        let key = (provider, Sha256::digest(account.as_bytes()).into());
        let mut map = self.pacers.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_PACERS && !map.contains_key(&key) {
            map.retain(|_, p| Arc::strong_count(p) > 1);
        }
        map.entry(key).or_default().clone()
    }

    pub(crate) async fn sleep(&self, d: Duration) {
        self.sleeper.sleep(d).await;
    }
}

/// What the retry loop needs to know about a call.
pub(crate) struct Call<'a> {
    pub provider: Provider,
    /// A short fixed name of the endpoint (`people.list`): pacing key and log field.
    pub route: &'static str,
    /// GETs and searches: retried on 5xx, timeouts, dropped connections and unreadable JSON.
    /// Writes are retried only on 429 and on connection failures where nothing was sent.
    pub idempotent: bool,
    pub pacer: Option<&'a Pacer>,
    /// A list page: a successful answer's body is only checked to be JSON here (without building it),
    /// and left in [`Reply::body`] for the caller to read once, into records borrowing from it
    /// ([`crmsync_domain::json::Loose`]). `Reply::json` is then `None`.
    pub page: bool,
}

/// A response that came back (any status), with its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl CrmHttp {
    /// Paces, sends, and retries per the policy. `build` makes the request afresh for each
    /// attempt. Returns the last response whatever its status, except that a 429 that cannot
    /// be waited out becomes [`CrmError::RateLimited`], a transport failure becomes
    /// [`CrmError::Transport`] and an unreadable 2xx JSON body on an idempotent call becomes
    /// [`CrmError::Decode`] once the attempts are spent.
    pub(crate) async fn execute(
        &self,
        call: &Call<'_>,
        build: &(dyn Fn() -> Result<reqwest::Request, CrmError> + Send + Sync),
    ) -> Result<Reply, CrmError> {
        let policy = self.retry;
        let provider = call.provider.as_str();
        let route = call.route;
        let mut pending = Duration::ZERO;
        let mut attempt = 0;
        // Why the last attempt is being retried (not for a 429: that wait is the CRM's).
        let mut retrying: Option<CrmError> = None;
        loop {
            attempt += 1;
            let pace = call
                .pacer
                .map_or(Duration::ZERO, |p| p.delay(route, Instant::now()));
            let wait = pace.max(pending);
            let past_deadline = deadline::left()
                .is_some_and(|left| !wait.is_zero() && wait + deadline::MIN_REQUEST_TIME > left);
            if past_deadline && let Some(e) = retrying.take() {
                // No time for another attempt: the failure that wanted one.
                return Err(e);
            }
            if wait > policy.max_wait || past_deadline {
                tracing::warn!(
                    provider,
                    route,
                    wait_ms = wait.as_millis() as u64,
                    "CRM rate limit wait too long; giving up"
                );
                return Err(CrmError::RateLimited { retry_after: wait });
            }
            if !wait.is_zero() {
                tracing::debug!(
                    provider,
                    route,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "waiting before CRM call"
                );
                self.sleep(wait).await;
            }
            let last = attempt >= policy.max_attempts;

            let mut request = build()?;
            // Every request ends well inside the caller's deadline (`crate::with_deadline`).
            if let Some(left) = deadline::left() {
                if left < deadline::MIN_REQUEST_TIME {
                    tracing::debug!(provider, route, attempt, "no time left for a CRM call");
                    return Err(CrmError::OutOfTime);
                }
                let cap = request.timeout().map_or(left, |t| (*t).min(left));
                *request.timeout_mut() = Some(cap.min(self.client.timeouts.request));
            }
            let response = match self.client()?.execute(request).await {
                Ok(r) => r,
                Err(e) => {
                    let retry = if call.idempotent {
                        true
                    } else {
                        e.is_connect()
                    };
                    let what = transport_kind(&e);
                    tracing::warn!(provider, route, attempt, error = what, "CRM call failed");
                    if retry && !last {
                        pending = policy.backoff(attempt);
                        retrying = Some(CrmError::Transport(format!(
                            "{}: {what}",
                            call.provider.label()
                        )));
                        continue;
                    }
                    let why = format!("{}: {what}", call.provider.label());
                    // A write that went out may have been processed.
                    return Err(if call.idempotent || e.is_connect() {
                        CrmError::Transport(why)
                    } else {
                        CrmError::Unanswered(why)
                    });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            if let Some(p) = call.pacer {
                p.observe(route, &headers, Instant::now(), SystemTime::now());
            }
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    let what = transport_kind(&e);
                    tracing::warn!(
                        provider,
                        route,
                        attempt,
                        status = status.as_u16(),
                        error = what,
                        "CRM response body lost"
                    );
                    if call.idempotent && !last {
                        pending = policy.backoff(attempt);
                        retrying = Some(CrmError::Transport(format!(
                            "{}: {what}",
                            call.provider.label()
                        )));
                        continue;
                    }
                    let why = format!("{}: {what}", call.provider.label());
                    return Err(if call.idempotent {
                        CrmError::Transport(why)
                    } else {
                        CrmError::Unanswered(why)
                    });
                }
            };
            let blank = body.iter().all(u8::is_ascii_whitespace);
            let (json, readable) = if blank {
                (None, false)
            } else if call.page && status.is_success() {
                let readable = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
                (None, readable)
            } else {
                let json = serde_json::from_slice::<Value>(&body).ok();
                let readable = json.is_some();
                (json, readable)
            };

            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| pacer::retry_after(&headers))
                .flatten();
            if status == StatusCode::TOO_MANY_REQUESTS {
                if let (Some(p), Some(ra)) = (call.pacer, retry_after) {
                    p.block_all(Instant::now() + ra);
                }
                // The CRM's hint: Retry-After, else what its rate-limit headers imply.
                let hint = retry_after.or_else(|| {
                    call.pacer
                        .map(|p| p.delay(route, Instant::now()))
                        .filter(|d| !d.is_zero())
                });
                tracing::warn!(
                    provider,
                    route,
                    attempt,
                    retry_after_ms = hint.map(|d| d.as_millis() as u64),
                    "CRM answered 429"
                );
                if last || hint.is_some_and(|h| h > policy.max_wait) {
                    return Err(CrmError::RateLimited {
                        retry_after: hint.unwrap_or(Duration::from_secs(1)),
                    });
                }
                pending = hint.unwrap_or_else(|| policy.backoff(attempt));
                retrying = None;
                continue;
            }
            if status.is_server_error() && call.idempotent {
                tracing::warn!(
                    provider,
                    route,
                    attempt,
                    status = status.as_u16(),
                    "CRM answered a server error"
                );
                if !last {
                    pending = match retry_after {
                        Some(ra) if ra <= policy.max_wait => ra,
                        _ => policy.backoff(attempt),
                    };
                    retrying = Some(CrmError::Upstream {
                        status: status.as_u16(),
                        message: format!("{} answered a server error", call.provider.label()),
                    });
                    continue;
                }
            }
            if status.is_success() && !readable && !blank && call.idempotent {
                tracing::warn!(
                    provider,
                    route,
                    attempt,
                    status = status.as_u16(),
                    "CRM answered unreadable JSON"
                );
                if !last {
                    pending = policy.backoff(attempt);
                    retrying = Some(CrmError::Decode(format!(
                        "{} answered with a body that is not valid JSON",
                        call.provider.label()
                    )));
                    continue;
                }
                return Err(CrmError::Decode(format!(
                    "{} answered with a body that is not valid JSON",
                    call.provider.label()
                )));
            }
            tracing::debug!(
                provider,
                route,
                attempt,
                status = status.as_u16(),
                "CRM call done"
            );
            return Ok(Reply {
                status,
                headers,
                body,
                json,
            });
        }
    }
}

/// A description of a transport failure without the URL (it may carry a phone number or token).
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "the request timed out"
    } else if e.is_connect() {
        "the connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response was cut off"
    } else if e.is_builder() {
        "the request could not be built"
    } else {
        "the connection was dropped"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_exponential_with_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(10), Duration::from_secs(5));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(5));
        for attempt in 1..6 {
            assert!(p.backoff(attempt) <= p.backoff_ceiling(attempt));
        }
        // Full jitter spreads: not every draw is the ceiling.
        let draws: Vec<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(draws.iter().any(|d| *d < p.backoff_ceiling(3)));
    }

    #[test]
    fn pacers_are_per_provider_and_account() {
        let http = CrmHttp::new().unwrap();
        let a = http.pacer(Provider::Lofty, "key-a");
        assert!(Arc::ptr_eq(&a, &http.pacer(Provider::Lofty, "key-a")));
        assert!(!Arc::ptr_eq(&a, &http.pacer(Provider::Lofty, "key-b")));
        assert!(!Arc::ptr_eq(
            &a,
            &http.pacer(Provider::FollowUpBoss, "key-a")
        ));
        // Clones of the client share the registry.
        assert!(Arc::ptr_eq(
            &a,
            &http.clone().pacer(Provider::Lofty, "key-a")
        ));
    }
}
