//! `contacts-sync`: POST /api/integrations/{provider}/contacts/sync: incremental pull into the contacts table.
//! The handler is [`crmsync_service::handlers::contacts_sync`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::contacts_sync).await
}
