//! `crmsync-admin`, run as an operator runs it: a process of its own (`crmsync-admin-under-test`, the
//! same entry point as `infra/admin`'s binary) against the test's database, with the secret from moto
//! (`--secret-id`, `AWS_ENDPOINT_URL`) or plain settings (`--database-url`, `ENCRYPTION_KEY`). Data is
//! made through the functions and the store, as users make it.
//!
//! - `keys status` counts the credentials per key; `keys reseal` (dry run, batches, twice) moves every
//!   one to the current key, and the integrations still pull and push with the current key alone; a
//!   reseal waits for a token refresh holding the row and keeps what it wrote;
//! - `deliveries list` filters across users; `deliveries retry` makes a given-up delivery due with
//!   fresh attempts, leaves a delivered one alone, and an unknown id changes nothing;
//! - `integrations list --status` filters across users;
//! - `cursor reset` clears the cursor (the next sync reads everything), not while a sync runs;
//! - a bad database URL, an unknown secret or an unknown id is one clear line and exit code 1, with
//!   nothing changed and no secret printed.

use std::time::{Duration, Instant};

use crmsync_domain::{DeliveryStatus, Provider};
use crmsync_store::Vault;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::item;
use crate::support::env::{Env, Reply, Route, sandbox_provider};
use crate::support::leads::{people_with, post_lead, scored_lead};
use crate::support::rows::sync_path;

