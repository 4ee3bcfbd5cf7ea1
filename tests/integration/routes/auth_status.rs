//! `auth-status` (`GET /api/integrations/{provider}/auth/status`): what it reports before and after a
//! connection, and the refresh of an expired OAuth token. (Many callers at once needing one refresh:
//! `qualities/races.rs`.)

use crmsync_domain::Provider;
use http::StatusCode;
use uuid::Uuid;

use crate::support::env::{Env, Route};

const STATUS_PATH: &str = "/api/integrations/followupboss/auth/status";

#[tokio::test]
async fn auth_status_reports_not_connected_then_connected() {
    let env = Env::start().await;
    let user = Uuid::new_v4();

    let before = env
        .as_user(user, Route::AuthStatus, "GET", STATUS_PATH, "")
        .await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["connected"], false);

    env.connect(user, Provider::FollowUpBoss).await;
    let status = env
        .as_user(user, Route::AuthStatus, "GET", STATUS_PATH, "")
        .await;
    assert_eq!(status.body["connected"], true, "{:?}", status.body);
    assert_eq!(status.body["tokenValid"], true);
    assert_eq!(status.body["status"], "active");
}

#[tokio::test]
async fn auth_status_refreshes_an_expired_token_once() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::FollowUpBoss).await;
    // Make the stored token expired, as an hour passing would.
    env.expire_token(user, Provider::FollowUpBoss).await;
    let refreshes_before = env.refreshes(Provider::FollowUpBoss);

    let reply = env
        .as_user(user, Route::AuthStatus, "GET", STATUS_PATH, "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.body["tokenValid"], true,
        "the caller uses a valid token: {:?}",
        reply.body
    );
    assert_eq!(
        env.refreshes(Provider::FollowUpBoss) - refreshes_before,
        1,
        "the CRM saw exactly one refresh"
    );
    let after = env
        .as_user(user, Route::AuthStatus, "GET", STATUS_PATH, "")
        .await;
    let expires_after =
        chrono::DateTime::parse_from_rfc3339(after.body["expiresAt"].as_str().unwrap()).unwrap();
    assert!(
        expires_after > chrono::Utc::now() + chrono::Duration::minutes(50),
        "a fresh hour-long token"
    );
    assert_eq!(
        env.refreshes(Provider::FollowUpBoss) - refreshes_before,
        1,
        "a fresh token is not refreshed again"
    );
}
