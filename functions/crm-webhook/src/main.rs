//! `crm-webhook`: POST /api/webhooks/crm/{provider}/{token}: a CRM says an account's contacts changed.
//! The route is [`crmsync_lambda::routes::crm_webhook`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::crm_webhook::handle).await
}
