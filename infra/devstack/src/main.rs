//! `crmsync-dev`: the local stack, and the demo that runs the main job on it.
//!
//! * `crmsync-dev dev` starts Postgres (its cluster kept in `.dev/pg`), moto with the rate-limit table
//!   and the configuration secret, a second moto with the sync queue and its dead-letter queue, the CRM
//!   sandbox, `cargo lambda watch` serving every function at the same paths as API Gateway, and a
//!   poller that feeds the sync queue to `sync-worker` as Lambda's event source does ([`queue`]);
//!   prints the URLs and a dev JWT; stops everything on Ctrl-C.
//! * `crmsync-dev demo` starts the same stack, connects REX and Follow Up Boss through their OAuth
//!   flows and Lofty by API key, syncs contacts from REX and Follow Up Boss, runs the scheduled run,
//!   whose message for Lofty `sync-worker` takes from the queue, posts a lead to the webhook and shows
//!   it arriving in the three CRMs, prints the sync logs, stops the stack and exits 0.
//!
//! No AWS account and no CRM credentials are needed: AWS is moto, the CRMs are the sandbox.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crm_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use serde_json::{Value, json};
use uuid::Uuid;

mod queue;

const PG_PORT: Port = Port("DEV_PG_PORT", 54329);
const MOTO_PORT: Port = Port("DEV_MOTO_PORT", 5055);
/// moto for SQS alone (see [`SQS_LAUNCHER`]).
const SQS_PORT: Port = Port("DEV_SQS_PORT", 5056);
const SANDBOX_PORT: Port = Port("DEV_SANDBOX_PORT", 8787);
const API_PORT: Port = Port("DEV_API_PORT", 9000);
/// How long `cargo lambda watch` waits for a function's answer (`DEV_WATCH_TIMEOUT`, seconds).
const WATCH_TIMEOUT: Port = Port("DEV_WATCH_TIMEOUT", 120);
/// The sync queue's visibility timeout (`DEV_QUEUE_VISIBILITY`, seconds): the template's 1,800 s is 6
/// times the worker's 300 s timeout; locally a failed message comes back after one worker timeout.
const QUEUE_VISIBILITY: Port = Port("DEV_QUEUE_VISIBILITY", 300);
/// `sync-worker` invocations at once (`DEV_SYNC_WORKER_CONCURRENCY`): the template's
/// `SyncWorkerConcurrency` at its least. `cargo lambda watch` runs up to this many instances of a
/// function.
const SYNC_WORKER_CONCURRENCY: Port = Port("DEV_SYNC_WORKER_CONCURRENCY", 2);
const SECRET_ID: &str = "crmsync/dev";
const TABLE: &str = "crmsync-dev-rate-limits";
/// The database of `dev` (kept between runs) and of `demo` (made afresh each run).
const DEV_DATABASE: &str = "crmsync";
const DEMO_DATABASE: &str = "crmsync_demo";
/// The dev user every printed JWT and demo call acts as.
const DEV_USER: &str = "00000000-0000-4000-8000-00000000d3e0";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A port of the stack: its default, unless the environment variable named here gives another (so a
/// second stack, or the test of this one, can run beside `make dev`).
#[derive(Clone, Copy)]
struct Port(&'static str, u16);

impl Port {
    fn get(self) -> u16 {
        std::env::var(self.0)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.1)
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// The clone this stack serves: `CRMSYNC_ROOT` if set, else the nearest directory at or above the
/// working directory that holds crmsync's workspace (`infra/devstack` and `functions/`). Found at run
/// time, not compiled in: clones sharing one build cache share this binary.
fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRMSYNC_ROOT") {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join("infra/devstack/Cargo.toml").is_file() && d.join("functions").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or(cwd)
}

/// Prints a step and how long it took.
async fn step<T, F: std::future::Future<Output = Result<T, Error>>>(
    what: &str,
    f: F,
) -> Result<T, Error> {
    println!("→ {what}…");
    let started = Instant::now();
    let out = f.await?;
    println!("  ✓ {what} ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(out)
}

/// What `dev` and `demo` start; stopped (in reverse) when dropped, even on an error.
struct Stack {
    pg: crmsync_testkit::PgServer,
    moto: Child,
    /// moto serving SQS (threaded, so a long poll holds one thread, not the emulator).
    sqs_moto: Option<Child>,
    queues: Option<queue::SyncQueues>,
    sandbox: Option<SandboxHandle>,
    watch: Option<Child>,
    poller: Option<tokio::task::JoinHandle<()>>,
    secrets: Value,
}

impl Drop for Stack {
    fn drop(&mut self) {
        println!("→ stopping the stack…");
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
        if let Some(mut watch) = self.watch.take() {
            // An interrupt makes cargo lambda watch stop the functions it started, then exit.
            let pid = watch.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = watch.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = watch.kill();
            let _ = watch.wait();
        }
        drop(self.sandbox.take());
        if let Some(mut sqs) = self.sqs_moto.take() {
            let _ = sqs.kill();
            let _ = sqs.wait();
        }
        let _ = self.moto.kill();
        let _ = self.moto.wait();
        self.pg.stop();
        println!("  ✓ stopped");
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect::<String>()[..bytes * 2]
        .to_owned()
}

/// The dev secret, made once and kept in `.dev/secrets.json` (the database keeps data sealed with it).
fn dev_secrets(dir: &Path) -> Result<Value, Error> {
    let path = dir.join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(serde_json::from_str(&text)?);
    }
    use base64::Engine as _;
    let webhook = base64::engine::general_purpose::STANDARD.encode(random_hex(24));
    let secrets = json!({
        "database_url": format!("postgres://postgres@127.0.0.1:{PG_PORT}/{DEV_DATABASE}?sslmode=disable"),
        "jwt_secret": format!("dev-{}", random_hex(24)),
        "encryption_key": random_hex(32),
        "webhook_secret": format!("whsec_{webhook}"),
        "rex_client_id": "sandbox-rex-client",
        "rex_client_secret": "sandbox-rex-secret",
        "followupboss_client_id": "sandbox-fub-client",
        "followupboss_client_secret": "sandbox-fub-secret",
        "followupboss_system": "crmsync",
        "followupboss_system_key": "sandbox-system-key",
    });
    std::fs::write(&path, serde_json::to_string_pretty(&secrets)?)?;
    Ok(secrets)
}

fn env_file(dir: &Path, queues: &queue::SyncQueues) -> Result<PathBuf, Error> {
    let path = dir.join("lambda.env");
    let vars = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{MOTO_PORT}")),
        // SQS is the second moto's (the SDK's service-specific endpoint).
        (
            "AWS_ENDPOINT_URL_SQS",
            format!("http://127.0.0.1:{SQS_PORT}"),
        ),
        // Every function that sends to the queue has it, as the template's Globals give it.
        ("SYNC_QUEUE_URL", queues.url.clone()),
        // `cargo lambda watch` gives no deadline and cuts an invocation off after its `--timeout`:
        // `sync-worker` stops (and queues its continuation) before that.
        ("FUNCTION_TIMEOUT_SECONDS", WATCH_TIMEOUT.get().to_string()),
        (
            "SYNC_CLAIM_TTL_SECONDS",
            queues.claim_ttl().as_secs().to_string(),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "dev".into()),
        ("AWS_SECRET_ACCESS_KEY", "dev".into()),
        ("APP_SECRET_ID", SECRET_ID.into()),
        ("RATE_LIMIT_TABLE", TABLE.into()),
        (
            "CRM_SANDBOX_URL",
            format!("http://127.0.0.1:{SANDBOX_PORT}"),
        ),
        ("REX_MOCK", "1".into()),
        (
            "NEXT_PUBLIC_BASE_URL",
            format!("http://127.0.0.1:{API_PORT}"),
        ),
        (
            "POST_CONNECT_URL",
            format!("http://127.0.0.1:{API_PORT}/dashboard/integrations"),
        ),
        // Connected integrations subscribe to the sandbox's webhooks, which call the local API.
        (
            "CRM_WEBHOOK_BASE_URL",
            format!("http://127.0.0.1:{API_PORT}"),
        ),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ];
    // Quoted: values such as RUST_LOG filters contain `=` and `,`.
    let text: String = vars
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('"', "\\\"")))
        .collect();
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn aws(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "dev", "dev", None, None, "static",
        ))
        .load()
        .await
}

