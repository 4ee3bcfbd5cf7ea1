//! `contacts-sync`: POST /api/integrations/{provider}/contacts/sync: incremental pull into the contacts table.
//! The route is [`crmsync_lambda::routes::contacts_sync`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::contacts_sync::handle).await
}
