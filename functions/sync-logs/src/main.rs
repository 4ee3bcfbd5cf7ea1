//! `sync-logs`: GET /api/integrations/{id}/logs and GET /api/integrations/logs: sync logs, newest first.
//! The handler is [`crmsync_service::handlers::sync_logs`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::sync_logs).await
}
