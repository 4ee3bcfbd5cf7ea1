//! What the benchmarks run against, each in a process of its own: a Postgres cluster (default durability: fsync on), moto
//! (DynamoDB and Secrets Manager) and the CRM sandbox (`crm-sandbox`, its release binary). Plus what a
//! deployment of crmsync needs on them: a migrated database, the rate-limit table, the secret, an `App`
//! wired to all of them as a deployed function is, and API Gateway events for its handlers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crmsync_lambda::config::Settings;
use crmsync_lambda::{App, routes};
use crmsync_store::Store;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Error;
use crate::procstat;

pub const JWT_SECRET: &str = "bench-jwt-secret-0123456789-abcdefghij";
pub const WEBHOOK_SECRET: &str = "bench-webhook-secret-0123456789";
pub const BASE_URL: &str = "http://127.0.0.1:3004";
/// The sandbox's Follow Up Boss API key (`FubConfig::default`).
pub const FUB_API_KEY: &str = "sandbox-fub-key";
/// A rate limit no benchmark reaches: the pull benchmarks measure crmsync, not the CRM's limit.
pub const UNLIMITED: u32 = 1_000_000_000;

/// The running servers. Dropping it stops them (a watchdog does it too if the bench dies).
pub struct Stack {
    pub pg: crmsync_testkit::PgServer,
    pub pg_dir: PathBuf,
    pub pg_version: String,
    moto: Child,
    pub moto_endpoint: String,
    pub aws: aws_config::SdkConfig,
    pub table: String,
    sandbox: Child,
    sandbox_config: PathBuf,
    pub sandbox_url: String,
    watchdog: Option<Child>,
    pub http: reqwest::Client,
}

pub fn bench_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/crmsync/bench")
}

/// Where this run's Postgres cluster lives, a directory of its own (named after this process, so
/// that two runs at once never share, stop or remove each other's cluster): under [`bench_dir`],
/// unless we are root and the `postgres` OS user that then runs the server cannot reach it (a home
/// directory closed to others); then under the system's temporary directory. Removed at the end.
fn pg_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("pg-{}", std::process::id());
    let preferred = bench_dir().join(&name);
    let reachable = !is_root()
        || preferred.ancestors().skip(1).all(|dir| {
            std::fs::metadata(dir).map_or(true, |m| m.permissions().mode() & 0o001 != 0)
        });
    if reachable {
        preferred
    } else {
        std::env::temp_dir().join(format!("crmsync-bench-{name}"))
    }
}