/// Fails with a clear sentence if one of the stack's ports is taken (another stack, or a stray process).
fn check_ports() -> Result<(), Error> {
    for (port, what) in [
        (PG_PORT.get(), "Postgres"),
        (MOTO_PORT.get(), "moto"),
        (SQS_PORT.get(), "moto's SQS"),
        (SANDBOX_PORT.get(), "the CRM sandbox"),
        (API_PORT.get(), "the API"),
    ] {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Err(format!(
                "port {port} (for {what}) is already in use: is another `make dev` running? Stop it first."
            )
            .into());
        }
    }
    Ok(())
}

/// Starts everything but `cargo lambda watch`.
async fn start_services(
    dir: &Path,
    seed: bool,
    database: &'static str,
    fresh: bool,
) -> Result<Stack, Error> {
    check_ports()?;
    let mut secrets = dev_secrets(dir)?;
    secrets["database_url"] = json!(format!(
        "postgres://postgres@127.0.0.1:{PG_PORT}/{database}?sslmode=disable"
    ));
    let pg = step(
        &format!("starting Postgres on 127.0.0.1:{PG_PORT} (cluster in .dev/pg)"),
        async {
            Ok(crmsync_testkit::start_postgres_at(
                &dir.join("pg"),
                PG_PORT.get(),
                true,
            )?)
        },
    )
    .await?;
    let moto = crmsync_testkit::moto_command("127.0.0.1", MOTO_PORT.get())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let moto = match moto {
        Ok(child) => child,
        Err(e) => {
            pg.stop();
            return Err(format!(
                "cannot run python3 for moto ({e}): install it with `pip install 'moto[server]'`"
            )
            .into());
        }
    };
    let mut stack = Stack {
        pg,
        moto,
        sqs_moto: None,
        queues: None,
        sandbox: None,
        watch: None,
        poller: None,
        secrets,
    };

    step("migrating the database", async {
        let admin = crmsync_testkit::connect(&stack.pg.url("postgres")).await;
        if fresh {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await?;
        }
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await?;
        if exists.is_none() {
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await?;
        }
        let store = crmsync_store::Store::connect(&stack.pg.url(database), 2)?;
        store.migrate().await?;
        Ok(())
    })
    .await?;

    step(
        &format!("starting moto on 127.0.0.1:{MOTO_PORT} (table {TABLE}, secret {SECRET_ID})"),
        async {
            if !crmsync_testkit::wait_for_port(MOTO_PORT.get(), Duration::from_secs(30)) {
                return Err("moto_server did not start listening".into());
            }
            let conf = aws(&format!("http://127.0.0.1:{MOTO_PORT}")).await;
            crmsync_aws::limiter::create_table(&aws_sdk_dynamodb::Client::new(&conf), TABLE)
                .await?;
            aws_sdk_secretsmanager::Client::new(&conf)
                .create_secret()
                .name(SECRET_ID)
                .secret_string(stack.secrets.to_string())
                .send()
                .await?;
            Ok(())
        },
    )
    .await?;

    let queues = step(
        &format!(
            "starting moto's SQS on 127.0.0.1:{SQS_PORT} (queues {}, {})",
            queue::QUEUE,
            queue::DEAD_LETTER_QUEUE
        ),
        async {
            let child = Command::new("python3")
                .args(["-c", SQS_LAUNCHER, "127.0.0.1", &SQS_PORT.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run python3 for moto ({e})"))?;
            stack.sqs_moto = Some(child);
            if !crmsync_testkit::wait_for_port(SQS_PORT.get(), Duration::from_secs(30)) {
                return Err("moto_server (SQS) did not start listening".into());
            }
            let sqs = aws_sdk_sqs::Client::new(&aws(&format!("http://127.0.0.1:{SQS_PORT}")).await);
            queue::create(&sqs, Duration::from_secs(u64::from(QUEUE_VISIBILITY.get()))).await
        },
    )
    .await?;
    stack.queues = Some(queues);

    let sandbox = step(
        &format!("starting the CRM sandbox on 127.0.0.1:{SANDBOX_PORT}"),
        async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", SANDBOX_PORT.get())).await?;
            let mut config = SandboxConfig {
                auto_approve: true,
                ..Default::default()
            };
            // Follow Up Boss signs its webhooks with the system key: the one the stack's secret gives
            // the functions, so `crm-webhook` checks every delivery's signature.
            if let Some(key) = stack.secrets["followupboss_system_key"].as_str() {
                config.fub.system_key = key.to_owned();
            }
            if let Some(system) = stack.secrets["followupboss_system"].as_str() {
                config.fub.system = system.to_owned();
            }
            let sandbox = Sandbox::spawn_on(listener, config)?;
            if seed {
                use crm_sandbox::config::Provider as P;
                for (p, count) in [(P::Rex, 2_000), (P::Fub, 2_000), (P::Lofty, 1_000)] {
                    sandbox.seed(p, 42, count);
                }
            }
            Ok(sandbox)
        },
    )
    .await?;
    stack.sandbox = Some(sandbox);
    Ok(stack)
}

/// Builds every function (so the first request does not wait for a compile), then starts
/// `cargo lambda watch` serving them at the API paths of Cargo.toml's router.
///
/// Each function is built on its own, as `cargo lambda watch` builds it (`--bin <function>`): built
/// together, cargo unifies their dependencies' features differently, and the watch would build every
/// function a second time on its first request.
async fn start_functions(stack: &mut Stack, dir: &Path) -> Result<(), Error> {
    let root = root();
    step(
        "building the functions (the first build takes a few minutes)",
        async {
            for f in functions(&root)? {
                let status = Command::new("cargo")
                    .args(["build", "--bin", &f])
                    .current_dir(&root)
                    .status()?;
                if !status.success() {
                    return Err(format!("building the function {f} failed").into());
                }
            }
            Ok(())
        },
    )
    .await?;
    let queues = stack
        .queues
        .clone()
        .ok_or("the sync queue was not created")?;
    let env = env_file(dir, &queues)?;
    step(&format!("starting cargo lambda watch on 127.0.0.1:{API_PORT}"), async {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dir.join("watch.log"))?;
        let child = Command::new("cargo")
            .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &API_PORT.to_string(), "--timeout", &WATCH_TIMEOUT.to_string(), "--concurrency", &SYNC_WORKER_CONCURRENCY.to_string(), "--env-file"])
            .arg(&env)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run cargo lambda watch ({e}): install it with `pip install cargo-lambda`"))?;
        stack.watch = Some(child);
        if !crmsync_testkit::wait_for_port(API_PORT.get(), Duration::from_secs(60)) {
            return Err("cargo lambda watch did not start listening (see .dev/watch.log)".into());
        }
        Ok(())
    })
    .await?;
    let concurrency = usize::from(SYNC_WORKER_CONCURRENCY.get()).max(1);
    step(
        &format!(
            "feeding the sync queue to sync-worker ({concurrency} at once, {} message a batch)",
            queue::BATCH_SIZE
        ),
        async {
            let sqs = aws_sdk_sqs::Client::new(&aws(&format!("http://127.0.0.1:{SQS_PORT}")).await);
            stack.poller = Some(
                queue::Poller {
                    sqs,
                    queues,
                    invoke_url: format!(
                        "http://127.0.0.1:{API_PORT}/2015-03-31/functions/sync-worker/invocations"
                    ),
                    invoke_timeout: Duration::from_secs(u64::from(WATCH_TIMEOUT.get()) + 10),
                    concurrency,
                }
                .spawn(),
            );
            Ok(())
        },
    )
    .await
}

