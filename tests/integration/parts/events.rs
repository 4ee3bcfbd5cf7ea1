//! The files in `events/`, as `cargo lambda invoke --data-file` sends them: every function has one,
//! each parses as its trigger's event, and each drives its handler to the contract's answer (never a
//! 500). Placeholders (`REPLACE_WITH_…`) are filled in as a developer would. The event files of
//! `integrations`, `sync-logs` and `deliveries` also drive a whole connect, read, update, logs,
//! deliveries and disconnect.

use std::path::Path;

use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::api::{LOFTY_KEY, assert_error, assert_status, log};
use crate::support::env::{Env, Reply, WEBHOOK_SECRET};

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
    assert_eq!(
        names.len(),
        13,
        "the contract's thirteen functions: {names:?}"
    );
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
            assert_eq!(report.failed(), 0, "{file}");
            continue;
        }
        if function == "sync-worker" {
            // An SQS batch whose message names an integration that does not exist (its claim is no
            // integration's): dropped, not failed.
            let payload: Value = serde_json::from_str(&text).expect(file);
            assert_eq!(payload["Records"][0]["eventSource"], "aws:sqs");
            let event =
                lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default());
            let answer = crmsync_lambda::routes::sync_worker::handle(&env.app, event)
                .await
                .expect("a batch worked on");
            assert!(answer.batch_item_failures.is_empty(), "{file}: {answer:?}");
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
            "deliveries" => h::deliveries::handle(&env.app, req).await,
            "lead-webhook" => h::lead_webhook::handle(&env.app, req).await,
            "crm-webhook" => h::crm_webhook::handle(&env.app, req).await,
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
            // The placeholder token belongs to no integration: the contract's 404.
            "contacts-fetch" | "contacts-sync" | "integration-sync" | "deliveries"
            | "crm-webhook" => StatusCode::NOT_FOUND,
            _ => status,
        };
        assert_eq!(status, expected, "{file}");
    }
}

/// The event files of the `integrations`, `sync-logs` and `deliveries` functions, as `cargo lambda
/// invoke` sends them, work against the handlers through a whole life of an integration (with a real
/// JWT and id put in place of their placeholders).
#[tokio::test]
async fn the_integrations_and_sync_logs_event_files_drive_a_whole_connection() {
    const PLACEHOLDER_ID: &str = "9b2f4c1e-5d6a-4e8b-9c0d-1a2b3c4d5e6f";
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let run = async |file: &str, id: Option<&str>| -> Reply {
        let text = std::fs::read_to_string(events_dir().join(file)).expect(file);
        let mut text = text.replace("REPLACE_WITH_A_DEV_JWT", &Env::token(user));
        text = text.replace("REPLACE_WITH_A_LOFTY_API_KEY", LOFTY_KEY);
        if let Some(id) = id {
            text = text.replace(PLACEHOLDER_ID, id);
        }
        let req = lambda_http::request::from_str(&text).expect(file);
        let resp = if file.starts_with("sync-logs") {
            crmsync_lambda::routes::sync_logs::handle(&env.app, req).await
        } else if file.starts_with("deliveries") {
            crmsync_lambda::routes::deliveries::handle(&env.app, req).await
        } else {
            crmsync_lambda::routes::integrations::handle(&env.app, req).await
        };
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    };

    // As shipped, the id is one nobody has.
    assert_error(
        &run("integrations-get.json", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let created = run("integrations-connect.json", None).await;
    assert_status(&created, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let listed = run("integrations-list.json", None).await;
    assert_status(&listed, StatusCode::OK);
    assert_eq!(listed.body["integrations"][0]["id"], id.as_str());
    let read = run("integrations-get.json", Some(&id)).await;
    assert_status(&read, StatusCode::OK);
    let updated = run("integrations-update.json", Some(&id)).await;
    assert_status(&updated, StatusCode::OK);
    assert_eq!(updated.body["status"], "paused");
    env.store
        .insert_sync_log(user, &log(Uuid::parse_str(&id).ok(), Provider::Lofty, 1))
        .await
        .unwrap();
    let logs = run("sync-logs.json", Some(&id)).await;
    assert_status(&logs, StatusCode::OK);
    assert_eq!(logs.body["logs"].as_array().unwrap().len(), 1);
    let deliveries = run("deliveries.json", Some(&id)).await;
    assert_status(&deliveries, StatusCode::OK);
    assert_eq!(
        deliveries.body,
        serde_json::json!({"deliveries": [], "nextBefore": null})
    );
    let retried = run("deliveries-retry.json", Some(&id)).await;
    assert_status(&retried, StatusCode::OK);
    assert_eq!(
        retried.body,
        serde_json::json!({"retried": 0, "pushed": 0, "failed": 0, "pending": 0})
    );
    let deleted = run("integrations-delete.json", Some(&id)).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
}
