//! `integrations`: GET/POST /api/integrations and GET/PUT/DELETE /api/integrations/{id}: list, connect by API key, read, update and disconnect integrations.
//! The route is [`crmsync_lambda::routes::integrations`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::integrations::handle).await
}