/// What one run of the command gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "exit code; stderr: {}", self.stderr);
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("JSON ({e}): {}", self.stdout))
    }

    /// Everything it printed.
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `crmsync-admin args` with `vars` as its whole environment (plus `PATH` and moto's endpoint
/// and test credentials).
async fn admin(vars: &[(&str, &str)], args: &[&str]) -> Run {
    let moto = crmsync_testkit::moto().await.endpoint();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crmsync-admin-under-test"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", moto)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args)
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("crmsync-admin ends within a minute")
        .expect("crmsync-admin runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown with the test's output when it fails (or with --nocapture).
    eprintln!(
        "$ crmsync-admin {} (exit {})\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

/// Runs `crmsync-admin --secret-id <the env's secret> args`.
async fn with_secret(env: &Env, args: &[&str]) -> Run {
    let mut all = vec!["--secret-id", env.settings.app_secret_id.as_str()];
    all.extend_from_slice(args);
    admin(&[], &all).await
}

fn hex_key() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Rotates the env's secret in moto: `encryption_key` and `encryption_key_previous` as given.
async fn set_keys(env: &Env, current: &str, previous: Option<&str>) {
    let client = aws_sdk_secretsmanager::Client::new(&env.aws);
    let out = client
        .get_secret_value()
        .secret_id(&env.settings.app_secret_id)
        .send()
        .await
        .unwrap();
    let mut secret: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
    secret["encryption_key"] = json!(current);
    secret["encryption_key_previous"] = json!(previous);
    client
        .put_secret_value()
        .secret_id(&env.settings.app_secret_id)
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
}

/// The key ids (fingerprints) of `current` and `previous`.
fn key_ids(current: &str, previous: &str) -> (String, String) {
    let v = Vault::new(current, Some(previous)).unwrap();
    (
        v.current_key_version().to_owned(),
        v.previous_key_version().unwrap().to_owned(),
    )
}

/// The key id of each integration's credentials, by the store (as the owner sees them).
async fn sealed_keys(env: &Env, users: &[Uuid]) -> Vec<(Uuid, String, Vec<u8>)> {
    let mut out = Vec::new();
    for user in users {
        for i in env.store.list_integrations(*user).await.unwrap() {
            out.push((i.id, i.sealed.key_version, i.sealed.ciphertext));
        }
    }
    out.sort();
    out
}

fn count_of(status: &Value, key: &str) -> i64 {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyId"] == key)
        .map_or(0, |k| k["integrations"].as_i64().unwrap())
}

async fn as_user_via(
    env: &Env,
    app: &crmsync_lambda::App,
    user: Uuid,
    route: Route,
    method: &str,
    path: &str,
) -> Reply {
    let cookie = [format!("alto_admin={}", Env::token(user))];
    Box::pin(env.send_via(app, route, method, path, "", &cookie, &[], None)).await
}

async fn integration_id(env: &Env, user: Uuid, provider: Provider) -> Uuid {
    env.store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Three integrations of two users sealed with key A; the key rotates to B (A previous); status
/// shows them all under the previous key; a dry run changes nothing; a reseal in batches of 2 moves
/// all three to B, and a second one finds nothing; with A removed from the secret, a new Lambda pulls
/// from and pushes to those CRMs. No output holds a key or a credential.
#[tokio::test]
async fn reseal_moves_every_credential_to_the_current_key_and_they_still_open() {
    let env = Env::start().await;
    env.lofty_production_tier();
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.connect(ann, Provider::Lofty).await;
    env.connect(ann, Provider::FollowUpBoss).await;
    env.connect(bob, Provider::Rex).await;
    let key_a = env.encryption_key.clone();
    let key_b = hex_key();
    let (id_b, id_a) = key_ids(&key_b, &key_a);
    let mut printed = Vec::new();

    // Before the rotation: three under the current key, no previous key.
    let before = with_secret(&env, &["--json", "keys", "status"]).await;
    let status = before.json();
    assert_eq!(status["currentKey"], id_a.as_str());
    assert_eq!(status["previousKey"], Value::Null);
    assert_eq!(count_of(&status, &id_a), 3);
    printed.push(before.text());

    // Key B only, given as plain settings: A's credentials are under an unknown key.
    let db_url = env.db.url.clone();
    let unknown = admin(
        &[("DATABASE_URL", &db_url), ("ENCRYPTION_KEY", &key_b)],
        &["keys", "status"],
    )
    .await;
    let text = unknown.ok();
    assert!(text.contains(&id_a) && text.contains("unknown"), "{text}");
    assert!(
        text.contains("3 integrations are sealed with a key that is neither"),
        "{text}"
    );
    printed.push(unknown.text());

    // Rotated: B current, A previous.
    set_keys(&env, &key_b, Some(&key_a)).await;
    let rotated = with_secret(&env, &["keys", "status", "--json"]).await;
    let status = rotated.json();
    assert_eq!(status["currentKey"], id_b.as_str());
    assert_eq!(status["previousKey"], id_a.as_str());
    assert_eq!((count_of(&status, &id_b), count_of(&status, &id_a)), (0, 3));
    assert_eq!(status["previousKeyCanBeDropped"], false);
    printed.push(rotated.text());

    let sealed_before = sealed_keys(&env, &[ann, bob]).await;
    let dry = with_secret(&env, &["keys", "reseal", "--dry-run", "--json"]).await;
    let report = dry.json();
    assert_eq!(
        (report["wouldReseal"].as_i64(), report["resealed"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        sealed_keys(&env, &[ann, bob]).await,
        sealed_before,
        "a dry run changes nothing"
    );
    printed.push(dry.text());

    let reseal = with_secret(&env, &["keys", "reseal", "--batch-size", "2"]).await;
    let text = reseal.ok();
    assert!(text.contains("Re-sealed 3 integrations"), "{text}");
    assert!(
        text.contains("0 integrations remain sealed with the previous key"),
        "{text}"
    );
    printed.push(reseal.text());
    let sealed_after = sealed_keys(&env, &[ann, bob]).await;
    assert_eq!(sealed_after.len(), 3);
    for ((id, key, ciphertext), (id0, _, ciphertext0)) in sealed_after.iter().zip(&sealed_before) {
        assert_eq!(id, id0);
        assert_eq!(key, &id_b, "{id} is sealed with the current key");
        assert_ne!(ciphertext, ciphertext0, "{id} was sealed again");
    }

    let after = with_secret(&env, &["--json", "keys", "status"]).await;
    let status = after.json();
    assert_eq!((count_of(&status, &id_b), count_of(&status, &id_a)), (3, 0));
    assert_eq!(status["previousKeyCanBeDropped"], true);
    printed.push(after.text());
    let again = with_secret(&env, &["--json", "keys", "reseal"]).await;
    assert_eq!(again.json()["resealed"], 0, "a second reseal finds nothing");
    assert_eq!(sealed_keys(&env, &[ann, bob]).await, sealed_after);

    // A removed: a new Lambda (it reads the secret afresh) opens every credential with B alone.
    set_keys(&env, &key_b, None).await;
    let lambda = env.another_app();
    for (user, provider) in [
        (ann, Provider::FollowUpBoss),
        (ann, Provider::Lofty),
        (bob, Provider::Rex),
    ] {
        let reply = as_user_via(
            &env,
            &lambda,
            user,
            Route::ContactsSync,
            "POST",
            &sync_path(provider),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{provider:?} syncs: {:?}",
            reply.body
        );
    }
    let phone = "+14155576001";
    let lead = scored_lead(
        ann,
        "K-1",
        phone,
        Some(3),
        "Rotated",
        "2026-11-01T10:00:00Z",
    );
    let pushed = post_lead(&env, &lambda, &lead).await;
    assert_eq!(pushed.status, StatusCode::ACCEPTED);
    assert_eq!(pushed.body["pushed"], 2, "{:?}", pushed.body);
    for provider in [Provider::FollowUpBoss, Provider::Lofty] {
        assert_eq!(
            people_with(&env, provider, phone).await.len(),
            1,
            "{provider:?}"
        );
    }

    for text in &printed {
        for secret in [key_a.as_str(), key_b.as_str(), "sandbox-lofty-key"] {
            assert!(!text.contains(secret), "a secret was printed: {text}");
        }
        for (_, _, ciphertext) in &sealed_before {
            let hex: String = ciphertext.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!text.contains(&hex), "a sealed value was printed: {text}");
        }
    }
}

/// A reseal waits for a credential write under the row lock (a token refresh) and does not overwrite
/// it: the refreshed credentials, sealed with the current key by the refresh, are what remains.
#[tokio::test]
async fn a_reseal_waits_for_a_token_refresh_and_keeps_its_credentials() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::FollowUpBoss).await;
    let id = integration_id(&env, user, Provider::FollowUpBoss).await;
    let key_a = env.encryption_key.clone();
    let key_b = hex_key();
    set_keys(&env, &key_b, Some(&key_a)).await;
    let vault = Vault::new(&key_b, Some(&key_a)).unwrap();

    // A refresh holds the row; the reseal (in its own process) waits for it.
    let refresh = env.store.lock_integration(user, id).await.unwrap().unwrap();
    let secret_id = env.settings.app_secret_id.clone();
    let reseal = tokio::spawn(async move {
        admin(
            &[],
            &["--secret-id", &secret_id, "--json", "keys", "reseal"],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!reseal.is_finished(), "the reseal waits for the row lock");
    let refreshed = crmsync_store::Credentials::OAuth {
        access_token: "refreshed-access-token".into(),
        refresh_token: Some("refreshed-refresh-token".into()),
        expires_at: None,
    };
    let sealed = vault.seal(id, Provider::FollowUpBoss, &refreshed).unwrap();
    refresh.save_credentials(&sealed, None).await.unwrap();

    let run = reseal.await.unwrap();
    let report = run.json();
    assert_eq!(
        (
            report["resealed"].as_i64(),
            report["alreadyCurrent"].as_i64()
        ),
        (Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(report["remaining"], 0);
    let stored = env.store.get_integration(user, id).await.unwrap().unwrap();
    assert_eq!(stored.sealed, sealed, "the refresh's credentials are kept");
    let opened = vault
        .open(id, Provider::FollowUpBoss, &stored.sealed)
        .unwrap();
    assert_eq!(opened.credentials, refreshed);
    assert!(!opened.needs_reseal);
    assert!(!run.text().contains("refreshed-access-token"));
}

/// Deliveries and integrations across users: Ann's Follow Up Boss is down until her lead is given
/// up and the integration paused; Bob's Lofty delivers his. Lists filter by status, user and
/// integration; a retry by status makes the given-up delivery pending with fresh attempts (it waits
/// for the paused integration), a delivered one is left alone, an unknown id changes nothing.
#[tokio::test]
async fn deliveries_and_integrations_across_users() {
    let env = Env::start().await;
    env.lofty_production_tier();
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.connect(ann, Provider::FollowUpBoss).await;
    env.connect(bob, Provider::Lofty).await;
    let fub = integration_id(&env, ann, Provider::FollowUpBoss).await;
    let lofty = integration_id(&env, bob, Provider::Lofty).await;
    let down = crm_sandbox::FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    env.sandbox
        .set_faults(sandbox_provider(Provider::FollowUpBoss), down)
        .unwrap();
    let t0 = "2026-11-01T10:00:00Z";
    let reply = post_lead(
        &env,
        &env.app,
        &scored_lead(ann, "D-1", "+14155577001", Some(3), "Down", t0),
    )
    .await;
    assert_eq!(reply.body["failed"], 1, "{:?}", reply.body);
    // The user's retries (the use case behind the route), until the delivery is given up.
    for _ in 0..9 {
        crmsync_app::deliveries::retry(
            env.ctx().await,
            ann,
            fub,
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
    let reply = post_lead(
        &env,
        &env.app,
        &scored_lead(bob, "D-2", "+14155577002", Some(3), "Up", t0),
    )
    .await;
    assert_eq!(reply.body["pushed"], 1, "{:?}", reply.body);

    // deliveries list
    let failed = with_secret(
        &env,
        &["deliveries", "list", "--status", "failed", "--json"],
    )
    .await
    .json();
    let failed = failed["deliveries"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["leadId"], "D-1");
    assert_eq!(failed[0]["userId"], ann.to_string());
    assert_eq!(failed[0]["integrationId"], fub.to_string());
    assert_eq!(failed[0]["provider"], "followupboss");
    assert_eq!(failed[0]["integrationStatus"], "paused");
    assert_eq!(failed[0]["attempts"], 40);
    assert!(
        failed[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.starts_with("Follow Up Boss"))
    );
    let failed_id: Uuid = failed[0]["id"].as_str().unwrap().parse().unwrap();
    let bobs = with_secret(
        &env,
        &["deliveries", "list", "--user", &bob.to_string(), "--json"],
    )
    .await
    .json();
    let bobs = bobs["deliveries"].as_array().unwrap().clone();
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0]["leadId"].as_str(), bobs[0]["status"].as_str()),
        (Some("D-2"), Some("delivered"))
    );
    let delivered_id = bobs[0]["id"].as_str().unwrap().to_owned();
    let by_integration = with_secret(
        &env,
        &[
            "deliveries",
            "list",
            "--integration",
            &lofty.to_string(),
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(by_integration["deliveries"].as_array().unwrap().len(), 1);
    let all = with_secret(&env, &["deliveries", "list", "--limit", "1"]).await;
    let text = all.ok();
    assert!(
        text.contains("LAST ERROR") && text.contains("1 delivery (the limit"),
        "{text}"
    );

    // integrations list
    let paused = with_secret(
        &env,
        &["integrations", "list", "--status", "paused", "--json"],
    )
    .await
    .json();
    let paused = paused["integrations"].as_array().unwrap().clone();
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0]["id"], fub.to_string());
    assert_eq!(paused[0]["userId"], ann.to_string());
    assert_eq!(paused[0]["provider"], "followupboss");
    assert!(paused[0]["consecutiveFailures"].as_i64().unwrap() >= 10);
    assert!(paused[0]["lastError"].is_string());
    let active = with_secret(
        &env,
        &["integrations", "list", "--status", "active", "--json"],
    )
    .await
    .json();
    let active: Vec<&str> = active["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(active, [lofty.to_string()]);
    let table = with_secret(&env, &["integrations", "list"]).await;
    let text = table.ok();
    assert!(
        text.contains("FAILURES") && text.contains("2 integrations"),
        "{text}"
    );
    let reauth = with_secret(
        &env,
        &["integrations", "list", "--status", "needs_reauth", "--json"],
    )
    .await
    .json();
    assert_eq!(reauth["integrations"], json!([]));
    let bad = with_secret(&env, &["integrations", "list", "--status", "sleeping"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");

    // deliveries retry: an unknown id changes nothing.
    let stored = |status| {
        let env = &env;
        async move {
            env.store
                .deliveries(ann, fub, Some(status), None, 50)
                .await
                .unwrap()
                .unwrap()
                .deliveries
        }
    };
    let before = stored(DeliveryStatus::Failed).await;
    let unknown = Uuid::new_v4().to_string();
    let refused = with_secret(
        &env,
        &["deliveries", "retry", &failed_id.to_string(), &unknown],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "no delivery with id {unknown}; nothing was changed"
        )),
        "{refused:?}"
    );
    assert_eq!(stored(DeliveryStatus::Failed).await, before);

    // A delivered one is left alone.
    let left = with_secret(&env, &["deliveries", "retry", &delivered_id, "--json"])
        .await
        .json();
    assert_eq!(left["retried"], 0);
    assert_eq!(left["deliveries"][0]["retried"], false);

    // Every failed one: pending again, due now, with fresh attempts; it waits for the paused
    // integration, and goes out once Ann resumes it.
    let retried = with_secret(&env, &["deliveries", "retry", "--status", "failed"]).await;
    let text = retried.ok();
    assert!(
        text.contains("Made 1 delivery due now (1 failed made pending"),
        "{text}"
    );
    assert!(
        text.contains("Of these, 1 wait for an integration that is not active"),
        "{text}"
    );
    assert!(stored(DeliveryStatus::Failed).await.is_empty());
    let pending = stored(DeliveryStatus::Pending).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, failed_id);
    assert_eq!(pending[0].attempts, 0);
    assert!(pending[0].next_attempt_at <= chrono::Utc::now());
    env.sandbox
        .set_faults(sandbox_provider(Provider::FollowUpBoss), Default::default())
        .unwrap();
    let resumed = env
        .json_as_user(
            ann,
            Route::Integrations,
            "PUT",
            &item(fub),
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_eq!(
        env.store.due_deliveries(ann, Some(fub), 10).await.unwrap(),
        [failed_id]
    );
}

/// `cursor reset` clears a synced integration's cursor (the next sync reads the whole account), says
/// so when there was none, refuses while a sync holds the integration, and an unknown id is an error.
#[tokio::test]
async fn cursor_reset_makes_the_next_sync_a_full_read() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 31, 40);
    env.connect(user, Provider::FollowUpBoss).await;
    let id = integration_id(&env, user, Provider::FollowUpBoss).await;
    let first = as_user_via(
        &env,
        &env.app,
        user,
        Route::ContactsSync,
        "POST",
        &sync_path(Provider::FollowUpBoss),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let cursor = || async {
        env.store
            .get_integration(user, id)
            .await
            .unwrap()
            .unwrap()
            .sync_cursor
    };
    assert!(cursor().await.is_some());
    let second = as_user_via(
        &env,
        &env.app,
        user,
        Route::ContactsSync,
        "POST",
        &sync_path(Provider::FollowUpBoss),
    )
    .await;
    assert_eq!(second.body["fullRead"], false, "{:?}", second.body);

    // A sync holds the integration: nothing changes.
    let lease = env
        .store
        .try_lock_sync(user, id)
        .await
        .unwrap()
        .expect("the sync lock");
    let busy = with_secret(&env, &["cursor", "reset", "--integration", &id.to_string()]).await;
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(
        busy.stderr
            .contains("is syncing right now; nothing was changed"),
        "{busy:?}"
    );
    assert!(cursor().await.is_some());
    lease.release().await.unwrap();

    let reset = with_secret(&env, &["cursor", "reset", "--integration", &id.to_string()]).await;
    let text = reset.ok();
    assert!(
        text.contains(&format!(
            "Cleared the pull cursor of integration {id} (followupboss, user {user})"
        )),
        "{text}"
    );
    assert_eq!(cursor().await, None);
    let again = with_secret(
        &env,
        &[
            "--json",
            "cursor",
            "reset",
            "--integration",
            &id.to_string(),
        ],
    )
    .await
    .json();
    assert_eq!(again["cleared"], false);
    let full = as_user_via(
        &env,
        &env.app,
        user,
        Route::ContactsSync,
        "POST",
        &sync_path(Provider::FollowUpBoss),
    )
    .await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body["fullRead"], true, "{:?}", full.body);

    let unknown = Uuid::new_v4();
    let missing = with_secret(
        &env,
        &["cursor", "reset", "--integration", &unknown.to_string()],
    )
    .await;
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        format!("crmsync-admin: error: no integration with id {unknown}; nothing was changed")
    );
}

/// A bad setting: the environment, the arguments, and how the error line starts.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static str,
);

/// What cannot work says so in one line, exit code 1, and prints no password: an unreachable
/// database, a malformed URL, an unknown secret, no database at all, keys missing for `keys`.
#[tokio::test]
async fn bad_settings_are_one_clear_line() {
    let cases: [Case; 5] = [
        (
            &[(
                "DATABASE_URL",
                "postgres://admin:hunter2@127.0.0.1:1/crmsync",
            )],
            &["integrations", "list"],
            "crmsync-admin: error: cannot use the database: ",
        ),
        (
            &[],
            &[
                "--database-url",
                "postgres://admin:hunter2@127.0.0.1:1:2/x?sslmode=bogus",
                "integrations",
                "list",
            ],
            "crmsync-admin: error: the database URL is invalid",
        ),
        (
            &[],
            &[
                "--secret-id",
                "crmsync/no-such-secret",
                "integrations",
                "list",
            ],
            "crmsync-admin: error: cannot read secret crmsync/no-such-secret from Secrets Manager",
        ),
        (
            &[],
            &["integrations", "list"],
            "crmsync-admin: error: no database: give --secret-id",
        ),
        (
            &[("ENCRYPTION_KEY", "not-hex")],
            &[
                "--database-url",
                "postgres://admin:hunter2@127.0.0.1:1/crmsync",
                "keys",
                "status",
            ],
            "crmsync-admin: error: cannot use the database",
        ),
    ];
    for (vars, args, want) in cases {
        let run = admin(vars, args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(want), "{args:?}: {run:?}");
        assert!(!run.text().contains("hunter2"), "{args:?}: {run:?}");
    }

    // A reachable database with bad keys: the keys are the error.
    let (db, _store) = crate::support::common::migrated_store().await;
    let run = admin(
        &[("DATABASE_URL", &db.url), ("ENCRYPTION_KEY", "not-hex")],
        &["keys", "status"],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("the encryption keys of the settings are not usable"),
        "{run:?}"
    );
    let run = admin(&[("DATABASE_URL", &db.url)], &["keys", "reseal"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("the encryption key is needed"),
        "{run:?}"
    );
    let run = admin(
        &[("DATABASE_URL", &db.url)],
        &["--json", "integrations", "list"],
    )
    .await;
    assert_eq!(run.json(), json!({"integrations": []}));
}
