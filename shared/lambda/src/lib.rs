//! The inbound edge of crmsync, what runs in each Lambda function: configuration from the environment
//! ([`config`]), the wiring built once per cold start ([`wiring`]), caller and webhook authentication
//! ([`auth`], [`webhook`]), request parsing ([`request`]), the one mapping from the use cases' errors to
//! the contract's `{error, detail}` and status codes ([`error`]), and one module per function under
//! [`routes`], each calling one use case of `crmsync-app`.

pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod request;
pub mod routes;
pub mod webhook;
pub mod wiring;

pub use error::{ApiError, ErrorCode};

/// Every function (and whatever else links the edge) allocates with mimalloc. The profile of a pull
/// sync (`make bench`, docs/BENCHMARKS.md) had glibc's `malloc` and `free` as its top functions, about
/// a quarter of the samples, most of them building and dropping the JSON of each page; parsing and
/// dropping a 100-record page took about half the time with mimalloc in a side-by-side measurement.
///
/// Built with `no_thp` (the root `Cargo.toml`): where the kernel backs memory with transparent huge
/// pages (`always`, as on the bench machine), mimalloc's arenas grew the sync's peak RSS from about 32
/// to 55–62 MiB; with THP off for the process (`MIMALLOC_ALLOW_THP=0`, which `no_thp` makes the
/// default) the same binary peaked at 32.2–32.6 MiB for 10,000 and 100,000 contacts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use wiring::{App, Ready, StartupError};

/// Runs an HTTP function: logging set up for Lambda, the [`App`] built once, every event to `route`.
pub async fn run_http<F, Fut>(route: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static App, lambda_http::Request) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = http::Response> + Send,
{
    lambda_http::tracing::init_default_subscriber();
    metrics::init();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    serve_restarting(move || {
        lambda_http::run(lambda_http::service_fn(move |req| async move {
            let response = route(app, req).await;
            metrics::flush();
            Ok::<_, std::convert::Infallible>(response)
        }))
    })
    .await
}

/// Runs a function on events other than HTTP (the EventBridge schedule): logging set up for Lambda, the
/// [`App`] built once (with the scheduled run's database connections), every event to `route`.
pub async fn run_event<F, Fut, R>(route: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(&'static App, lambda_runtime::LambdaEvent<serde_json::Value>) -> Fut
        + Copy
        + Send
        + 'static,
    Fut: std::future::Future<Output = Result<R, lambda_runtime::Error>> + Send,
    R: serde::Serialize,
{
    lambda_runtime::tracing::init_default_subscriber();
    metrics::init();
    let mut app = App::from_env().await?;
    app.db_pool_size = wiring::SCHEDULED_DB_POOL_SIZE;
    let app: &'static App = Box::leak(Box::new(app));
    serve_restarting(move || {
        lambda_runtime::run(lambda_runtime::service_fn(move |event| async move {
            let result = route(app, event).await;
            metrics::flush();
            result
        }))
    })
    .await
}

/// Runs the runtime client made by `serve`, and makes a new one when it panics. lambda_runtime panics
/// (and stops polling for events, so every later request hangs) when the Runtime API answers a poll
/// without an event: `cargo lambda watch` does so after `--timeout` seconds of idle time. A panic in a
/// handler is not one of these: lambda_runtime turns it into an error answer itself.
async fn serve_restarting<S, Fut>(serve: S) -> Result<(), lambda_runtime::Error>
where
    S: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), lambda_runtime::Error>>,
{
    use futures::FutureExt as _;
    loop {
        match std::panic::AssertUnwindSafe(serve()).catch_unwind().await {
            Ok(result) => return result,
            Err(_) => {
                tracing::warn!(
                    "the Lambda runtime client stopped on an answer without an event; polling again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
