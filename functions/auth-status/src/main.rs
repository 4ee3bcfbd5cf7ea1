//! `auth-status`: GET /api/integrations/{provider}/auth/status: connection and token validity, refreshing an expired token.
//! The route is [`crmsync_lambda::routes::auth_status`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_lambda::run_http(crmsync_lambda::routes::auth_status::handle).await
}
