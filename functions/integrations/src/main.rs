//! `integrations`: GET/POST /api/integrations and GET/PUT/DELETE /api/integrations/{id}: list, connect by API key, read, update and disconnect integrations.
//! The handler is [`crmsync_service::handlers::integrations`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::integrations).await
}
