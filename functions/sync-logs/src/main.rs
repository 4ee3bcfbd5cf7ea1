//! `sync-logs`: GET /api/integrations/{id}/logs and GET /api/integrations/logs: sync logs, newest first.
//! The route is [`crmsync_lambda::routes::sync_logs`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::sync_logs::handle).await
}
