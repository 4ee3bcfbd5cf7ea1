//! `sync-worker` and the sync queue (SQS in moto, fed to the worker as Lambda's event source does, see
//! `support/queue.rs`): `scheduled-sync` dispatches one message per due integration, once per run even
//! when two runs overlap; a worker killed mid-sync leaves its message to be received again, and the
//! retry ends with exactly the rows of a fault-free sync; a message that keeps failing goes to the
//! dead-letter queue; ten concurrent "sync now" calls run the integration once; a "sync now" cut short
//! by its deadline answers `complete: false` with its progress and finishes in the background.

use std::collections::BTreeMap;
use std::time::Duration;

use crm_sandbox::FaultConfig;
use crmsync_domain::Provider;
use crmsync_lambda::routes::scheduled_sync::{self, Report};
use http::StatusCode;
use lambda_http::RequestExt;
use uuid::Uuid;

use crate::support::env::{Env, Route, api_gateway_request, call_handler, sandbox_provider};
use crate::support::queue::SyncQueues;
use crate::support::rows::{assert_same, expected, report, stored};

/// A scheduled run of `app`'s `scheduled-sync`, as EventBridge Scheduler invokes it.
pub(crate) async fn scheduled_run(app: &crmsync_lambda::App) -> Report {
    let event = serde_json::json!({"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}});
    scheduled_sync::handle(
        app,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .expect("a scheduled run")
}

pub(crate) fn dispatched(report: &Report) -> &crmsync_app::queue::Dispatched {
    match report {
        Report::Dispatched(d) => d,
        Report::Ran(r) => panic!("the run synced itself instead of dispatching: {r:?}"),
    }
}

/// The integration ids of the messages, with how many messages each.
fn per_integration(messages: &[crate::support::queue::Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        let id = m.json()["integrationId"].as_str().unwrap_or("?").to_owned();
        *out.entry(id).or_default() += 1;
    }
    out
}

async fn pull_logs(env: &Env, user: Uuid) -> i64 {
    crmsync_testkit::connect(&env.db.url)
        .await
        .query_one(
            "SELECT count(*) FROM crm_sync_logs WHERE user_id = $1 AND direction = 'pull'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
pub(crate) async fn overlapping_dispatcher_runs_queue_each_due_integration_once() {
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_queued(&queues).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 1, 40);
    env.sandbox.seed(sandbox_provider(Provider::Rex), 2, 30);
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 3, 20);
    env.connect(alice, Provider::FollowUpBoss).await;
    env.connect(alice, Provider::Lofty).await;
    env.connect(bob, Provider::Rex).await;

    // Two runs at once, as two Lambda instances (a run that overran its schedule and the next one).
    let (a, b) = (env.another_app(), env.another_app());
    let (first, second) = tokio::join!(scheduled_run(&a), scheduled_run(&b));
    let (first, second) = (dispatched(&first), dispatched(&second));
    assert_eq!(first.queued + second.queued, 3, "{first:?} {second:?}");
    assert_eq!(
        first.already_queued + second.already_queued,
        3,
        "{first:?} {second:?}"
    );
    assert_eq!((first.failed, second.failed), (0, 0));
    // A third run while those messages wait queues nothing more.
    let third = scheduled_run(&env.app).await;
    assert_eq!(dispatched(&third).queued, 0, "{third:?}");

    let messages = queues.receive_within(Duration::from_secs(5)).await;
    let mut all = messages.clone();
    loop {
        let more = queues.receive_from(&queues.url).await;
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    let counts = per_integration(&all);
    assert_eq!(counts.len(), 3, "one message per integration: {counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    // The worker does them; then they are due again (polled integrations), and queued again once.
    let polled = queues.work(&env.app, all, Duration::from_secs(60)).await;
    let answer = polled.answer.expect("the worker answers");
    assert!(
        answer.batch_item_failures.is_empty(),
        "{:?}",
        answer.batch_item_failures
    );
    assert_same(
        &stored(&env, bob).await,
        &expected(&env, Provider::Rex).await,
        "REX through the queue",
    );
    let again = scheduled_run(&env.app).await;
    assert_eq!(dispatched(&again).queued, 3, "{again:?}");
    report(format!(
        "queue/dispatch: 2 overlapping runs queued 3 due integrations once each ({} + {})",
        first.queued, second.queued
    ));
}

/// The sandbox's delay on each request of the cut-short tests: their 1,500 records are 15 pages, so a
/// sync takes at least 15 × this, whatever the machine's speed.
const PAGE_LATENCY_MS: u64 = 150;

#[tokio::test]
async fn a_worker_killed_mid_sync_leaves_its_message_and_the_retry_loses_and_doubles_nothing() {
    let provider = Provider::FollowUpBoss;
    // Received again 2 s after a receive that was not deleted.
    let queues = SyncQueues::create(Duration::from_secs(2), 5).await;
    let env = Env::start_queued(&queues).await;
    env.sandbox.seed(sandbox_provider(provider), 7, 1_500);
    let want = expected(&env, provider).await;
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    // Slow pages: 15 pages of 100 at 150 ms each take at least 2.25 s, so the worker is mid-sync when
    // it is killed after its first pages are stored, however fast or loaded the machine.
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            FaultConfig {
                latency_ms: PAGE_LATENCY_MS,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    let messages = queues.receive_within(Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 1);
    let first_id = messages[0].message_id.clone();

    // A worker instance killed once it has stored some pages: its invocation never answers, so
    // nothing is deleted.
    {
        let doomed = env.another_app();
        let working = queues.work(&doomed, messages, Duration::from_secs(60));
        tokio::pin!(working);
        loop {
            tokio::select! {
                _ = &mut working => panic!("the worker finished before it could be killed"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if !stored(&env, user).await.is_empty() { break; }
                }
            }
        }
        // Leaving this block drops the invocation: killed mid-sync.
    }
    let partial = stored(&env, user).await.len();
    assert!(
        partial > 0 && partial < want.len(),
        "killed mid-sync: {partial} of {} rows stored",
        want.len()
    );

    // The same message comes back after its visibility timeout; a worker finishes the sync.
    env.sandbox
        .set_faults(sandbox_provider(provider), FaultConfig::default())
        .unwrap();
    let again = queues.receive_within(Duration::from_secs(15)).await;
    assert_eq!(again.len(), 1, "the message is received again");
    assert_eq!(
        again[0].message_id, first_id,
        "the same message, not a new one"
    );
    assert!(again[0].receive_count >= 2, "{:?}", again[0]);
    let polled = queues.work(&env.app, again, Duration::from_secs(60)).await;
    assert!(
        polled
            .answer
            .expect("the worker answers")
            .batch_item_failures
            .is_empty()
    );
    queues.drain(&env.app, Duration::from_secs(30)).await;
    assert_same(
        &stored(&env, user).await,
        &want,
        "after a killed worker and its message's retry",
    );
    let (visible, in_flight, dead) = queues.depths().await;
    assert_eq!((visible, in_flight, dead), (0, 0, 0));
    // Its claim was cleared: the next scheduled run queues it again.
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    report(format!(
        "queue/killed-worker: killed with {partial} of {} rows stored; the same message came back and the retry stored exactly the {}",
        want.len(),
        want.len()
    ));
}

#[tokio::test]
async fn a_message_that_keeps_failing_goes_to_the_dead_letter_queue() {
    let provider = Provider::Lofty;
    let queues = SyncQueues::create(Duration::from_secs(1), 2).await;
    let env = Env::start_queued(&queues).await;
    env.sandbox.seed(sandbox_provider(provider), 3, 30);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    // The CRM fails every request: each receive of the message fails.
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    let mut failures = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let polled = queues.poll(&env.app).await;
        if let Some(answer) = &polled.answer {
            for m in &polled.received {
                assert!(
                    answer
                        .batch_item_failures
                        .iter()
                        .any(|f| f.item_identifier == m.message_id),
                    "a failed sync is reported as a batch item failure: {answer:?}"
                );
                failures += 1;
            }
        }
        let (_, _, dead) = queues.depths().await;
        if dead == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not dead-lettered after {failures} failures"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        failures, 2,
        "received twice (maxReceiveCount 2), then dead-lettered"
    );
    let dead = queues.receive_from(&queues.dead_letter_url).await;
    assert_eq!(dead.len(), 1);
    let integration = env
        .store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead[0].json()["integrationId"], integration.id.to_string());
    assert_eq!(dead[0].json()["reason"], "schedule");
    let (visible, in_flight, _) = queues.depths().await;
    assert_eq!((visible, in_flight), (0, 0));
}

/// `POST /api/integrations/{id}/sync` as `user`, through `app`, with `time` before the Lambda's
/// deadline.
async fn sync_now(
    app: &crmsync_lambda::App,
    user: Uuid,
    id: Uuid,
    time: Duration,
) -> crate::support::env::Reply {
    let cookies = [format!("alto_admin={}", Env::token(user))];
    let path = format!("/api/integrations/{id}/sync");
    let mut context = lambda_runtime::Context::default();
    context.deadline = (chrono::Utc::now() + time).timestamp_millis() as u64;
    let req =
        api_gateway_request("POST", &path, "", &cookies, &[], None).with_lambda_context(context);
    call_handler(app, Route::IntegrationSync, req).await
}

#[tokio::test]
pub(crate) async fn ten_concurrent_sync_now_calls_run_the_integration_once() {
    let provider = Provider::Rex;
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_queued(&queues).await;
    env.sandbox.seed(sandbox_provider(provider), 11, 1_000);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let id = env
        .store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap()
        .id;
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            FaultConfig {
                // 10 pages at 100 ms: the one that runs holds its claim for at least a second, long
                // after the other nine have asked (at 25 ms a fast machine could finish first).
                latency_ms: 100,
                ..Default::default()
            },
        )
        .unwrap();
    let apps: Vec<_> = (0..10).map(|_| env.another_app()).collect();
    let replies = futures::future::join_all(
        apps.iter()
            .map(|app| sync_now(app, user, id, Duration::from_secs(60))),
    )
    .await;
    let ran: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    let queued: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(
        (ran.len(), queued.len()),
        (1, 9),
        "{:?}",
        replies
            .iter()
            .map(|r| (r.status, &r.body))
            .collect::<Vec<_>>()
    );
    assert_eq!(ran[0].body["complete"], true, "{:?}", ran[0].body);
    assert_eq!(ran[0].body["totalFetched"], 1_000);
    for r in &queued {
        assert_eq!(r.body["queued"], true, "{:?}", r.body);
        assert_eq!(r.body["alreadyQueued"], true, "{:?}", r.body);
        assert!(r.body["progress"]["recordsStored"].is_u64(), "{:?}", r.body);
    }
    assert_eq!(
        pull_logs(&env, user).await,
        1,
        "one sync ran, one was logged"
    );
    assert_same(
        &stored(&env, user).await,
        &expected(&env, provider).await,
        "sync now",
    );
    // Nothing was left on the queue to run it again.
    let (visible, in_flight, dead) = queues.depths().await;
    assert_eq!((visible, in_flight, dead), (0, 0, 0));
    // Done: the next call runs it again.
    let next = sync_now(&env.app, user, id, Duration::from_secs(60)).await;
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    report(
        "queue/sync-now: 10 concurrent calls over 10 instances: 1 ran (200), 9 answered 202 queued",
    );
}

#[tokio::test]
async fn a_sync_now_cut_short_answers_its_progress_and_finishes_in_the_background() {
    let provider = Provider::FollowUpBoss;
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_queued(&queues).await;
    env.sandbox.seed(sandbox_provider(provider), 5, 1_500);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let id = env
        .store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap()
        .id;
    // 15 pages at 150 ms each take at least 2.25 s: the call's 1.5 s cannot finish them.
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            FaultConfig {
                latency_ms: PAGE_LATENCY_MS,
                ..Default::default()
            },
        )
        .unwrap();
    let reply = sync_now(&env.app, user, id, Duration::from_millis(1_500)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["complete"], false, "{:?}", reply.body);
    assert_eq!(reply.body["queued"], true, "{:?}", reply.body);
    let progress = reply.body["progress"]["recordsStored"].as_u64().unwrap();
    assert!(progress > 0 && progress < 1_500, "{:?}", reply.body);
    // While the rest waits on the queue, another "sync now" adds nothing.
    let again = sync_now(&env.app, user, id, Duration::from_secs(60)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    assert_eq!(again.body["alreadyQueued"], true);

    env.sandbox
        .set_faults(sandbox_provider(provider), FaultConfig::default())
        .unwrap();
    let worked = queues.drain(&env.app, Duration::from_secs(60)).await;
    assert!(!worked.is_empty());
    assert_eq!(worked[0].json()["reason"], "continuation");
    assert_eq!(worked[0].json()["trigger"], "manual");
    assert_same(
        &stored(&env, user).await,
        &expected(&env, provider).await,
        "finished in the background",
    );
    let done = sync_now(&env.app, user, id, Duration::from_secs(60)).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body["complete"], true);
    let finished = done.body["progress"]["recordsStored"].as_u64().unwrap();
    assert!(finished > progress, "{:?}", done.body);
    report(format!(
        "queue/continuation: sync now cut short at {progress} of 1500 records, finished by {} queued message(s)",
        worked.len()
    ));
}

/// SQS delivers at least once: a message received twice (or sent again by an earlier claim) after its
/// work is done is dropped, not run again; and a message for an integration paused meanwhile does
/// nothing and frees the integration for the next run.
#[tokio::test]
async fn a_duplicate_message_runs_nothing_and_one_for_a_paused_integration_is_dropped() {
    let provider = Provider::FollowUpBoss;
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_queued(&queues).await;
    env.sandbox.seed(sandbox_provider(provider), 4, 60);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    let first = queues.receive_within(Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let duplicate = first[0].body.clone();
    let polled = queues.work(&env.app, first, Duration::from_secs(60)).await;
    assert!(polled.answer.unwrap().batch_item_failures.is_empty());
    assert_eq!(pull_logs(&env, user).await, 1);

    // The same message once more: acknowledged, nothing run.
    queues
        .sqs
        .send_message()
        .queue_url(&queues.url)
        .message_body(&duplicate)
        .send()
        .await
        .unwrap();
    let worked = queues.drain(&env.app, Duration::from_secs(10)).await;
    assert_eq!(worked.len(), 1);
    assert_eq!(pull_logs(&env, user).await, 1, "the duplicate ran nothing");

    // Queued, then paused before the worker gets to it: dropped, and the claim is freed.
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    let id = env
        .store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap()
        .id;
    let paused = crate::support::api::update(
        &env,
        user,
        &id.to_string(),
        serde_json::json!({"status": "paused"}),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{:?}", paused.body);
    let worked = queues.drain(&env.app, Duration::from_secs(10)).await;
    assert_eq!(worked.len(), 1);
    assert_eq!(
        pull_logs(&env, user).await,
        1,
        "a paused integration is not pulled"
    );
    let resumed = crate::support::api::update(
        &env,
        user,
        &id.to_string(),
        serde_json::json!({"status": "active"}),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_eq!(
        dispatched(&scheduled_run(&env.app).await).queued,
        1,
        "queued again once active"
    );
}
