//! `scheduled-sync`: on an EventBridge schedule, an incremental pull of every active integration, then
//! the push outbox drained. The handler is [`crmsync_service::schedule::handle`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crmsync_service::run_schedule().await
}
