//! Crashes: a sync in a process of its own (`crmsync-sync-once`, the `contacts-sync` handler), killed
//! with SIGKILL at a random moment, many times over; every resumed run goes on from the last page saved,
//! and the last one ends with exactly the rows a fault-free sync gives (nothing lost, nothing doubled).
//! `make test` kills a few times against the in-process sandbox; `make soak` kills `SOAK_KILLS` times
//! (default 50) against a separate `crm-sandbox` process. And a sync dropped mid-way in the process (as
//! by a Lambda timeout) resumes where it stopped.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::env::{Env, JWT_SECRET, Route, sandbox_provider};
use crate::support::rows::{
    assert_same, assert_subset, difference, expected, expected_from, report, stored, sync,
    sync_path,
};

/// A tiny deterministic generator (xorshift), so a run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Starts one sync of `provider` for `user` in a child process.
pub(crate) fn spawn_sync(
    env: &Env,
    moto: &str,
    user: Uuid,
    provider: Provider,
) -> tokio::process::Child {
    let s = &env.settings;
    tokio::process::Command::new(env!("CARGO_BIN_EXE_crmsync-sync-once"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_SECRET_ID", &s.app_secret_id)
        .env("RATE_LIMIT_TABLE", &s.rate_limit_table)
        .env("CRM_SANDBOX_URL", crm_sandbox_url(env))
        .env("NEXT_PUBLIC_BASE_URL", "http://127.0.0.1:3004")
        .env("AWS_ENDPOINT_URL", moto)
        .env("SYNC_USER", user.to_string())
        .env("SYNC_PROVIDER", provider.as_str())
        .env("SYNC_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("crmsync-sync-once starts")
}

fn crm_sandbox_url(env: &Env) -> String {
    // The settings' CRM endpoints all start with the sandbox's base URL.
    let lofty = &env.settings.crm.lofty.api_base;
    lofty.trim_end_matches("/lofty").to_owned()
}

/// Empties `user`'s `contacts-sync` bucket record in DynamoDB, as a minute passing would refill it.
async fn refill_sync_limit(env: &Env, user: Uuid) {
    aws_sdk_dynamodb::Client::new(&env.aws)
        .delete_item()
        .table_name(&env.settings.rate_limit_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("caller:{user}:contacts-sync")),
        )
        .send()
        .await
        .unwrap();
}

/// The answer a child printed last, after its metric lines (waiting without blocking the runtime: the
/// in-process sandbox runs on it).
async fn answer(child: tokio::process::Child) -> Value {
    let out = child.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null)
}

/// Kills the sync of `user` `kills` times at random moments, then runs it to the end. Before each run,
/// `touch` records of the CRM change (so that an incremental sync has work to be killed in). A kill
/// lands at a random moment within a window that follows the length of the runs (`first_ms` at
/// first). Returns (kills that landed mid-sync, runs that finished before their kill, 409s).
#[allow(clippy::too_many_arguments)]
async fn kill_loop(
    env: &Env,
    sandbox_url: &str,
    user: Uuid,
    provider: Provider,
    kills: usize,
    touch: usize,
    first_ms: u64,
    seed: u64,
) -> (usize, usize, usize) {
    let moto = crmsync_testkit::moto().await.endpoint();
    let name = sandbox_provider(provider).name();
    let http = reqwest::Client::new();
    let records = async || -> BTreeMap<String, String> {
        let url = format!("{sandbox_url}/_sandbox/{name}/records");
        let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        expected_from(provider, body["records"].as_array().unwrap())
    };
    let phones: BTreeMap<String, String> = records().await;
    let mut rng = Rng(seed | 1);
    let (mut landed, mut finished, mut busy) = (0, 0, 0);
    let mut window_ms = first_ms;
    let mut finished_before = 0;
    let mut rows_seen = Vec::new();
    for i in 0..kills {
        if touch > 0 {
            let changed = http
                .post(format!("{sandbox_url}/_sandbox/{name}/touch"))
                .json(&serde_json::json!({"count": touch, "seed": seed + i as u64,
                                          "set": {"last_name": format!("Kill{i}")}}))
                .send()
                .await
                .unwrap();
            assert!(changed.status().is_success());
        }
        // 6 syncs a minute per user: each run here stands for a sync a while after the last one.
        refill_sync_limit(env, user).await;
        let started = Instant::now();
        let mut child = spawn_sync(env, &moto, user, provider);
        let at = Duration::from_millis(50 + rng.below(window_ms));
        tokio::time::sleep(at).await;
        match child.try_wait().unwrap() {
            Some(_) => {
                let a = answer(child).await;
                if a["status"] == 409 {
                    busy += 1;
                } else {
                    assert_eq!(a["status"], 200, "{provider}: {a}");
                    finished += 1;
                }
            }
            None => {
                child.kill().await.unwrap(); // SIGKILL, then reaped
                landed += 1;
            }
        }
        // Aim the kills at the run's length: a run that finished before its kill shrinks the window
        // to when it was seen done; a kill that landed widens it a little, to reach later pages too.
        if landed + busy + finished == i + 1 && finished > finished_before {
            window_ms = (started.elapsed().as_millis() as u64).max(200);
        } else {
            window_ms = window_ms * 11 / 10;
        }
        finished_before = finished;
        let now = stored(env, user).await;
        // Phones never change (touches change names): every stored phone is one the CRM has.
        assert_subset(&now, &phones, "after a kill");
        rows_seen.push(now.len());
    }
    // The last run, not killed. (A killed sync's lock goes with its connection; Postgres may take a
    // moment to see the connection closed, so a 409 here is retried.)
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        refill_sync_limit(env, user).await;
        let a = answer(spawn_sync(env, &moto, user, provider)).await;
        if a["status"] == 200 {
            break;
        }
        assert_eq!(a["status"], 409, "the last run: {a}");
        busy += 1;
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = records().await;
    let got = stored(env, user).await;
    if let Some(diff) = difference(&got, &want) {
        panic!("{provider} after {kills} kills: {diff}");
    }
    assert_same(&got, &want, "after the kills");
    println!("{provider}: rows after each kill: {rows_seen:?}");
    (landed, finished, busy)
}

async fn crash_run(
    env: &Env,
    sandbox_url: &str,
    provider: Provider,
    kills: usize,
    touch: usize,
    first_ms: u64,
) {
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let started = Instant::now();
    let seed = 0x5eed ^ kills as u64;
    let (landed, finished, busy) = kill_loop(
        env,
        sandbox_url,
        user,
        provider,
        kills,
        touch,
        first_ms,
        seed,
    )
    .await;
    let rows = stored(env, user).await.len();
    assert!(landed > 0, "{provider}: at least one kill landed mid-sync");
    report(format!(
        "crash/{provider}: {kills} runs killed at random (SIGKILL; {landed} mid-sync, {finished} had \
         finished, {busy} answered 409 while a killed one's lock was released; {touch} records changed \
         before each run), then one to the end: {rows} rows, equal to a fault-free sync; 0 lost, 0 \
         doubled ({:?})",
        started.elapsed()
    ));
}

#[tokio::test]
async fn a_sync_process_killed_at_random_pages_resumes_with_nothing_lost_or_doubled() {
    let env = Env::start().await;
    for (i, provider) in [Provider::FollowUpBoss, Provider::Rex]
        .into_iter()
        .enumerate()
    {
        env.sandbox
            .seed(sandbox_provider(provider), 60 + i as u64, 3_000);
        env.sandbox
            .set_faults(
                sandbox_provider(provider),
                crm_sandbox::FaultConfig {
                    latency_ms: 40,
                    ..Default::default()
                },
            )
            .unwrap();
        crash_run(&env, &env.sandbox.base_url, provider, 4, 0, 1_200).await;
    }
}

/// The `crm-sandbox` binary next to this test binary (built by `make soak`), or built now.
fn crm_sandbox_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.ancestors().nth(2).unwrap().join("crm-sandbox");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "crm-sandbox"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p crm-sandbox");
    }
    bin
}

