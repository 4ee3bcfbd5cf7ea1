//! `contacts-fetch`: GET /api/integrations/{provider}/contacts/fetch: normalized contacts for inspection; writes nothing.
//! The route is [`crmsync_lambda::routes::contacts_fetch`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::contacts_fetch::handle).await
}