/// A Postgres binary: on PATH, or in Debian's versioned directory.
fn pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join(name).is_file() {
                return Some(dir.join(name));
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The shell command that stops a cluster in `data` at once (as the `postgres` user when root).
fn pg_stop_command(data: &Path) -> Option<String> {
    let pg_ctl = pg_binary("pg_ctl")?;
    let stop = format!(
        "{} -D '{}' -m immediate stop >/dev/null 2>&1",
        pg_ctl.display(),
        data.display()
    );
    Some(if is_root() {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    })
}

fn sh(command: &str) {
    let _ = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Stack {
    /// Starts Postgres (cluster in a directory of this run, see [`pg_dir`]), moto and the sandbox
    /// binary found in `bin_dir`, on free ports.
    pub async fn start(bin_dir: &Path) -> Result<Stack, Error> {
        let dir = bench_dir();
        std::fs::create_dir_all(&dir)?;
        let sandbox_bin = bin_dir.join("crm-sandbox");
        if !sandbox_bin.is_file() {
            return Err(format!(
                "{} is missing: build it with `cargo build --release -p crm-sandbox`",
                sandbox_bin.display()
            )
            .into());
        }
        let pid = std::process::id();
        let config = dir.join(format!("sandbox-{pid}.json"));
        std::fs::write(
            &config,
            json!({
                "auto_approve": true,
                "request_log_capacity": 64,
                "fub": {"rate_limit_global": UNLIMITED, "rate_limit_events": UNLIMITED},
            })
            .to_string(),
        )?;
        let log = std::fs::File::create(dir.join(format!("sandbox-{pid}.log")))?;
        let log_err = log.try_clone()?;
        let pg_dir = pg_dir();
        if pg_dir.exists() {
            // A dead run of the same process id: stop its server, start clean.
            if let Some(stop) = pg_stop_command(&pg_dir.join("data")) {
                sh(&stop);
            }
            std::fs::remove_dir_all(&pg_dir)?;
        }
        let mut last = String::new();
        let mut pg = None;
        for _ in 0..5 {
            let port = crmsync_testkit::free_port();
            let dir = pg_dir.clone();
            match tokio::task::spawn_blocking(move || {
                crmsync_testkit::start_postgres_at(&dir, port, true)
            })
            .await?
            {
                Ok(server) => {
                    pg = Some(server);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let pg = pg.ok_or(last)?;

        let moto_port = crmsync_testkit::free_port();
        let mut moto = match crmsync_testkit::moto_command("127.0.0.1", moto_port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                pg.stop();
                return Err(format!(
                    "cannot run python3 for moto ({e}): `pip install 'moto[server]'`"
                )
                .into());
            }
        };
        let sandbox_port = crmsync_testkit::free_port();
        let sandbox = match Command::new(&sandbox_bin)
            .args(["--host", "127.0.0.1", "--port", &sandbox_port.to_string()])
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let _ = moto.kill();
                let _ = moto.wait();
                pg.stop();
                return Err(format!("cannot run {}: {e}", sandbox_bin.display()).into());
            }
        };

        // Stops all three if this process dies without cleaning up.
        let mut cleanup = format!("kill {} {} 2>/dev/null; ", moto.id(), sandbox.id());
        if let Some(stop) = pg_stop_command(&pg_dir.join("data")) {
            cleanup.push_str(&stop);
        }
        cleanup.push_str(&format!(
            "; rm -rf '{}' '{}'",
            pg_dir.display(),
            config.display()
        ));
        let watchdog = {
            use std::os::unix::process::CommandExt;
            Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; {cleanup}",
                        std::process::id()
                    ),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .ok()
        };

        let table = "crmsync-bench-rate-limits".to_owned();
        let moto_endpoint = format!("http://127.0.0.1:{moto_port}");
        let aws = aws(&moto_endpoint).await;
        let mut stack = Stack {
            pg_version: String::new(),
            pg,
            pg_dir,
            moto,
            moto_endpoint,
            aws,
            table,
            sandbox,
            sandbox_config: config,
            sandbox_url: format!("http://127.0.0.1:{sandbox_port}"),
            watchdog,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        };
        for (port, what) in [(moto_port, "moto"), (sandbox_port, "crm-sandbox")] {
            let up = tokio::task::spawn_blocking(move || {
                crmsync_testkit::wait_for_port(port, Duration::from_secs(30))
            })
            .await?;
            if !up {
                return Err(format!("{what} did not start listening on {port}").into());
            }
        }
        crmsync_aws::limiter::create_table(
            &aws_sdk_dynamodb::Client::new(&stack.aws),
            &stack.table,
        )
        .await?;
        let admin = crmsync_testkit::connect(&stack.pg.url("postgres")).await;
        stack.pg_version = admin
            .query_one("SHOW server_version", &[])
            .await?
            .get::<_, String>(0);
        Ok(stack)
    }

    /// CPU seconds used so far by moto (DynamoDB, Secrets Manager and SQS in one process).
    pub fn moto_cpu(&self) -> f64 {
        procstat::cpu_seconds(self.moto.id()).unwrap_or(0.0)
    }

    /// CPU seconds used so far by the sandbox process.
    pub fn sandbox_cpu(&self) -> f64 {
        procstat::cpu_seconds(self.sandbox.id()).unwrap_or(0.0)
    }

    /// CPU seconds used so far by the Postgres server: the postmaster, its live processes and those
    /// that have exited (backends of closed connections).
    pub fn postgres_cpu(&self) -> f64 {
        let pid_file = self.pg_dir.join("data/postmaster.pid");
        std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            .map_or(0.0, procstat::tree_cpu_seconds)
    }

    pub fn sandbox(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox_url)
    }

    /// A control-API call to the sandbox (`/_sandbox/...`), its JSON answer.
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let mut req = self.http.request(method, self.sandbox(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await?;
        if !status.is_success() {
            return Err(format!("sandbox {path}: {status} {value}").into());
        }
        Ok(value)
    }

    /// Replaces the Follow Up Boss contacts of the sandbox with `count` generated ones.
    pub async fn seed_fub(&self, count: usize) -> Result<Value, Error> {
        self.control(
            reqwest::Method::POST,
            "/_sandbox/fub/seed",
            Some(json!({"seed": 42, "count": count})),
        )
        .await
    }

    /// A database of its own, migrated, and the configuration secret that points at it.
    pub async fn deploy(&self) -> Result<Deployment, Error> {
        let name = format!("bench_{}", Uuid::new_v4().simple());
        let admin = crmsync_testkit::connect(&self.pg.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = self.pg.url(&name);
        Store::connect(&url, 1)?.migrate().await?;
        let secret_id = format!("crmsync/bench/{}", Uuid::new_v4().simple());
        let encryption_key = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let secret = json!({
            "database_url": url,
            "jwt_secret": JWT_SECRET,
            "encryption_key": encryption_key,
            "webhook_secret": WEBHOOK_SECRET,
            "followupboss_client_id": "sandbox-fub-client",
            "followupboss_client_secret": "sandbox-fub-secret",
            "followupboss_system": "crmsync",
            "followupboss_system_key": "sandbox-system-key",
            "rex_client_id": "sandbox-rex-client",
            "rex_client_secret": "sandbox-rex-secret",
        });
        aws_sdk_secretsmanager::Client::new(&self.aws)
            .create_secret()
            .name(&secret_id)
            .secret_string(secret.to_string())
            .send()
            .await?;
        Ok(Deployment {
            db_name: name,
            db_url: url,
            encryption_key,
            wiring: Wiring {
                moto: self.moto_endpoint.clone(),
                table: self.table.clone(),
                sandbox: self.sandbox_url.clone(),
                secret_id,
            },
        })
    }

    /// Drops a deployment's database.
    pub async fn drop_deployment(&self, d: &Deployment) -> Result<(), Error> {
        let admin = crmsync_testkit::connect(&self.pg.url("postgres")).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                d.db_name
            ))
            .await?;
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        for child in [&mut self.sandbox, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.pg.stop();
        let _ = std::fs::remove_dir_all(&self.pg_dir);
        let _ = std::fs::remove_file(&self.sandbox_config);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One deployment: its database, and how to reach it and its secret.
pub struct Deployment {
    pub db_name: String,
    pub db_url: String,
    /// The secret's `encryption_key` (64 hex characters), which seals the deployment's credentials.
    pub encryption_key: String,
    pub wiring: Wiring,
}

/// Where a deployment's `App` finds AWS (moto), its table, its secret and the CRMs (the sandbox).
#[derive(Debug, Clone)]
pub struct Wiring {
    pub moto: String,
    pub table: String,
    pub sandbox: String,
    pub secret_id: String,
}

impl Wiring {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--moto".into(),
            self.moto.clone(),
            "--table".into(),
            self.table.clone(),
            "--sandbox".into(),
            self.sandbox.clone(),
            "--secret-id".into(),
            self.secret_id.clone(),
        ]
    }

    pub fn from_args(args: &HashMap<String, String>) -> Result<Wiring, Error> {
        let get = |k: &str| {
            args.get(k)
                .cloned()
                .ok_or_else(|| format!("--{k} is required"))
        };
        Ok(Wiring {
            moto: get("moto")?,
            table: get("table")?,
            sandbox: get("sandbox")?,
            secret_id: get("secret-id")?,
        })
    }

    /// The `App` of a function of this deployment, as `App::from_env` builds it in the cloud (with
    /// moto's endpoint and static keys instead of the Lambda's role).
    pub async fn app(&self) -> Result<App, Error> {
        self.app_with(&[]).await
    }

    /// [`Wiring::app`] with more environment variables (`SYNC_QUEUE_URL`, `CRM_WEBHOOK_BASE_URL`, …).
    pub async fn app_with(&self, extra: &[(&'static str, String)]) -> Result<App, Error> {
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("CRM_SANDBOX_URL", self.sandbox.clone()),
            ("APP_SECRET_ID", self.secret_id.clone()),
            ("RATE_LIMIT_TABLE", self.table.clone()),
            ("NEXT_PUBLIC_BASE_URL", BASE_URL.to_owned()),
        ]);
        vars.extend(extra.iter().cloned());
        let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
        Ok(App::new(settings, &aws(&self.moto).await)?)
    }
}

/// The AWS SDK configuration for moto.
pub async fn aws(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "bench", "bench", None, None, "static",
        ))
        .load()
        .await
}

