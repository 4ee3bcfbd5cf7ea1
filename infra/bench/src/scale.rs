//! Scale: many small integrations synced through the sync queue by 1, 2, 4, 8 workers, and the time
//! from a change in the CRM to its row in `contacts` through a webhook.
//!
//! * **Queue rounds.** One deployment holds `integrations` Follow Up Boss integrations (one connected
//!   by API key and synced through the real use cases; the others copies of its row, each with its own
//!   user and its credentials sealed for it by the store's vault), all reading the sandbox's one small
//!   Follow Up Boss account. Each round changes a few records in the sandbox, starts N worker processes
//!   (`crmsync-bench scale-worker`: an `App` of their own, as a Lambda instance, and the event source's
//!   loop: `ReceiveMessage` from moto's SQS, the message as an SQS event to the real
//!   `sync_worker::handle`, `DeleteMessage` unless it was reported in `batchItemFailures`), then runs
//!   the real `scheduled-sync` handler, which claims every due integration and sends one message each.
//!   The round ends when every claim is released; its time runs from the dispatcher's start.
//! * **Webhook latency.** Another deployment with a public address (`CRM_WEBHOOK_BASE_URL`) at a local
//!   listener of the bench: one integration connected by API key subscribes at the sandbox; each change
//!   (`POST /_sandbox/fub/touch` of one record) is delivered by the sandbox to the listener, which hands
//!   it to the real `crm-webhook` handler as API Gateway would; the time runs from the change to the
//!   row in `contacts` holding it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crmsync_domain::{PhoneNumber, Provider, Region};
use crmsync_lambda::App;
use crmsync_lambda::routes::{crm_webhook, scheduled_sync, sync_worker};
use crmsync_store::{Credentials, Vault};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

use crate::stack::{FUB_API_KEY, Stack, Wiring, event};
use crate::{Error, say};

/// How long a worker's invocation may run: the template's `sync-worker` timeout.
const WORKER_TIMEOUT: Duration = Duration::from_secs(300);
/// The template's visibility timeout of the sync queue.
const VISIBILITY_TIMEOUT_SECS: u32 = 1800;
/// Follow Up Boss's documented limit per account, 250 requests per 10 s with a registered system
/// (`docs/crm-apis.md`): the shared window of the capped round.
const FUB_LIMIT: u64 = 250;
const FUB_WINDOW_SECS: u64 = 10;
/// A round that has not finished after this long is an error.
const ROUND_LIMIT: Duration = Duration::from_secs(3600);

/// What one round (one worker count) measured.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub workers: usize,
    /// Every claim was released within the round's time limit.
    pub finished: bool,
    /// Records changed in the sandbox's account before the round.
    pub changed: u64,
    /// The dispatcher's answer.
    pub dispatched: Value,
    /// The dispatcher's call alone.
    pub dispatch_secs: f64,
    /// From the dispatcher's start to the last claim released.
    pub secs: f64,
    /// Integrations with a successful pull logged in the round.
    pub synced: u64,
    /// Pull logs of the round that are not successes.
    pub not_ok: u64,
    /// Messages the workers handled, and those they reported failed.
    pub messages: u64,
    pub failed_messages: u64,
    /// Sums over the round's pull logs.
    pub fetched: u64,
    pub upserted: u64,
    /// Requests the sandbox's Follow Up Boss served, and how many were 429s.
    pub crm_requests: u64,
    pub served_429: u64,
    /// CPU seconds during the round: the workers (together), moto, Postgres, the sandbox, and this
    /// process (the dispatcher's handler and the watching).
    pub cpu_workers: f64,
    pub cpu_moto: f64,
    pub cpu_postgres: f64,
    pub cpu_sandbox: f64,
    pub cpu_bench: f64,
}

impl Round {
    pub fn rate(&self) -> f64 {
        self.synced as f64 / self.secs
    }
}

