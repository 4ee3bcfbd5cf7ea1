//! The application layer of crmsync: the [`App`] context each function builds once per cold start, and
//! the use cases its handlers call. HTTP handlers live in [`handlers`]; a function's `main.rs` only
//! builds the `App` and hands every event to one of them.

pub mod app;
pub mod credentials;
pub mod handlers;
pub mod integrations;
pub mod oauth_flow;
pub mod pull;
pub mod push;
pub mod schedule;
pub mod web;

pub use app::{App, Ready, StartupError};

/// Runs an HTTP function: logging set up for Lambda, the [`App`] built once, every event to `handler`.
pub async fn run_http<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static App, lambda_http::Request) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = crmsync_adapters::http::Response> + Send,
{
    lambda_http::tracing::init_default_subscriber();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(handler(app, req).await)
    }))
    .await
}

/// Runs the `scheduled-sync` function: logging set up for Lambda, the [`App`] built once, every
/// EventBridge event to [`schedule::handle`].
pub async fn run_schedule() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app: &'static App = Box::leak(Box::new(App::from_env().await?));
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        schedule::handle(app, event)
    }))
    .await
}
