//! The inbound edge of crmsync, what runs in each Lambda function: configuration from the environment
//! ([`config`]), the wiring built once per cold start ([`wiring`]), caller and webhook authentication
//! ([`auth`], [`webhook`]), request parsing ([`request`]), the one mapping from the use cases' errors to
//! the contract's `{error, detail}` and status codes ([`error`]), and one module per function under
//! [`routes`], each calling one use case of `crmsync-app`.

pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod request;
pub mod routes;
pub mod webhook;
pub mod wiring;

pub use error::{ApiError, ErrorCode};
pub use wiring::{App, Ready, StartupError};

/// Runs an HTTP function: logging set up for Lambda, the [`App`] built once, every event to `route`.
pub async fn run_http<F, Fut>(route: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static App, lambda_http::Request) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = http::Response> + Send,
{
    lambda_http::tracing::init_default_subscriber();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(route(app, req).await)
    }))
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
    let mut app = App::from_env().await?;
    app.db_pool_size = wiring::SCHEDULED_DB_POOL_SIZE;
    let app: &'static App = Box::leak(Box::new(app));
    lambda_runtime::run(lambda_runtime::service_fn(move |event| route(app, event))).await
}
