//! `lead-webhook`: POST /api/webhooks/lead-created: a lead was created or updated; push it to the user's CRMs.
//! The handler is [`crmsync_service::handlers::lead_webhook`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::lead_webhook).await
}
