//! `contacts-fetch`: GET /api/integrations/{provider}/contacts/fetch: normalized contacts for inspection; writes nothing.
//! The handler is [`crmsync_service::handlers::contacts_fetch`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::contacts_fetch).await
}
