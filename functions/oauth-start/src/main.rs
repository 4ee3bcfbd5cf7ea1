//! `oauth-start`: GET /api/integrations/{provider}/oauth/start (and /api/integrations/followupboss/authorize): redirects to the CRM's consent page.
//! The handler is [`crmsync_service::handlers::oauth_start`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::oauth_start).await
}
