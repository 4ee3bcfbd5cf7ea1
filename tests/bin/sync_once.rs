//! `crmsync-sync-once`: one contacts sync, as the `contacts-sync` function runs it, in a process of its
//! own, so that the crash tests can kill it with SIGKILL at any moment. Everything comes from the
//! environment a deployed function has (`APP_SECRET_ID`, `RATE_LIMIT_TABLE`, `CRM_SANDBOX_URL`,
//! `AWS_ENDPOINT_URL`, ...), plus `SYNC_USER` (the caller) and `SYNC_PROVIDER`. Prints its metric lines
//! (CloudWatch Embedded Metric Format), then the answer as `{"status": <code>, "body": <json>}`, and
//! exits 0.

use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let user = std::env::var("SYNC_USER").expect("SYNC_USER");
    let provider = std::env::var("SYNC_PROVIDER").expect("SYNC_PROVIDER");
    let jwt_secret = std::env::var("SYNC_JWT_SECRET").expect("SYNC_JWT_SECRET");
    let settings = crmsync_lambda::config::Settings::from_env().expect("settings");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await;
    // Metrics as a function prints them (the EMF test reads them from stdout).
    crmsync_lambda::metrics::init();
    let app = crmsync_lambda::App::new(settings, &aws).expect("app");
    let token = crmsync_lambda::auth::mint_token(
        &jwt_secret,
        uuid::Uuid::parse_str(&user).expect("SYNC_USER is a UUID"),
        3600,
    )
    .expect("token");
    let path = format!("/api/integrations/{provider}/contacts/sync");
    let event = json!({
        "version": "2.0", "routeKey": format!("POST {path}"), "rawPath": path, "rawQueryString": "",
        "headers": {"host": "api.example.com"}, "cookies": [format!("alto_admin={token}")],
        "requestContext": {
            "accountId": "123456789012", "apiId": "soak", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("POST {path}"), "stage": "$default", "time": "21/Nov/2026:09:00:00 +0000",
            "timeEpoch": 1_795_338_000_000u64,
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "soak"}
        },
        "isBase64Encoded": false
    });
    let req = lambda_http::request::from_str(&event.to_string()).expect("event");
    let resp = crmsync_lambda::routes::contacts_sync::handle(&app, req).await;
    let (parts, body) = resp.into_parts();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    crmsync_lambda::metrics::flush();
    println!("{}", json!({"status": parts.status.as_u16(), "body": body}));
}