/// The webhook latency measurement.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Milliseconds from each change to its row, to its delivery at the listener, and in the handler.
    pub to_row_ms: Vec<f64>,
    pub to_delivery_ms: Vec<f64>,
    pub handler_ms: Vec<f64>,
    /// Deliveries the listener got (a delivery may name several records, or come again).
    pub deliveries: u64,
    /// The sandbox's batching of changes into deliveries (its `webhooks.batch_ms`).
    pub batch_ms: u64,
}

/// The round under a rate limit shared by every integration.
#[derive(Debug, Clone, Default)]
pub struct Capped {
    pub integrations: usize,
    /// The sandbox's window: requests per `window_secs`.
    pub limit: u64,
    pub window_secs: u64,
    /// The round stops waiting after this long.
    pub time_limit_secs: u64,
    pub round: Round,
}

#[derive(Debug, Clone, Default)]
pub struct ScaleResults {
    pub integrations: usize,
    /// Records of the sandbox's account, and those of them with a usable phone.
    pub account_records: u64,
    pub account_contacts: u64,
    pub changes_per_round: usize,
    /// The sandbox's Follow Up Boss limit during the rounds: requests per window, window in seconds.
    pub fub_limit: (u64, u64),
    /// Seeding: the first integration connected and synced, the copies written.
    pub seed_secs: f64,
    pub rounds: Vec<Round>,
    pub capped: Option<Capped>,
    pub latency: Option<Latency>,
}

/// The sync queue in moto: its URL.
async fn create_queue(sqs: &aws_sdk_sqs::Client) -> Result<String, Error> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs
        .create_queue()
        .queue_name(format!("crmsync-bench-sync-{}", Uuid::new_v4().simple()))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT_SECS.to_string(),
        )
        .send()
        .await?;
    Ok(out.queue_url.ok_or("moto gave no queue URL")?)
}

fn queue_vars(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYNC_QUEUE_URL", url.to_owned()),
        (
            "SYNC_CLAIM_TTL_SECONDS",
            (u64::from(VISIBILITY_TIMEOUT_SECS) * 4).to_string(),
        ),
    ]
}

fn fub_stat(stats: &Value, name: &str) -> u64 {
    stats["providers"]["fub"][name].as_u64().unwrap_or(0)
}

