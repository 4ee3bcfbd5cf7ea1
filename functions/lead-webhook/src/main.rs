//! `lead-webhook`: POST /api/webhooks/lead-created: a lead was created or updated; push it to the user's CRMs.
//! The route is [`crmsync_lambda::routes::lead_webhook`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::lead_webhook::handle).await
}
