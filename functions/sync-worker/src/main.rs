//! `sync-worker`: consumes the sync queue (SQS, through Lambda's event source mapping): each message
//! is one integration to pull, then push its due deliveries. The route is
//! [`crmsync_lambda::routes::sync_worker`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crmsync_lambda::run_event(crmsync_lambda::routes::sync_worker::handle).await
}
