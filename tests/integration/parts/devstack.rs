//! The local stack, `crmsync-dev dev` (what `make dev` runs), started for real on ports of its own.
//!
//! * It stays up: with `cargo lambda watch`'s timeout at 4 s, called, left idle well past that timeout
//!   twice, and called again each time. Before the fix a function process panicked inside
//!   lambda_runtime when idle for the timeout (`missing lambda-runtime-aws-request-id header`) and
//!   every later request to it hung.
//! * It works the sync queue as Lambda does: the scheduled run puts a message for a connected Lofty
//!   account on the local queue, the stack's poller hands it to `sync-worker`, and the account's
//!   contacts arrive in `contacts` with no other call; the stack says so in one line. A change in the
//!   sandbox's Follow Up Boss reaches `contacts` through its webhook, signed with the system key the
//!   stack configures (`crm-webhook` checks the signature).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WATCH_TIMEOUT_S: u64 = 4;
/// The dev user of every JWT the stack prints.
const DEV_USER: &str = "00000000-0000-4000-8000-00000000d3e0";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct DevStack(Child);

impl Drop for DevStack {
    fn drop(&mut self) {
        // As Ctrl-C: the stack stops what it started.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str, jwt: &str) -> Result<reqwest::StatusCode, String> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(jwt)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| format!("{url}: {e}"))
}

/// A running `crmsync-dev dev`, its ports, the dev JWT and every line it printed so far.
struct Running {
    stack: DevStack,
    dir: std::path::PathBuf,
    api: u16,
    pg: u16,
    sqs: u16,
    sandbox: u16,
    jwt: String,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    fn sandbox_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sandbox)
    }

    fn printed(&self) -> Vec<String> {
        self.printed.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Stops the stack (as Ctrl-C) and removes its state.
    fn stop(self) {
        drop(self.stack);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds and starts `crmsync-dev dev` with `cargo lambda watch`'s timeout at `watch_timeout_s`, and
/// waits for its banner and its first answered call.
async fn start_dev(watch_timeout_s: u64) -> Running {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("crmsync-devstack-{}", uuid::Uuid::new_v4()));
    let api = free_port();
    let pg = free_port();
    let sqs = free_port();
    let sandbox = free_port();
    let pg_bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin"));
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(bin) = pg_bin {
        path = format!("{path}:{}", bin.display());
    }
    // Built first, then run itself (not under `cargo run`, which would not pass Ctrl-C on to it).
    let built = Command::new(env!("CARGO"))
        .args(["build", "--locked", "-q", "-p", "crmsync-devstack"])
        .current_dir(&root)
        .status()
        .expect("cargo builds crmsync-dev");
    assert!(built.success());
    // This test binary is <target>/debug/deps/integration-…; crmsync-dev is <target>/debug/crmsync-dev.
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("crmsync-dev");
    let mut child = Command::new(&binary)
        .arg("dev")
        .current_dir(&root)
        .env("PATH", path)
        .env("DEV_DIR", &dir)
        .env("DEV_PG_PORT", pg.to_string())
        .env("DEV_MOTO_PORT", free_port().to_string())
        .env("DEV_SQS_PORT", sqs.to_string())
        .env("DEV_SANDBOX_PORT", sandbox.to_string())
        .env("DEV_API_PORT", api.to_string())
        .env("DEV_WATCH_TIMEOUT", watch_timeout_s.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("crmsync-dev starts");
    let stdout = child.stdout.take().unwrap();
    let stack = DevStack(child);
    // The banner ends with a curl line that carries the dev JWT. The stack's output is read to its end
    // (a closed pipe would make its goodbye lines fail).
    let (tx, rx) = std::sync::mpsc::channel();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let lines = printed.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if let Some(rest) = line.split("Authorization: Bearer ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(rest.split('\'').next().unwrap_or_default().to_owned()));
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(line);
            }
        }
        if let Some(tx) = tx {
            let all = lines.lock().map(|l| l.join("\n")).unwrap_or_default();
            let _ = tx.send(Err(all));
        }
    });
    let jwt = tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|printed| panic!("crmsync-dev stopped before it was ready:\n{printed}"));
    let url = format!("http://127.0.0.1:{api}/api/integrations");

    // The first calls may time out while cargo lambda watch builds and starts the function.
    let warm_until = Instant::now() + Duration::from_secs(600);
    loop {
        let status = get(&url, &jwt).await;
        if status == Ok(reqwest::StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < warm_until,
            "the first call never succeeded: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Running {
        stack,
        dir,
        api,
        pg,
        sqs,
        sandbox,
        jwt,
        printed,
    }
}