/// moto serving one request per thread: SQS's long polls (`WaitTimeSeconds`) wait inside moto, so on
/// the one-request-at-a-time moto of DynamoDB (see `crmsync_testkit::moto_command`) a poll would hold
/// every other AWS call of the stack. Only SQS is used on this one.
const SQS_LAUNCHER: &str = r#"
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=True)
"#;

/// The function crates: every directory of `functions/`.
fn functions(root: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("functions"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn dev_jwt(secrets: &Value, hours: u64) -> Result<String, Error> {
    let secret = secrets["jwt_secret"]
        .as_str()
        .ok_or("jwt_secret missing from .dev/secrets.json")?;
    let user = Uuid::parse_str(DEV_USER)?;
    Ok(crmsync_lambda::auth::mint_token(
        secret,
        user,
        hours * 3600,
    )?)
}

fn banner(stack: &Stack) -> Result<String, Error> {
    let jwt = dev_jwt(&stack.secrets, 24)?;
    Ok(format!(
        "\ncrmsync is running locally.\n\
         \n  API (every function, API Gateway paths)  http://127.0.0.1:{API_PORT}/api/integrations\
         \n  CRM sandbox (REX, Follow Up Boss, Lofty)  http://127.0.0.1:{SANDBOX_PORT}/_sandbox\
         \n  Postgres                                  {}\
         \n  moto (DynamoDB, Secrets Manager)          http://127.0.0.1:{MOTO_PORT}\
         \n  moto (SQS: sync queue, dead-letter queue) {}\
         \n  function logs                             .dev/watch.log\
         \n\n  dev user {DEV_USER}; JWT valid 24 h:\n  {jwt}\
         \n\n  try:  curl -s -H 'Authorization: Bearer {jwt}' http://127.0.0.1:{API_PORT}/api/integrations\
         \n        open http://127.0.0.1:{API_PORT}/api/integrations/rex/oauth/start with the cookie alto_admin={jwt}\n",
        stack.secrets["database_url"].as_str().unwrap_or_default(),
        stack.queues.as_ref().map_or("-", |q| q.url.as_str()),
    ))
}

#[tokio::main]
async fn main() {
    let command = std::env::args().nth(1).unwrap_or_else(|| "dev".into());
    let result = match command.as_str() {
        "dev" => dev().await,
        "demo" => demo().await,
        "migrate" => migrate(std::env::args().nth(2)).await,
        other => Err(format!(
            "unknown command `{other}`: use `dev`, `demo` or `migrate <DATABASE_URL>`"
        )
        .into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Applies `infra/migrations` to a database (a deployed one: `DATABASE_URL`, or the first argument),
/// through refinery, as the functions expect them.
async fn migrate(url: Option<String>) -> Result<(), Error> {
    let url = url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or("give the database URL: `crmsync-dev migrate postgres://…` or DATABASE_URL")?;
    // A dashboard `contacts` table is adopted; its rows go to this user, when given.
    let owner = match std::env::var("ADOPT_CONTACTS_OWNER") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<uuid::Uuid>()
                .map_err(|_| "ADOPT_CONTACTS_OWNER must be the dashboard user's id (a UUID)")?,
        ),
        _ => None,
    };
    step("applying infra/migrations", async {
        crmsync_store::Store::connect(&url, 1)?
            .migrate_adopting(owner)
            .await?;
        Ok(())
    })
    .await
}

/// The stack's state (`.dev/` of the clone, or `DEV_DIR`): the Postgres cluster, the dev secret, logs.
fn dev_dir() -> Result<PathBuf, Error> {
    let dir = std::env::var_os("DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".dev"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn dev() -> Result<(), Error> {
    let dir = dev_dir()?;
    let mut stack = start_services(&dir, true, DEV_DATABASE, false).await?;
    start_functions(&mut stack, &dir).await?;
    println!("{}", banner(&stack)?);
    println!("Ctrl-C stops everything.");
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}

/// A small HTTP client for the demo: no redirects followed, cookies passed by hand.
struct Api {
    http: reqwest::Client,
    jwt: String,
    webhook_secret: String,
}

impl Api {
    fn url(path: &str) -> String {
        format!("http://127.0.0.1:{API_PORT}{path}")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        cookies: &[String],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Error> {
        let mut cookie = format!("alto_admin={}", self.jwt);
        for c in cookies {
            cookie.push_str("; ");
            cookie.push_str(c);
        }
        let mut req = self.http.request(method, url).header("cookie", cookie);
        if let Some(body) = body {
            req = req.json(body);
        }
        Ok(req.send().await?)
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let resp = self.call(method, &Self::url(path), &[], body).await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path} answered {status}: {value}").into());
        }
        Ok(value)
    }

    /// The OAuth connect flow as a browser walks it: start, the CRM's consent (auto-approved by the
    /// sandbox), the callback.
    async fn connect_oauth(&self, provider: &str) -> Result<(), Error> {
        let start = self
            .call(
                reqwest::Method::GET,
                &Self::url(&format!("/api/integrations/{provider}/oauth/start")),
                &[],
                None,
            )
            .await?;
        let location = header(&start, "location")?;
        let state_cookie = start
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("crm_oauth_state="))
            .and_then(|c| c.split(';').next())
            .ok_or("oauth-start set no state cookie")?
            .to_owned();
        let consent = self.http.get(&location).send().await?;
        let back = header(&consent, "location")?;
        let done = self
            .call(reqwest::Method::GET, &back, &[state_cookie], None)
            .await?;
        let landed = header(&done, "location")?;
        if !landed.contains(&format!("connected={provider}")) {
            return Err(format!("connecting {provider} ended at {landed}").into());
        }
        Ok(())
    }
}

/// The event EventBridge Scheduler sends `scheduled-sync`.
fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": chrono_now(),
        "region": queue::REGION,
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/crmsync-dev-scheduled-sync"],
        "detail": "{}"
    })
}

