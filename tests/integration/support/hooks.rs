//! CRM webhooks in tests: a receiver standing in for API Gateway, and the deliveries it got.

use std::time::{Duration, Instant};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::api::FUB_KEY;

/// A receiver of CRM deliveries: it takes every one, answers 200, and keeps it.
pub async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The deliveries `receiver` got, once at least `n` have arrived (5 s at most).
pub async fn deliveries(receiver: &MockServer, n: usize) -> Vec<wiremock::Request> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A request to the sandbox's Follow Up Boss with the test key and the registered system.
pub fn fub(c: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url)
        .basic_auth(FUB_KEY, Some(""))
        .header("X-System", "crmsync")
        .header("X-System-Key", "sandbox-system-key")
}
