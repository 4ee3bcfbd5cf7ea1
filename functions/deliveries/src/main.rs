//! `deliveries`: GET /api/integrations/{id}/deliveries (an integration's push deliveries, newest first)
//! and POST /api/integrations/{id}/deliveries/retry (its failed and waiting deliveries pushed now).
//! The route is [`crmsync_lambda::routes::deliveries`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::deliveries::handle).await
}
