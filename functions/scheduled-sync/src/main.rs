//! `scheduled-sync`: on an EventBridge schedule, an incremental pull of every active integration, then
//! the push outbox drained. The route is [`crmsync_lambda::routes::scheduled_sync`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crmsync_lambda::run_event(crmsync_lambda::routes::scheduled_sync::handle).await
}