/// A `crm-sandbox` process, seeded, stopped when dropped.
struct SandboxProcess {
    child: std::process::Child,
    url: String,
}

impl SandboxProcess {
    fn start(seed: u64, count: usize) -> SandboxProcess {
        use std::io::BufRead as _;
        let mut child = Command::new(crm_sandbox_binary())
            .args([
                "--port",
                "0",
                "--auto-approve",
                "--seed",
                &seed.to_string(),
                "--count",
                &count.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("crm-sandbox starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("crm-sandbox listening on ")
            .unwrap_or_else(|| panic!("crm-sandbox said {line:?}"))
            .to_owned();
        SandboxProcess { child, url }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "soak: run by `make soak`"]
async fn soak_sync_processes_killed_many_times() {
    let kills: usize = std::env::var("SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let sandbox = SandboxProcess::start(77, 5_000);
    let env = Env::start_against(&sandbox.url).await;
    let client = reqwest::Client::new();
    // Kills, not rate limits, are tried here: Lofty's 100 calls a minute would stop a run of 50 syncs
    // of 50 pages each (its 429s are tried in `faults.rs`).
    let raised = client
        .put(format!("{}/_sandbox/config", sandbox.url))
        .json(&serde_json::json!({"lofty": {"rate_limit_per_minute": 1_000_000}}))
        .send()
        .await
        .unwrap();
    assert!(
        raised.status().is_success(),
        "{}",
        raised.text().await.unwrap()
    );
    for provider in [Provider::FollowUpBoss, Provider::Rex, Provider::Lofty] {
        let name = sandbox_provider(provider).name();
        let latency = if provider == Provider::Lofty { 80 } else { 40 };
        let put = client
            .put(format!("{}/_sandbox/{name}/faults", sandbox.url))
            .json(&serde_json::json!({"latency_ms": latency}))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
        // 1,500 records change before each run: REX reads only those, the others read all 5,000.
        crash_run(&env, &sandbox.url, provider, kills, 1_500, 3_000).await;
    }
}

/// Drops a sync of `provider` part-way (its future, as a Lambda timeout does), then syncs again:
/// nothing lost or doubled, and the resumed sync reads only what the dropped one had not stored.
async fn dropped_sync_resumes(provider: Provider) {
    let env = Env::start().await;
    env.sandbox.seed(sandbox_provider(provider), 3, 4_000);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    // Slow pages, so the sync can be killed part-way.
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            crm_sandbox::FaultConfig {
                latency_ms: 40,
                ..Default::default()
            },
        )
        .unwrap();

    let stored_before_kill = {
        let path = sync_path(provider);
        let sync_call = env.as_user(user, Route::ContactsSync, "POST", &path, "");
        tokio::pin!(sync_call);
        loop {
            tokio::select! {
                _ = &mut sync_call => panic!("the sync finished before it could be killed"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    let n = env.store.list_contacts(user).await.unwrap().len();
                    if n > 300 { break n; }
                }
            }
        }
        // Leaving this block drops the sync's future: killed mid-way, as by a Lambda timeout.
    };
    env.sandbox
        .set_faults(sandbox_provider(provider), Default::default())
        .unwrap();

    let resumed = sync(&env, user, provider).await;
    assert_eq!(
        resumed.status,
        StatusCode::OK,
        "sync of {provider}: {:?}",
        resumed.body
    );
    let resumed = resumed.body;
    let want = expected(&env, provider).await;
    assert!(stored_before_kill < want.len());
    assert_same(&stored(&env, user).await, &want, provider.as_str());
    // Every row stored before the kill came from a record the resumed sync does not read again.
    assert!(
        resumed["totalFetched"].as_u64().unwrap() <= 4_000 - stored_before_kill as u64,
        "{provider}: the resumed sync continues where the killed one stopped: {resumed}"
    );
}

#[tokio::test]
async fn a_followupboss_sync_dropped_mid_way_resumes_with_nothing_lost_or_doubled() {
    dropped_sync_resumes(Provider::FollowUpBoss).await;
}

#[tokio::test]
async fn a_rex_sync_dropped_mid_way_resumes_with_nothing_lost_or_doubled() {
    dropped_sync_resumes(Provider::Rex).await;
}
