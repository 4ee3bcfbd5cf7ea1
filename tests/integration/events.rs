//! The files in `events/`, as `cargo lambda invoke --data-file` sends them: every function has one,
//! each parses as its trigger's event, and each drives its handler to the contract's answer (never a
//! 500). Placeholders (`REPLACE_WITH_…`) are filled in as a developer would.

use std::path::Path;

use http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::env::{Env, WEBHOOK_SECRET};

fn events_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../events"))
}

/// The function crates: every directory of `functions/`.
fn functions() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(events_dir().join("../functions"))
        .expect("functions/ exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The function an event file is for: the longest function name its file name starts with.
fn function_of<'a>(file: &str, functions: &'a [String]) -> Option<&'a str> {
    functions
        .iter()
        .filter(|f| file.starts_with(f.as_str()))
        .max_by_key(|f| f.len())
        .map(String::as_str)
}

#[tokio::test]
async fn every_function_has_an_event_file_that_drives_its_handler() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .expect("events/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    let names = functions();
    assert_eq!(names.len(), 10, "the contract's ten functions: {names:?}");
    let covered: std::collections::BTreeSet<&str> = files
        .iter()
        .filter_map(|f| function_of(f, &names))
        .collect();
    for name in &names {
        assert!(
            covered.contains(name.as_str()),
            "no event file for function {name}"
        );
    }

    for file in &files {
        let function =
            function_of(file, &names).unwrap_or_else(|| panic!("{file} names no function"));
        let text = std::fs::read_to_string(events_dir().join(file))
            .unwrap()
            .replace("REPLACE_WITH_A_DEV_JWT", &Env::token(user))
            .replace("REPLACE_WITH_THE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .replace("REPLACE_WITH_A_LOFTY_API_KEY", "sandbox-lofty-key");
        if function == "scheduled-sync" {
            let payload: Value = serde_json::from_str(&text).expect(file);
            assert_eq!(payload["source"], "aws.scheduler");
            let event =
                lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default());
            let report = crmsync_lambda::routes::scheduled_sync::handle(&env.app, event)
                .await
                .expect("a scheduled run");
            assert_eq!(report.failed, 0, "{file}");
            continue;
        }
        let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        use crmsync_lambda::routes as h;
        let resp = match function {
            "oauth-start" => h::oauth_start::handle(&env.app, req).await,
            "oauth-callback" => h::oauth_callback::handle(&env.app, req).await,
            "auth-status" => h::auth_status::handle(&env.app, req).await,
            "contacts-fetch" => h::contacts_fetch::handle(&env.app, req).await,
            "contacts-sync" => h::contacts_sync::handle(&env.app, req).await,
            "integrations" => h::integrations::handle(&env.app, req).await,
            "integration-sync" => h::integration_sync::handle(&env.app, req).await,
            "sync-logs" => h::sync_logs::handle(&env.app, req).await,
            "lead-webhook" => h::lead_webhook::handle(&env.app, req).await,
            other => panic!("no handler for {other}"),
        };
        let status = resp.status();
        assert!(!status.is_server_error(), "{file}: {status}");
        let expected = match function {
            // A redirect to the CRM's consent page; the callback's placeholders are no valid state.
            "oauth-start" | "oauth-callback" => StatusCode::FOUND,
            "lead-webhook" => StatusCode::ACCEPTED,
            "auth-status" | "sync-logs" => StatusCode::OK,
            // Nothing connected for this user / placeholder ids: the contract's 404.
            "contacts-fetch" | "contacts-sync" | "integration-sync" => StatusCode::NOT_FOUND,
            _ => status,
        };
        assert_eq!(status, expected, "{file}");
    }
}