impl Api {
    /// Invokes a function as AWS would (`cargo lambda watch`'s invoke endpoint): its answer.
    async fn invoke(&self, function: &str, event: &Value) -> Result<Value, Error> {
        let resp = self
            .http
            .post(Self::url(&format!(
                "/2015-03-31/functions/{function}/invocations"
            )))
            .json(event)
            .send()
            .await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{function} answered {status}: {value}").into());
        }
        Ok(value)
    }

    /// Waits for the sync log of a queued (scheduled) pull of `provider` that has ended.
    async fn queued_pull(&self, provider: &str, wait: Duration) -> Result<Value, Error> {
        let until = Instant::now() + wait;
        loop {
            let logs = self
                .json(
                    reqwest::Method::GET,
                    "/api/integrations/logs?limit=20",
                    None,
                )
                .await?;
            let found = logs["logs"].as_array().into_iter().flatten().find(|l| {
                l["provider"] == provider
                    && l["direction"] == "pull"
                    && l["trigger"] == "schedule"
                    && l["status"] != "partial"
            });
            if let Some(log) = found {
                return Ok(log.clone());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "no queued sync of {provider} ended within {} s (see the sync queue lines above and .dev/watch.log)",
                    wait.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Result<String, Error> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "{} answered {} without a {name} header",
                resp.url(),
                resp.status()
            )
            .into()
        })
}

