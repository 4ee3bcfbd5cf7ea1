//! `integration-sync`: POST /api/integrations/{id}/sync: pull, then push the integration's pending leads.
//! The handler is [`crmsync_service::handlers::integration_sync`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::integration_sync).await
}
