//! `integration-sync`: POST /api/integrations/{id}/sync: pull, then push the integration's pending leads.
//! The route is [`crmsync_lambda::routes::integration_sync`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::integration_sync::handle).await
}
