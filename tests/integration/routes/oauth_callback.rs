//! `oauth-callback` (`GET /api/integrations/{provider}/oauth/callback`): the matching callback stores
//! the connection, clears the state cookie and goes back to the dashboard; a denial at the CRM or a
//! callback without a code goes back with its error and stores nothing. (States that do not match,
//! expired, forged or replayed: `qualities/security.rs`; DynamoDB down: `qualities/faults.rs`.)

use crmsync_domain::Provider;
use uuid::Uuid;

use crate::support::env::{
    Env, POST_CONNECT_URL, Route, callback_error, oauth_round, query_without,
};

#[tokio::test]
async fn the_matching_callback_connects_clears_the_cookie_and_goes_back_to_the_dashboard() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let (cookie, path, query) = oauth_round(&env, user, "rex").await;
    let cookies = [
        format!("alto_admin={}", Env::token(user)),
        format!("crm_oauth_state={cookie}"),
    ];
    let r = env
        .call(Route::OAuthCallback, "GET", &path, &query, &cookies, &[])
        .await;
    assert_eq!(r.location(), format!("{POST_CONNECT_URL}?connected=rex"));
    assert!(
        r.headers[http::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let integrations = env.store.list_integrations(user).await.unwrap();
    assert_eq!(integrations.len(), 1);
    assert_eq!(integrations[0].provider, Provider::Rex);
}

#[tokio::test]
async fn a_denial_at_the_crm_goes_back_with_its_error_and_stores_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let (cookie, path, _) = oauth_round(&env, user, "rex").await;
    let cookies = [
        format!("alto_admin={}", Env::token(user)),
        format!("crm_oauth_state={cookie}"),
    ];
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            &path,
            "error=access_denied",
            &cookies,
            &[],
        )
        .await;
    assert_eq!(callback_error(&r), "access_denied");
    assert!(
        env.store.list_integrations(user).await.unwrap().is_empty(),
        "nothing stored"
    );
}

/// No code, with a state that matches (the state is then spent: the user starts again).
#[tokio::test]
async fn a_callback_without_a_code_is_invalid_request_and_stores_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let (cookie, path, query) = oauth_round(&env, user, "followupboss").await;
    let reply = env
        .call(
            Route::OAuthCallback,
            "GET",
            &path,
            &query_without(&query, "code"),
            &[
                format!("alto_admin={}", Env::token(user)),
                format!("crm_oauth_state={cookie}"),
            ],
            &[],
        )
        .await;
    assert_eq!(callback_error(&reply), "invalid_request", "no code");
    assert!(env.store.list_integrations(user).await.unwrap().is_empty());
}
