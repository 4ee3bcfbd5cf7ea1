//! `auth-status`: GET /api/integrations/{provider}/auth/status: connection and token validity, refreshing an expired token.
//! The handler is [`crmsync_service::handlers::auth_status`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crmsync_service::run_http(crmsync_service::handlers::auth_status).await
}
