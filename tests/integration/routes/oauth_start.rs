//! `oauth-start` (`GET /api/integrations/{provider}/oauth/start`): a 302 to the CRM's authorize URL
//! (with PKCE for REX) and the `crm_oauth_state` cookie that binds the flow. (A foreign redirect in its
//! query, and forged or reused states at the callback: `qualities/security.rs`.)

use http::StatusCode;
use uuid::Uuid;

use crate::support::env::{Env, Route};

#[tokio::test]
async fn oauth_start_redirects_to_the_crm_with_pkce_and_sets_the_state_cookie() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let start = env
        .as_user(
            user,
            Route::OAuthStart,
            "GET",
            "/api/integrations/rex/oauth/start",
            "",
        )
        .await;
    assert_eq!(start.status, StatusCode::FOUND);
    let location = start.location();
    assert!(
        location.contains("code_challenge_method=S256"),
        "{location}"
    );
    assert!(location.contains("state="));
    // crmsync writes leads to REX: it asks for the write scope too (the sandbox, taking the harsher
    // reading of REX's undocumented scopes, refuses writes to a token granted `rex.read` only).
    let scope = crate::support::env::query_param(location.split_once('?').unwrap().1, "scope");
    assert!(
        scope.split_whitespace().any(|s| s == "rex.write"),
        "{scope}"
    );
    let set_cookie = start.headers[http::header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=600"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(start.set_cookie("crm_oauth_state").is_some());
}