async fn demo() -> Result<(), Error> {
    let started = Instant::now();
    let dir = dev_dir()?;
    let mut stack = start_services(&dir, true, DEMO_DATABASE, true).await?;
    start_functions(&mut stack, &dir).await?;
    let api = Api {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        jwt: dev_jwt(&stack.secrets, 1)?,
        webhook_secret: stack.secrets["webhook_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };

    step(
        "connecting REX through OAuth (PKCE)",
        api.connect_oauth("rex"),
    )
    .await?;
    step(
        "connecting Follow Up Boss through OAuth",
        api.connect_oauth("followupboss"),
    )
    .await?;
    step("connecting Lofty by API key", async {
        let body = json!({"provider": "lofty", "apiKey": "sandbox-lofty-key", "riskThreshold": 20});
        api.json(reqwest::Method::POST, "/api/integrations", Some(&body))
            .await
            .map(|_| ())
    })
    .await?;

    for (provider, label) in [("rex", "REX"), ("followupboss", "Follow Up Boss")] {
        let metrics = step(&format!("syncing contacts from {label}"), async {
            api.json(
                reqwest::Method::POST,
                &format!("/api/integrations/{provider}/contacts/sync"),
                None,
            )
            .await
        })
        .await?;
        println!(
            "    {label}: upserted {}, totalFetched {}, skipped {}, durationMs {}",
            metrics["upserted"], metrics["totalFetched"], metrics["skipped"], metrics["durationMs"]
        );
    }

    // Lofty is synced on the queue: the scheduled run (the dispatcher) queues every integration that
    // is due (Lofty, never synced; REX and Follow Up Boss are live and were just synced, so they are
    // not), and the poller hands the message to sync-worker.
    let dispatched = step(
        "running the scheduled run (it queues each due integration)",
        api.invoke("scheduled-sync", &scheduled_event()),
    )
    .await?;
    println!(
        "    scheduled-sync: integrations {}, due {}, queued {}, alreadyQueued {}, failed {}",
        dispatched["integrations"],
        dispatched["due"],
        dispatched["queued"],
        dispatched["alreadyQueued"],
        dispatched["failed"]
    );
    let log = step(
        "syncing contacts from Lofty on the sync queue (sync-worker)",
        api.queued_pull("lofty", Duration::from_secs(300)),
    )
    .await?;
    println!(
        "    Lofty: upserted {}, totalFetched {}, skipped {}, durationMs {}",
        log["metrics"]["upserted"],
        log["metrics"]["totalFetched"],
        log["metrics"]["skipped"],
        log["metrics"]["durationMs"]
    );
    if let Some(queues) = &stack.queues {
        let sqs = aws_sdk_sqs::Client::new(&aws(&format!("http://127.0.0.1:{SQS_PORT}")).await);
        let (waiting, dead) = queue::depths(&sqs, queues).await?;
        println!("    sync queue: {waiting} messages waiting or in flight, {dead} dead-lettered");
    }

    let lead_id = format!("demo-{}", Uuid::new_v4().simple());
    let phone = "(415) 555-0199";
    let lead = json!({"event": "lead.created", "lead": {
        "id": lead_id, "userId": DEV_USER, "firstName": "Dana", "lastName": "Rivera", "phone": phone,
        "email": "dana.rivera@example.com", "riskScore": 12, "source": "crmsync demo",
        "tags": ["buyer"], "notes": "Wants a viewing on Saturday", "updatedAt": chrono_now()}});
    let reply = step("posting a lead to the webhook", async {
        let resp = api
            .http
            .post(Api::url("/api/webhooks/lead-created"))
            .header("x-webhook-secret", &api.webhook_secret)
            .json(&lead)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(format!("the webhook answered {status}: {body}").into());
        }
        Ok(body)
    })
    .await?;
    println!("    202 {reply}");

    let sandbox_url = |p: &str| format!("http://127.0.0.1:{SANDBOX_PORT}/_sandbox/{p}/records");
    let wanted = crmsync_domain::PhoneNumber::parse(phone, crmsync_domain::Region::US)?;
    for (p, label) in [
        ("rex", "REX"),
        ("fub", "Follow Up Boss"),
        ("lofty", "Lofty"),
    ] {
        let records: Value = api.http.get(sandbox_url(p)).send().await?.json().await?;
        let found: Vec<&Value> = records["records"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|r| {
                        r["phones"].as_array().is_some_and(|ps| {
                            ps.iter()
                                .filter_map(Value::as_str)
                                .any(|x| wanted.matches(x))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [one] => println!(
                "    {label}: the lead is there as record {} \"{}\"",
                one["id"],
                one["name"].as_str().unwrap_or_default()
            ),
            other => {
                return Err(
                    format!("{label} has {} records with the lead's phone", other.len()).into(),
                );
            }
        }
    }

    let logs = step(
        "reading the sync logs",
        api.json(
            reqwest::Method::GET,
            "/api/integrations/logs?limit=10",
            None,
        ),
    )
    .await?;
    println!(
        "    {:<25} {:<13} {:<5} {:<9} {:<8} detail",
        "when", "provider", "dir", "trigger", "status"
    );
    for log in logs["logs"].as_array().into_iter().flatten() {
        let detail = match log["direction"].as_str() {
            Some("pull") => format!(
                "upserted {}, totalFetched {}, durationMs {}",
                log["metrics"]["upserted"],
                log["metrics"]["totalFetched"],
                log["metrics"]["durationMs"]
            ),
            _ => format!(
                "{} lead {}",
                log["action"].as_str().unwrap_or("-"),
                log["leadId"].as_str().unwrap_or("-")
            ),
        };
        println!(
            "    {:<25} {:<13} {:<5} {:<9} {:<8} {detail}",
            log["createdAt"].as_str().unwrap_or("-"),
            log["provider"].as_str().unwrap_or("-"),
            log["direction"].as_str().unwrap_or("-"),
            log["trigger"].as_str().unwrap_or("-"),
            log["status"].as_str().unwrap_or("-"),
        );
    }
    drop(stack);
    println!(
        "\ndemo finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
