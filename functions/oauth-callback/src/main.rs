//! `oauth-callback`: GET /api/integrations/{provider}/oauth/callback (and /api/integrations/followupboss/callback): stores the tokens and redirects to the dashboard.
//! The handler is [`crmsync_service::handlers::oauth_callback`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::oauth_callback).await
}