/// A JWT of `user` for the deployment's `jwt_secret`.
pub fn token(user: Uuid) -> Result<String, Error> {
    Ok(crmsync_lambda::auth::mint_token(
        JWT_SECRET,
        user,
        4 * 3600,
    )?)
}

/// An API Gateway (HTTP API, payload 2.0) event, as the handlers get it in the cloud.
pub fn event(
    method: &str,
    path: &str,
    query: &str,
    cookies: &[String],
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<lambda_http::Request, Error> {
    let mut hdrs = serde_json::Map::new();
    hdrs.insert("host".into(), json!("api.example.com"));
    for (k, v) in headers {
        hdrs.insert((*k).to_owned(), json!(v));
    }
    let query_params: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
        .collect();
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012", "apiId": "bench", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": Uuid::new_v4().to_string(),
            "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "21/Nov/2026:09:00:00 +0000", "timeEpoch": 1_795_338_000_000u64,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "crmsync-bench"}
        },
        "isBase64Encoded": false
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query_params.is_empty() {
        event["queryStringParameters"] = Value::Object(query_params);
    }
    if let Some(body) = body {
        event["body"] = json!(body);
    }
    Ok(lambda_http::request::from_str(&event.to_string())?)
}

fn header(resp: &crmsync_lambda::http::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .next()
}

