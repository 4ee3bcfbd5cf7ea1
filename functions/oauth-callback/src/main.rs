//! `oauth-callback`: GET /api/integrations/{provider}/oauth/callback (and /api/integrations/followupboss/callback): stores the tokens and redirects to the dashboard.
//! The route is [`crmsync_lambda::routes::oauth_callback`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::oauth_callback::handle).await
}