#[tokio::test]
async fn make_dev_answers_after_idling_past_the_watch_timeout() {
    let dev = start_dev(WATCH_TIMEOUT_S).await;
    let (url, jwt) = (dev.url("/api/integrations"), dev.jwt.clone());
    for round in 1..=2 {
        tokio::time::sleep(Duration::from_secs(WATCH_TIMEOUT_S * 3)).await;
        let started = Instant::now();
        assert_eq!(
            get(&url, &jwt).await,
            Ok(reqwest::StatusCode::OK),
            "after idle period {round}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "after idle period {round} the answer took {:?}",
            started.elapsed()
        );
    }
    dev.stop();
}

/// A JSON call; its status and body.
async fn call(
    method: reqwest::Method,
    url: &str,
    jwt: Option<&str>,
    body: Option<&Value>,
) -> (reqwest::StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(120));
    if let Some(jwt) = jwt {
        req = req.bearer_auth(jwt);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn make_dev_feeds_the_sync_queue_to_sync_worker() {
    // Long enough that no sync here is cut off by the emulator.
    let dev = start_dev(60).await;
    let jwt = dev.jwt.clone();
    let db = crmsync_testkit::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/crmsync?sslmode=disable",
        dev.pg
    ))
    .await;
    let user: uuid::Uuid = DEV_USER.parse().unwrap();
    let contacts = async |provider: &str| -> i64 {
        db.query_one(
            "SELECT count(*) FROM contact_sources WHERE owner_id = $1 AND provider = $2",
            &[&user, &provider],
        )
        .await
        .unwrap()
        .get(0)
    };

    // A small Lofty account, connected by API key: nothing synced yet.
    let (status, seeded) = call(
        reqwest::Method::POST,
        &dev.sandbox_url("/_sandbox/lofty/seed"),
        None,
        Some(&json!({"seed": 17, "count": 40})),
    )
    .await;
    assert!(status.is_success(), "seeding Lofty: {status} {seeded}");
    let (status, connected) = call(
        reqwest::Method::POST,
        &dev.url("/api/integrations"),
        Some(&jwt),
        Some(&json!({"provider": "lofty", "apiKey": "sandbox-lofty-key"})),
    )
    .await;
    assert!(
        status.is_success(),
        "connecting Lofty: {status} {connected}"
    );
    let lofty = connected["id"]
        .as_str()
        .or_else(|| connected["integration"]["id"].as_str())
        .unwrap_or_else(|| panic!("no integration id in {connected}"))
        .to_owned();
    assert_eq!(contacts("lofty").await, 0);

    // The scheduled run puts one message on the local queue...
    let enqueued = Instant::now();
    let (status, dispatched) = call(
        reqwest::Method::POST,
        &dev.url("/2015-03-31/functions/scheduled-sync/invocations"),
        None,
        Some(
            &json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.scheduler",
                     "account": "123456789012", "region": "us-east-1", "detail": "{}"}),
        ),
    )
    .await;
    assert!(status.is_success(), "scheduled-sync: {status} {dispatched}");
    assert_eq!(
        dispatched["queued"], 1,
        "the dispatcher's report: {dispatched}"
    );

    // ... and with no other call the contacts arrive: the stack's poller gave it to sync-worker.
    let until = Instant::now() + Duration::from_secs(120);
    let stored = loop {
        let n = contacts("lofty").await;
        let line = dev
            .printed()
            .into_iter()
            .find(|l| l.starts_with("sync queue: sync-worker took message") && l.contains(&lofty));
        if n > 0
            && let Some(line) = line
        {
            break (n, line);
        }
        assert!(
            Instant::now() < until,
            "no contacts from the queued sync within 120 s (contacts {n}); the stack printed:\n{}",
            dev.printed().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = enqueued.elapsed();
    let (n, line) = stored;
    assert!(
        line.contains("(receive 1, schedule of integration") && line.contains("1 done and deleted"),
        "{line}"
    );
    assert!(!line.contains("failed"), "{line}");
    // Every seeded record with a usable phone, once (the sync log says how many it wrote).
    let (_, logs) = call(
        reqwest::Method::GET,
        &dev.url(&format!("/api/integrations/{lofty}/logs")),
        Some(&jwt),
        None,
    )
    .await;
    let pulls: Vec<&Value> = logs["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["direction"] == "pull")
        .collect();
    assert_eq!(pulls.len(), 1, "{logs}");
    assert_eq!(pulls[0]["trigger"], "schedule");
    assert_eq!(pulls[0]["status"], "success");
    assert!(n >= 30, "only {n} of 40 Lofty records stored");
    let metrics = &pulls[0]["metrics"];
    assert_eq!(metrics["totalFetched"], 40, "{metrics}");
    assert_eq!(metrics["skipped"].as_i64(), Some(40 - n), "{metrics}");
    assert_eq!(contacts("lofty").await, n);
    println!(
        "devstack: enqueue to {n} Lofty contacts in contacts: {:.2} s ({line})",
        took.as_secs_f64()
    );

    // A Follow Up Boss change comes in as a signed webhook (through the queue's stack, not a sync).
    let (status, connected) = call(
        reqwest::Method::POST,
        &dev.url("/api/integrations"),
        Some(&jwt),
        Some(&json!({"provider": "followupboss", "apiKey": "sandbox-fub-key"})),
    )
    .await;
    assert!(
        status.is_success(),
        "connecting Follow Up Boss: {status} {connected}"
    );
    let (_, list) = call(
        reqwest::Method::GET,
        &dev.url("/api/integrations"),
        Some(&jwt),
        None,
    )
    .await;
    let fub = list["integrations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["provider"] == "followupboss")
        .cloned()
        .unwrap_or_else(|| panic!("no Follow Up Boss integration in {list}"));
    assert_eq!(fub["updates"], "live", "{fub}");
    let changed = Instant::now();
    let (status, touched) = call(
        reqwest::Method::POST,
        &dev.sandbox_url("/_sandbox/fub/touch"),
        None,
        Some(
            &json!({"count": 1, "seed": 5, "set": {"first_name": "Queue", "last_name": "Webhook",
                                                   "phones": ["+1 415 555 0142"]}}),
        ),
    )
    .await;
    assert!(
        status.is_success(),
        "touching a FUB record: {status} {touched}"
    );
    let touched_id = touched["ids"][0].as_u64().expect("a touched id");
    let id = touched_id.to_string();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_opt(
                "SELECT name FROM contact_sources WHERE owner_id = $1 AND provider = 'followupboss' AND external_id = $2",
                &[&user, &id],
            )
            .await
            .unwrap();
        if let Some(row) = row
            && row.get::<_, Option<String>>(0).as_deref() == Some("Queue Webhook")
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the Follow Up Boss change did not arrive within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = changed.elapsed();
    let (_, hooks) = call(
        reqwest::Method::GET,
        &dev.sandbox_url("/_sandbox/fub/webhooks"),
        None,
        None,
    )
    .await;
    let deliveries: Vec<&Value> = hooks["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|x| x.as_u64() == Some(touched_id)))
        })
        .collect();
    assert!(
        !deliveries.is_empty()
            && deliveries
                .iter()
                .all(|d| d["ok"] == true && d["status"] == 200),
        "the signed deliveries were not all accepted: {hooks}"
    );
    println!(
        "devstack: Follow Up Boss change to contacts through its signed webhook: {:.2} s",
        took.as_secs_f64()
    );

    // A message the worker fails is kept, received again, and after 4 receives dead-lettered, as the
    // template's redrive policy says; the stack stays up. (The queue's visibility timeout is cut to
    // 1 s here, as an operator could, so the receives come at once.)
    let failed_line = |id: &str| -> Option<String> {
        dev.printed()
            .into_iter()
            .find(|l| l.contains(&id[..8]) && l.contains("1 failed (kept"))
    };
    let sqs = aws_sdk_sqs::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", dev.sqs))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "dev", "dev", None, None, "static",
            ))
            .load()
            .await,
    );
    let url_of = async |name: &str| -> String {
        sqs.get_queue_url()
            .queue_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the queue {name}: {e:?}"))
            .queue_url
            .unwrap()
    };
    let (queue, dead_letters) = (
        url_of("crmsync-dev-sync").await,
        url_of("crmsync-dev-sync-dlq").await,
    );
    sqs.set_queue_attributes()
        .queue_url(&queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .send()
        .await
        .unwrap();
    // moto reads the visibility timeout when a long poll starts: the poll already waiting takes a
    // first message with the old one. Once its line is out, the poller's next poll has the new one.
    let decoy = sqs
        .send_message()
        .queue_url(&queue)
        .message_body(r#"{"not":"a sync message either"}"#)
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while failed_line(&decoy).is_none() {
        assert!(
            Instant::now() < until,
            "the first failing message was not worked within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = Instant::now();
    let bad = sqs
        .send_message()
        .queue_url(&queue)
        .message_body(r#"{"not":"a sync message"}"#)
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let dead = sqs
            .receive_message()
            .queue_url(&dead_letters)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if dead.iter().any(|m| m.message_id() == Some(bad.as_str())) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the failing message was not dead-lettered within 60 s; the stack printed:\n{}",
            dev.printed().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failures: Vec<String> = dev
        .printed()
        .into_iter()
        .filter(|l| l.contains(&bad[..8]))
        .collect();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    println!(
        "devstack: a failing message received 4 times, then dead-lettered: {:.2} s",
        sent.elapsed().as_secs_f64()
    );
    for (i, line) in failures.iter().enumerate() {
        assert!(
            line.contains(&format!("(receive {}, not a sync message", i + 1))
                && line.contains("0 done and deleted, 1 failed (kept"),
            "{line}"
        );
    }
    let (status, _) = call(
        reqwest::Method::GET,
        &dev.url("/api/integrations"),
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the stack after the failures"
    );

    dev.stop();
}