fn set_cookie(resp: &crmsync_lambda::http::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// Connects Follow Up Boss for `user` the way a person does: `oauth-start`, the sandbox's consent
/// (auto-approved), `oauth-callback`.
pub async fn connect_fub(app: &App, http: &reqwest::Client, user: Uuid) -> Result<(), Error> {
    let jwt = token(user)?;
    let auth = format!("alto_admin={jwt}");
    let start = routes::oauth_start::handle(
        app,
        event(
            "GET",
            "/api/integrations/followupboss/oauth/start",
            "",
            std::slice::from_ref(&auth),
            &[],
            None,
        )?,
    )
    .await;
    if start.status() != http::StatusCode::FOUND {
        return Err(format!("oauth-start answered {}", start.status()).into());
    }
    let location = header(&start, "location").ok_or("oauth-start gave no Location")?;
    let state = set_cookie(&start, "crm_oauth_state").ok_or("oauth-start set no state cookie")?;
    let consent = http.get(&location).send().await?;
    let back = consent
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("the sandbox's consent did not redirect")?
        .to_owned();
    let (path, query) = back
        .split_once('?')
        .ok_or("the consent redirect has no query")?;
    let path = path.trim_start_matches(BASE_URL);
    let done = routes::oauth_callback::handle(
        app,
        event(
            "GET",
            path,
            query,
            &[auth, format!("crm_oauth_state={state}")],
            &[],
            None,
        )?,
    )
    .await;
    let landed = header(&done, "location").unwrap_or_default();
    if !landed.contains("connected=followupboss") {
        return Err(format!(
            "connecting Follow Up Boss ended with {} at `{landed}`",
            done.status()
        )
        .into());
    }
    Ok(())
}
