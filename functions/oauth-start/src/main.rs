//! `oauth-start`: GET /api/integrations/{provider}/oauth/start (and /api/integrations/followupboss/authorize): redirects to the CRM's consent page.
//! The route is [`crmsync_lambda::routes::oauth_start`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::oauth_start::handle).await
}