/// The worker process: an `App` of its own with the sync queue, and the event source's loop until its
/// standard input closes. Prints `{"ready":true}` once its `App` is ready, and at the end
/// `{"handled", "failed", "cpu"}`.
pub async fn worker(args: &HashMap<String, String>) -> Result<(), Error> {
    let wiring = Wiring::from_args(args)?;
    let url = args.get("queue-url").ok_or("--queue-url is required")?;
    let app = wiring.app_with(&queue_vars(url)).await?;
    app.ready().await.map_err(|e| e.detail().to_owned())?;
    let sqs = aws_sdk_sqs::Client::new(&crate::stack::aws(&wiring.moto).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    println!("{}", json!({"ready": true}));
    let (mut handled, mut failed) = (0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // One message per invocation (the template's event source), one after the other.
        for m in messages {
            let id = m.message_id.clone().unwrap_or_default();
            let record = json!({
                "messageId": id,
                "receiptHandle": m.receipt_handle.clone().unwrap_or_default(),
                "body": m.body.clone().unwrap_or_default(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:crmsync-sync",
                "awsRegion": "us-east-1"
            });
            let mut context = lambda_runtime::Context::default();
            context.deadline = (chrono::Utc::now() + WORKER_TIMEOUT)
                .timestamp_millis()
                .max(0) as u64;
            let ev = lambda_runtime::LambdaEvent::new(json!({"Records": [record]}), context);
            handled += 1;
            let ok = match sync_worker::handle(&app, ev).await {
                Ok(answer) => !answer
                    .batch_item_failures
                    .iter()
                    .any(|f| f.item_identifier == id),
                Err(_) => false,
            };
            if ok {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle.unwrap_or_default())
                    .send()
                    .await?;
            } else {
                failed += 1;
            }
        }
    }
    let (user, sys) = crate::procstat::own_cpu();
    println!(
        "{}",
        json!({"handled": handled, "failed": failed, "cpu": user + sys})
    );
    Ok(())
}

struct Worker {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn start_workers(wiring: &Wiring, url: &str, n: usize) -> Result<Vec<Worker>, Error> {
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for _ in 0..n {
        let mut child = tokio::process::Command::new(&exe)
            .arg("scale-worker")
            .args(wiring.to_args())
            .args(["--queue-url", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        workers.push(Worker {
            child,
            lines: BufReader::new(stdout).lines(),
        });
    }
    for w in &mut workers {
        let line = w.lines.next_line().await?.ok_or("a worker died starting")?;
        let v: Value = serde_json::from_str(&line)?;
        if v["ready"] != true {
            return Err(format!("a worker said `{line}`").into());
        }
    }
    Ok(workers)
}

/// Closes the workers' input and reads what they did: (handled, failed, CPU seconds).
async fn stop_workers(workers: Vec<Worker>) -> Result<(u64, u64, f64), Error> {
    let (mut handled, mut failed, mut cpu) = (0, 0, 0.0);
    for mut w in workers {
        drop(w.child.stdin.take());
        let line = w.lines.next_line().await?.ok_or("a worker died")?;
        let v: Value = serde_json::from_str(&line)?;
        handled += v["handled"].as_u64().unwrap_or(0);
        failed += v["failed"].as_u64().unwrap_or(0);
        cpu += v["cpu"].as_f64().unwrap_or(0.0);
        w.child.wait().await?;
    }
    Ok((handled, failed, cpu))
}

/// `n` integrations of the sandbox's Follow Up Boss account: the first connected by API key and
/// synced through the use cases, the others copies of its row (own id, own user, credentials sealed
/// for that id).
async fn seed(d: &crate::stack::Deployment, app: &App, n: usize) -> Result<(), Error> {
    let ctx = app.context().await.map_err(|e| e.detail().to_owned())?;
    let user = Uuid::new_v4();
    let first =
        crmsync_app::credentials::connect_api_key(ctx, user, Provider::FollowUpBoss, FUB_API_KEY)
            .await
            .map_err(|e| e.detail())?;
    crmsync_app::pull::sync(
        ctx,
        &first,
        crmsync_app::pull::SyncRequest::default(),
        crmsync_domain::Trigger::Manual,
        None,
    )
    .await
    .map_err(|e| e.detail())?;
    let vault = Vault::new(&d.encryption_key, None)?;
    let credentials = Credentials::ApiKey {
        key: FUB_API_KEY.to_owned(),
    };
    let db = crmsync_testkit::connect(&d.db_url).await;
    let insert = db
        .prepare(
            "INSERT INTO crm_integrations (id, user_id, provider, auth_type, credentials_ciphertext, \
               credentials_nonce, credentials_key_version, status, auto_sync, risk_threshold, sync_cursor, \
               last_sync_at, phone_region, account_id, last_full_sync_at) \
             SELECT c.id, c.user_id, t.provider, t.auth_type, c.ct, c.nonce, $5, t.status, t.auto_sync, \
               t.risk_threshold, t.sync_cursor, t.last_sync_at, t.phone_region, t.account_id, t.last_full_sync_at \
             FROM crm_integrations t, unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::bytea[]) AS c(id, user_id, ct, nonce) \
             WHERE t.id = $6",
        )
        .await?;
    let mut left = n.saturating_sub(1);
    while left > 0 {
        let k = left.min(1000);
        let (mut ids, mut users, mut cts, mut nonces) = (
            Vec::with_capacity(k),
            Vec::with_capacity(k),
            Vec::with_capacity(k),
            Vec::with_capacity(k),
        );
        let mut version = String::new();
        for _ in 0..k {
            let id = Uuid::new_v4();
            let sealed = vault.seal(id, Provider::FollowUpBoss, &credentials)?;
            ids.push(id);
            users.push(Uuid::new_v4());
            cts.push(sealed.ciphertext);
            nonces.push(sealed.nonce.to_vec());
            version = sealed.key_version;
        }
        db.execute(&insert, &[&ids, &users, &cts, &nonces, &version, &first.id])
            .await?;
        left -= k;
    }
    Ok(())
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> Result<i64, Error> {
    Ok(db.query_one(sql, &[]).await?.get(0))
}

/// What the scale benchmark does, and how much.
#[derive(Debug, Clone)]
pub struct Plan {
    pub integrations: usize,
    pub workers: Vec<usize>,
    pub account_size: usize,
    pub changes_per_round: usize,
    /// Integrations of the round under a shared limit (0: no such round), and its time limit.
    pub capped: usize,
    pub capped_secs: u64,
    pub latency_changes: usize,
}

pub async fn run(stack: &Stack, plan: &Plan, started: Instant) -> Result<ScaleResults, Error> {
    let Plan {
        integrations,
        ref workers,
        account_size,
        changes_per_round,
        capped,
        capped_secs,
        latency_changes,
    } = *plan;
    let t = Instant::now();
    stack
        .control(reqwest::Method::POST, "/_sandbox/fub/reset", None)
        .await?;
    stack
        .control(
            reqwest::Method::POST,
            "/_sandbox/fub/seed",
            Some(json!({"seed": 17, "count": account_size})),
        )
        .await?;
    let d = stack.deploy().await?;
    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    let url = create_queue(&sqs).await?;
    let app = d.wiring.app_with(&queue_vars(&url)).await?;
    seed(&d, &app, integrations).await?;
    let db = crmsync_testkit::connect(&d.db_url).await;
    let fub = stack
        .control(reqwest::Method::GET, "/_sandbox/fub/config", None)
        .await?;
    let mut out = ScaleResults {
        fub_limit: (
            fub["rate_limit_global"].as_u64().unwrap_or(0),
            fub["rate_limit_window_secs"].as_u64().unwrap_or(0),
        ),
        integrations,
        account_records: account_size as u64,
        account_contacts: count(&db, "SELECT count(*) FROM contacts").await? as u64,
        changes_per_round,
        seed_secs: t.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let have = count(
        &db,
        "SELECT count(*) FROM crm_integrations WHERE status = 'active'",
    )
    .await?;
    say(
        started,
        &format!(
            "scale: {have} integrations of a {account_size}-record account seeded in {:.1} s",
            out.seed_secs
        ),
    );
    let q = Queued {
        stack,
        d: &d,
        app: &app,
        db: &db,
        url: &url,
    };
    for (i, &n) in workers.iter().enumerate() {
        let round = q
            .round(n, changes_per_round, i, ROUND_LIMIT, integrations, started)
            .await?;
        if !round.finished {
            return Err(format!("scale: {n} workers did not finish within {ROUND_LIMIT:?}").into());
        }
        out.rounds.push(round);
    }
    if capped > 0 {
        // A limit shared by every integration's requests: the sandbox's one account at the limit
        // Follow Up Boss documents per account, standing for a ceiling shared by many accounts.
        stack
            .control(
                reqwest::Method::PUT,
                "/_sandbox/fub/config",
                Some(
                    json!({"rate_limit_global": FUB_LIMIT, "rate_limit_events": FUB_LIMIT,
                            "rate_limit_window_secs": FUB_WINDOW_SECS}),
                ),
            )
            .await?;
        stack
            .control(
                reqwest::Method::POST,
                "/_sandbox/fub/rate-limits/reset",
                None,
            )
            .await?;
        let keep = capped.min(integrations) as i64;
        db.execute(
            "UPDATE crm_integrations SET status = 'paused' \
             WHERE id NOT IN (SELECT id FROM crm_integrations ORDER BY id LIMIT $1)",
            &[&keep],
        )
        .await?;
        let n = workers.iter().copied().max().unwrap_or(1);
        let limit = Duration::from_secs(capped_secs.max(1));
        let round = q
            .round(
                n,
                changes_per_round,
                workers.len(),
                limit,
                keep as usize,
                started,
            )
            .await?;
        out.capped = Some(Capped {
            integrations: keep as usize,
            limit: FUB_LIMIT,
            window_secs: FUB_WINDOW_SECS,
            time_limit_secs: capped_secs,
            round,
        });
        stack
            .control(
                reqwest::Method::PUT,
                "/_sandbox/fub/config",
                Some(json!({"rate_limit_global": crate::stack::UNLIMITED,
                            "rate_limit_events": crate::stack::UNLIMITED})),
            )
            .await?;
    }
    drop(app);
    stack.drop_deployment(&d).await?;
    if latency_changes > 0 {
        say(
            started,
            &format!("  webhook latency: {latency_changes} changes, one after the other"),
        );
        let l = latency(stack, latency_changes).await?;
        say(
            started,
            &format!(
                "  change to row: median {:.1} ms, p99 {:.1} ms",
                crate::report::median(&l.to_row_ms),
                crate::report::percentile(&l.to_row_ms, 0.99)
            ),
        );
        out.latency = Some(l);
    }
    Ok(out)
}

/// The queue rounds' deployment.
struct Queued<'a> {
    stack: &'a Stack,
    d: &'a crate::stack::Deployment,
    app: &'a App,
    db: &'a tokio_postgres::Client,
    url: &'a str,
}

impl Queued<'_> {
    /// One round: `changes` records changed, `n` workers started, the dispatcher run, until no
    /// integration is claimed (or `limit` has passed: then `finished` is false).
    async fn round(
        &self,
        n: usize,
        changes: usize,
        i: usize,
        limit: Duration,
        integrations: usize,
        started: Instant,
    ) -> Result<Round, Error> {
        let changes_per_round = changes;
        let touched = self
            .stack
            .control(
                reqwest::Method::POST,
                "/_sandbox/fub/touch",
                Some(json!({"count": changes_per_round, "seed": 1000 + i,
                        "set": {"last_name": format!("Round{i}")}})),
            )
            .await?;
        let mut workers = start_workers(&self.d.wiring, self.url, n).await?;
        let before = self
            .stack
            .control(reqwest::Method::GET, "/_sandbox/stats", None)
            .await?;
        let (moto0, pg0, sb0) = (
            self.stack.moto_cpu(),
            self.stack.postgres_cpu(),
            self.stack.sandbox_cpu(),
        );
        let (u0, s0) = crate::procstat::own_cpu();
        let db_start: chrono::DateTime<chrono::Utc> =
            self.db.query_one("SELECT now()", &[]).await?.get(0);
        let t0 = Instant::now();
        let dispatched = scheduled_sync::handle(
            self.app,
            lambda_runtime::LambdaEvent::new(json!({}), lambda_runtime::Context::default()),
        )
        .await
        .map_err(|e| format!("the dispatcher failed: {e}"))?;
        let dispatch_secs = t0.elapsed().as_secs_f64();
        let mut finished = true;
        loop {
            let claimed = count(
                self.db,
                "SELECT count(*) FROM crm_integrations WHERE sync_queue_token IS NOT NULL",
            )
            .await?;
            if claimed == 0 {
                break;
            }
            if t0.elapsed() > limit {
                finished = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // A worker that died ends the round.
            for w in &mut workers {
                if let Some(status) = w.child.try_wait()? {
                    return Err(format!("a scale worker exited: {status}").into());
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let (u1, s1) = crate::procstat::own_cpu();
        let (moto1, pg1, sb1) = (
            self.stack.moto_cpu(),
            self.stack.postgres_cpu(),
            self.stack.sandbox_cpu(),
        );
        let after = self
            .stack
            .control(reqwest::Method::GET, "/_sandbox/stats", None)
            .await?;
        let (handled, failed, cpu_workers) = stop_workers(workers).await?;
        let logs = self
            .db
            .query_one(
                "SELECT count(DISTINCT integration_id) FILTER (WHERE status = 'success'), \
                    count(*) FILTER (WHERE status <> 'success'), \
                    coalesce(sum((metrics->>'totalFetched')::bigint), 0)::bigint, \
                    coalesce(sum((metrics->>'upserted')::bigint), 0)::bigint \
             FROM crm_sync_logs WHERE direction = 'pull' AND created_at >= $1",
                &[&db_start],
            )
            .await?;
        let round = Round {
            workers: n,
            finished,
            changed: touched["touched"].as_u64().unwrap_or(0),
            dispatched: serde_json::to_value(&dispatched)?,
            dispatch_secs,
            secs,
            synced: logs.get::<_, i64>(0) as u64,
            not_ok: logs.get::<_, i64>(1) as u64,
            messages: handled,
            failed_messages: failed,
            fetched: logs.get::<_, i64>(2) as u64,
            upserted: logs.get::<_, i64>(3) as u64,
            crm_requests: fub_stat(&after, "requests") - fub_stat(&before, "requests"),
            served_429: fub_stat(&after, "served_429") - fub_stat(&before, "served_429"),
            cpu_workers,
            cpu_moto: moto1 - moto0,
            cpu_postgres: pg1 - pg0,
            cpu_sandbox: sb1 - sb0,
            cpu_bench: (u1 + s1) - (u0 + s0),
        };
        say(
            started,
            &format!(
                "  {n} worker(s): {} of {integrations} synced in {:.2} s ({:.1} integrations/s; dispatch {:.2} s), \
             {} messages ({} failed), {} CRM requests, CPU: workers {:.1} s, moto {:.1} s, Postgres {:.1} s",
                round.synced,
                round.secs,
                round.rate(),
                round.dispatch_secs,
                round.messages,
                round.failed_messages,
                round.crm_requests,
                round.cpu_workers,
                round.cpu_moto,
                round.cpu_postgres
            ),
        );

        Ok(round)
    }
}

/// A delivery the listener handed to the handler.
struct Handed {
    received: Instant,
    done: Instant,
    body: Vec<u8>,
    status: u16,
}

/// Reads one HTTP/1.1 request (headers, `Content-Length` body) from `stream`.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
) -> Result<(String, Vec<(String, String)>, Vec<u8>), Error> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((path, headers, body))
}

/// Serves deliveries at `listener`: each to `crm-webhook`, as API Gateway would (path, the CRM's
/// headers, the exact body), answered with the handler's status.
fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    handed: tokio::sync::mpsc::UnboundedSender<Handed>,
) {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let app = app.clone();
            let handed = handed.clone();
            tokio::spawn(async move {
                let Ok((path, headers, body)) = read_request(&mut stream).await else {
                    return;
                };
                let received = Instant::now();
                let keep: Vec<(&str, &str)> = headers
                    .iter()
                    .filter(|(k, _)| k == "fub-signature" || k == "content-type")
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let text = String::from_utf8_lossy(&body).into_owned();
                let status = match event("POST", &path, "", &[], &keep, Some(&text)) {
                    Ok(req) => crm_webhook::handle(&app, req).await.status().as_u16(),
                    Err(_) => 400,
                };
                let done = Instant::now();
                let reason = if status < 300 { "OK" } else { "Error" };
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = stream.shutdown().await;
                let _ = handed.send(Handed {
                    received,
                    done,
                    body,
                    status,
                });
            });
        }
    });
}

/// The records of the sandbox's Follow Up Boss account with a phone crmsync can use.
async fn usable_records(stack: &Stack) -> Result<Vec<u64>, Error> {
    let records = stack
        .control(reqwest::Method::GET, "/_sandbox/fub/records", None)
        .await?;
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for r in records["records"].as_array().cloned().unwrap_or_default() {
        let Some(id) = r["id"].as_u64() else { continue };
        let phone = r["phones"]
            .as_array()
            .and_then(|ps| ps.iter().filter_map(Value::as_str).next())
            .and_then(|p| PhoneNumber::parse(p, Region::default()).ok());
        // One record per phone: the row of `contacts` is then that record's.
        if let Some(phone) = phone
            && seen.insert(phone.as_str().to_owned())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

pub async fn latency(stack: &Stack, changes: usize) -> Result<Latency, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let d = stack.deploy().await?;
    let app = Arc::new(
        d.wiring
            .app_with(&[("CRM_WEBHOOK_BASE_URL", base.clone())])
            .await?,
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    serve(listener, app.clone(), tx);
    let ctx = app.context().await.map_err(|e| e.detail().to_owned())?;
    let user = Uuid::new_v4();
    crmsync_app::credentials::connect_api_key(ctx, user, Provider::FollowUpBoss, FUB_API_KEY)
        .await
        .map_err(|e| e.detail())?;
    let hooks = stack
        .control(reqwest::Method::GET, "/_sandbox/fub/webhooks", None)
        .await?;
    if hooks["subscriptions"].as_array().is_none_or(Vec::is_empty) {
        return Err("the integration did not subscribe to the sandbox's webhooks".into());
    }
    let config = stack
        .control(reqwest::Method::GET, "/_sandbox/config", None)
        .await?;
    // The sandbox keeps its journal of changes once its deliverer has seen the subscription.
    let batch_ms = config["webhooks"]["batch_ms"].as_u64().unwrap_or(250);
    tokio::time::sleep(Duration::from_millis(3 * batch_ms + 100)).await;
    let ids = usable_records(stack).await?;
    if ids.is_empty() {
        return Err("the sandbox's account has no record with a usable phone".into());
    }
    let db = crmsync_testkit::connect(&d.db_url).await;
    let find = db
        .prepare(
            "SELECT count(*) FROM contacts c JOIN contact_sources s ON s.contact_id = c.id \
             WHERE c.owner_id = $1 AND s.external_id = $2 AND c.name LIKE $3",
        )
        .await?;
    let mut out = Latency {
        batch_ms,
        ..Default::default()
    };
    let run = Uuid::new_v4().simple().to_string()[..6].to_owned();
    for i in 0..changes {
        let id = ids[i % ids.len()];
        let name = format!("Hook{run}x{i}z");
        let t0 = Instant::now();
        stack
            .control(
                reqwest::Method::POST,
                "/_sandbox/fub/touch",
                Some(json!({"ids": [id], "set": {"last_name": name}})),
            )
            .await?;
        let pattern = format!("%{name}%");
        let external = id.to_string();
        // The delivery that names the record, handed to the handler.
        let handed = loop {
            let h = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .map_err(|_| format!("no delivery within 30 s for change {i}"))?
                .ok_or("the listener stopped")?;
            out.deliveries += 1;
            let body: Value = serde_json::from_slice(&h.body).unwrap_or(Value::Null);
            let names = body["resourceIds"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(id)));
            if names && h.status < 300 {
                break h;
            }
        };
        // The row, as the handler left it (it answers after writing).
        loop {
            let n: i64 = db
                .query_one(&find, &[&user, &external, &pattern])
                .await?
                .get(0);
            if n > 0 {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("change {i} did not reach contacts within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.to_row_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        out.to_delivery_ms
            .push((handed.received - t0).as_secs_f64() * 1000.0);
        out.handler_ms
            .push((handed.done - handed.received).as_secs_f64() * 1000.0);
    }
    drop(app);
    stack.drop_deployment(&d).await?;
    stack
        .control(reqwest::Method::POST, "/_sandbox/fub/reset", None)
        .await?;
    Ok(out)
}
