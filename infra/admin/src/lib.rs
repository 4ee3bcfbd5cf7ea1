//! `crmsync-admin`, the operator's command against a deployed crmsync database: which keys seal the
//! CRM credentials and re-sealing them after a key rotation, deliveries across users (list, retry),
//! integrations by status, and resetting a pull cursor.
//!
//! It finds the database and the encryption keys the way the functions do, in the Secrets Manager
//! secret (`--secret-id`, `APP_SECRET_ID` or `SECRET_ID`: a name or an ARN; `AWS_ENDPOINT_URL` and the
//! usual AWS variables apply), or in plain settings (`--database-url`/`DATABASE_URL`,
//! `ENCRYPTION_KEY`, `ENCRYPTION_KEY_PREVIOUS`), which win over the secret's values. It prints tables,
//! or JSON with `--json`, and never a secret, a token or a sealed value. Exit code 0 on success, 1 with
//! one line on standard error when something failed, 2 for a usage error.
//!
//! The queries are the store's (`crmsync_store`, its `admin` module); they run as the database URL's
//! user, across users, as the scheduled run does.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use crmsync_aws::{FromSecret, SecretsProvider};
use crmsync_domain::{DeliveryStatus, IntegrationStatus};
use crmsync_store::{
    AdminDelivery, AdminIntegration, CursorReset, DeliveryFilter, Resealed, RetryOutcome, Store,
    StoreError, Vault,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long the database may take to answer the first query.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    name = "crmsync-admin",
    version,
    about = "Operator commands against a deployed crmsync database.",
    long_about = "Operator commands against a deployed crmsync database. The database URL and the \
                  encryption keys come from the Secrets Manager secret (--secret-id) or from plain \
                  settings (--database-url, ENCRYPTION_KEY, ENCRYPTION_KEY_PREVIOUS), which win over \
                  the secret's values."
)]
pub struct Cli {
    #[command(flatten)]
    pub source: Source,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the database URL and the keys come from.
#[derive(Debug, Clone, Default, Args)]
pub struct Source {
    /// The configuration secret in Secrets Manager (a name or an ARN), holding `database_url`,
    /// `encryption_key` and `encryption_key_previous`. Also `SECRET_ID`.
    #[arg(long, env = "APP_SECRET_ID", global = true)]
    pub secret_id: Option<String>,
    /// The Postgres URL (`postgres://…`, `sslmode=require` for TLS); wins over the secret's.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The current encryption key (64 hex characters); wins over the secret's. Prefer the
    /// environment variable: a command line is visible to other users of the machine.
    #[arg(long, env = "ENCRYPTION_KEY", global = true, hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// The previous encryption key (64 hex characters); wins over the secret's.
    #[arg(
        long,
        env = "ENCRYPTION_KEY_PREVIOUS",
        global = true,
        hide_env_values = true
    )]
    pub encryption_key_previous: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The encryption keys that seal the CRM credentials.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Push deliveries of every user.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Integrations of every user.
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// The pull cursor of an integration.
    #[command(subcommand)]
    Cursor(CursorCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// How many integrations each key sealed: the current, the previous, or an unknown key.
    Status,
    /// Re-seal with the current key every credential the previous key sealed.
    Reseal {
        /// Open every credential to re-seal, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Integrations read per batch (each is re-sealed in a transaction of its own).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Deliveries of every user, newest first.
    List {
        /// pending, failed, delivered, skipped or superseded.
        #[arg(long, value_parser = parse_delivery_status)]
        status: Option<DeliveryStatus>,
        /// Only this user's (the dashboard user id).
        #[arg(long)]
        user: Option<Uuid>,
        /// Only this integration's.
        #[arg(long)]
        integration: Option<Uuid>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Make deliveries due now: failed ones pending again with fresh attempts, waiting ones due now.
    /// The next scheduled run pushes them (a paused integration's wait until it is active).
    #[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "status"]))]
    Retry {
        /// The deliveries to retry, by id.
        #[arg(conflicts_with_all = ["status", "user", "integration"])]
        ids: Vec<Uuid>,
        /// Every delivery of this status: failed (given up) or pending (waiting for their next try).
        #[arg(long, value_parser = parse_retry_status)]
        status: Option<DeliveryStatus>,
        /// With --status: only this user's.
        #[arg(long)]
        user: Option<Uuid>,
        /// With --status: only this integration's.
        #[arg(long)]
        integration: Option<Uuid>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Integrations of every user, oldest first, without credentials.
    List {
        /// active, paused, needs_reauth or error.
        #[arg(long, value_parser = parse_integration_status)]
        status: Option<IntegrationStatus>,
        /// Only this user's.
        #[arg(long)]
        user: Option<Uuid>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CursorCommand {
    /// Clear an integration's pull cursor: its next sync reads the whole account.
    Reset {
        #[arg(long)]
        integration: Uuid,
    },
}

fn parse_delivery_status(s: &str) -> Result<DeliveryStatus, String> {
    s.parse()
        .map_err(|e: crmsync_domain::UnknownName| e.to_string())
}

fn parse_retry_status(s: &str) -> Result<DeliveryStatus, String> {
    match parse_delivery_status(s)? {
        st @ (DeliveryStatus::Failed | DeliveryStatus::Pending) => Ok(st),
        st => Err(format!(
            "{st} deliveries are not retried: use failed or pending"
        )),
    }
}

fn parse_integration_status(s: &str) -> Result<IntegrationStatus, String> {
    s.parse()
        .map_err(|e: crmsync_domain::UnknownName| e.to_string())
}

/// Why a command failed: one sentence, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Secret(#[from] crmsync_aws::SecretError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The command ran and reports a failure (its report is printed as well).
    #[error("{0}")]
    Failed(String),
}

/// What a command prints: a human text and the same as JSON.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub json: Value,
    /// Set when the command ran but something in it failed: printed on standard error, exit code 1.
    pub failure: Option<String>,
}

impl Output {
    fn ok(text: String, json: Value) -> Self {
        Output {
            text,
            json,
            failure: None,
        }
    }

    /// What goes to standard output.
    pub fn render(&self, as_json: bool) -> String {
        if as_json {
            let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
            s.push('\n');
            s
        } else {
            let mut s = self.text.clone();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
    }
}

/// The process's entry point: parses the command line, runs, prints, and gives the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crmsync-admin: error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let as_json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            print!("{}", out.render(as_json));
            match out.failure {
                Some(why) => {
                    eprintln!("crmsync-admin: error: {}", one_line(&why));
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("crmsync-admin: error: {}", one_line(&with_causes(&e)));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, each added unless the message already holds it (never a value: the
/// database's and the SDK's messages do not quote the URL or the secret).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// A message on one line (Postgres adds DETAIL and HINT lines).
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses `args` (the program name first) and runs the command, in process (no printing, no exit).
pub async fn run_args<I, T>(args: I) -> Result<Output, AdminError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| AdminError::Config(e.to_string()))?;
    run(cli).await
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<Output, AdminError> {
    let config = Config::resolve(&cli.source).await?;
    let store = config.store().await?;
    match cli.command {
        Command::Keys(KeysCommand::Status) => keys_status(&store, &config.vault()?).await,
        Command::Keys(KeysCommand::Reseal {
            dry_run,
            batch_size,
        }) => keys_reseal(&store, &config.vault()?, dry_run, batch_size).await,
        Command::Deliveries(DeliveriesCommand::List {
            status,
            user,
            integration,
            limit,
        }) => {
            let filter = DeliveryFilter {
                status,
                user,
                integration,
            };
            deliveries_list(&store, &filter, limit).await
        }
        Command::Deliveries(DeliveriesCommand::Retry {
            ids,
            status,
            user,
            integration,
        }) => {
            let filter = DeliveryFilter {
                status,
                user,
                integration,
            };
            deliveries_retry(&store, &ids, &filter).await
        }
        Command::Integrations(IntegrationsCommand::List { status, user }) => {
            integrations_list(&store, status, user).await
        }
        Command::Cursor(CursorCommand::Reset { integration }) => {
            cursor_reset(&store, integration).await
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Configuration

/// The values of the secret the command uses (the others are ignored).
#[derive(Deserialize)]
struct AdminSecrets {
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    encryption_key: Option<String>,
    #[serde(default)]
    encryption_key_previous: Option<String>,
    #[serde(default)]
    database_ca_pem: Option<String>,
}

impl FromSecret for AdminSecrets {
    fn from_secret(json: &str) -> Result<Self, String> {
        // serde_json's message could quote a value: say where instead.
        serde_json::from_str(json).map_err(|e| {
            format!(
                "it is not a JSON object of strings (line {}, column {})",
                e.line(),
                e.column()
            )
        })
    }
}

/// The database URL and the keys, resolved.
struct Config {
    database_url: String,
    encryption_key: Option<String>,
    encryption_key_previous: Option<String>,
    /// The database's CA certificates (PEM), from the secret's `database_ca_pem`.
    database_ca_pem: Option<String>,
    /// Where the values came from, for error messages.
    origin: &'static str,
}

fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Config {
    async fn resolve(source: &Source) -> Result<Self, AdminError> {
        let secret_id = non_empty(source.secret_id.as_ref())
            .or_else(|| non_empty(std::env::var("SECRET_ID").ok().as_ref()));
        let secret = match &secret_id {
            Some(id) => Some(fetch_secret(id).await?),
            None => None,
        };
        let from_secret = |f: fn(&AdminSecrets) -> &Option<String>| {
            secret.as_ref().and_then(|s| non_empty(f(s).as_ref()))
        };
        let database_url = non_empty(source.database_url.as_ref())
            .or_else(|| from_secret(|s| &s.database_url))
            .ok_or_else(|| {
                AdminError::Config(match &secret_id {
                    Some(id) => format!("secret {id} has no database_url, and no --database-url (DATABASE_URL) is given"),
                    None => "no database: give --secret-id (APP_SECRET_ID) or --database-url (DATABASE_URL)".into(),
                })
            })?;
        Ok(Config {
            database_url,
            encryption_key: non_empty(source.encryption_key.as_ref())
                .or_else(|| from_secret(|s| &s.encryption_key)),
            encryption_key_previous: non_empty(source.encryption_key_previous.as_ref())
                .or_else(|| from_secret(|s| &s.encryption_key_previous)),
            database_ca_pem: from_secret(|s| &s.database_ca_pem),
            origin: if secret_id.is_some() {
                "the secret"
            } else {
                "the settings"
            },
        })
    }

    /// A store on the database, checked to answer and to hold crmsync's tables.
    async fn store(&self) -> Result<Store, AdminError> {
        let options = crmsync_store::ConnectOptions {
            ca_pem: self.database_ca_pem.clone(),
        };
        let store = Store::connect_with(&self.database_url, 2, &options)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, store.check_schema()).await {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(AdminError::Config(format!(
                "cannot use the database: {}",
                one_line(&with_causes(&e))
            ))),
            Err(_) => Err(AdminError::Config(format!(
                "the database did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    fn vault(&self) -> Result<Vault, AdminError> {
        let key = self.encryption_key.as_deref().ok_or_else(|| {
            AdminError::Config(
                "the encryption key is needed: give --secret-id, or ENCRYPTION_KEY (and ENCRYPTION_KEY_PREVIOUS)"
                    .into(),
            )
        })?;
        Vault::new(key, self.encryption_key_previous.as_deref()).map_err(|e| {
            AdminError::Config(format!(
                "the encryption keys of {} are not usable: {e}",
                self.origin
            ))
        })
    }
}

/// The secret `id` (a name or an ARN) from Secrets Manager, with the SDK's default configuration
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials). An ARN names its region, used when none is set.
async fn fetch_secret(id: &str) -> Result<AdminSecrets, AdminError> {
    let mut aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let arn_region = id
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    if aws.region().is_none()
        && let Some(region) = arn_region
    {
        aws = aws
            .to_builder()
            .region(aws_config::Region::new(region))
            .build();
    }
    let provider: SecretsProvider<AdminSecrets> =
        SecretsProvider::new(aws_sdk_secretsmanager::Client::new(&aws), id);
    let secrets = provider.get().await?;
    Ok(AdminSecrets {
        database_url: secrets.database_url.clone(),
        encryption_key: secrets.encryption_key.clone(),
        encryption_key_previous: secrets.encryption_key_previous.clone(),
        database_ca_pem: secrets.database_ca_pem.clone(),
    })
}

// ---------------------------------------------------------------------------------------------------
// Formatting

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

fn json_time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn shorten(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() <= max {
        s
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A table with a header row, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---------------------------------------------------------------------------------------------------
// keys

async fn keys_status(store: &Store, vault: &Vault) -> Result<Output, AdminError> {
    let current = vault.current_key_version().to_owned();
    let previous = vault.previous_key_version().map(str::to_owned);
    let counts = store.credential_key_counts().await?;
    let count_of = |key: &str| {
        counts
            .iter()
            .find(|c| c.key_version == key)
            .map_or(0, |c| c.integrations)
    };
    let mut keys = vec![(current.clone(), "current", count_of(&current))];
    if let Some(prev) = &previous {
        keys.push((prev.clone(), "previous", count_of(prev)));
    }
    for c in &counts {
        if c.key_version != current && Some(&c.key_version) != previous.as_ref() {
            keys.push((c.key_version.clone(), "unknown", c.integrations));
        }
    }
    let on_previous = previous.as_deref().map_or(0, count_of);
    let on_unknown: i64 = keys.iter().filter(|k| k.1 == "unknown").map(|k| k.2).sum();

    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(k, role, n)| vec![k.clone(), (*role).to_owned(), n.to_string()])
        .collect();
    let mut text = table(&["KEY ID", "ROLE", "INTEGRATIONS"], &rows);
    match &previous {
        None => text.push_str("No previous key is configured (encryption_key_previous).\n"),
        Some(_) if on_previous == 0 => text.push_str(
            "Nothing is sealed with the previous key: encryption_key_previous can be removed from the secret.\n",
        ),
        Some(_) => text.push_str(&format!(
            "{} still sealed with the previous key: run `crmsync-admin keys reseal`, then remove encryption_key_previous.\n",
            plural(on_previous as u64, "integration is", "integrations are")
        )),
    }
    if on_unknown > 0 {
        text.push_str(&format!(
            "{} sealed with a key that is neither the current nor the previous one: they cannot be opened until that key is configured, or they are connected again.\n",
            plural(on_unknown as u64, "integration is", "integrations are")
        ));
    }
    let json = json!({
        "currentKey": current,
        "previousKey": previous,
        "keys": keys.iter().map(|(k, role, n)| json!({"keyId": k, "role": role, "integrations": n})).collect::<Vec<_>>(),
        "onPreviousKey": on_previous,
        "onUnknownKey": on_unknown,
        "previousKeyCanBeDropped": on_previous == 0,
    });
    Ok(Output::ok(text, json))
}

async fn keys_reseal(
    store: &Store,
    vault: &Vault,
    dry_run: bool,
    batch_size: i64,
) -> Result<Output, AdminError> {
    let current = vault.current_key_version().to_owned();
    let Some(previous) = vault.previous_key_version().map(str::to_owned) else {
        let text = "No previous key is configured (encryption_key_previous): nothing to re-seal.\n"
            .to_owned();
        let json = json!({"dryRun": dry_run, "currentKey": current, "previousKey": null,
            "resealed": 0, "wouldReseal": 0, "alreadyCurrent": 0, "gone": 0, "failed": [], "remaining": 0});
        return Ok(Output::ok(text, json));
    };
    let (mut resealed, mut would, mut already, mut gone) = (0u64, 0u64, 0u64, 0u64);
    let mut failed: Vec<(Uuid, String)> = Vec::new();
    let mut after = None;
    loop {
        let ids = store
            .integrations_sealed_with(&previous, after, batch_size)
            .await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        for id in ids {
            match store.reseal_credentials(vault, id, dry_run).await? {
                Resealed::Resealed => resealed += 1,
                Resealed::WouldReseal => would += 1,
                Resealed::AlreadyCurrent => already += 1,
                Resealed::Gone => gone += 1,
                Resealed::Failed(why) => failed.push((id, why)),
            }
        }
        after = Some(last);
    }
    let remaining = store
        .credential_key_counts()
        .await?
        .iter()
        .find(|c| c.key_version == previous)
        .map_or(0, |c| c.integrations);

    let mut text = String::new();
    if dry_run {
        text.push_str(&format!(
            "Dry run: {} would be re-sealed with the current key {current}; nothing was changed.\n",
            plural(would, "integration", "integrations")
        ));
    } else {
        text.push_str(&format!(
            "Re-sealed {} with the current key {current}.\n",
            plural(resealed, "integration", "integrations")
        ));
    }
    if already + gone > 0 {
        text.push_str(&format!(
            "{} changed meanwhile (re-sealed, connected again or deleted) and left alone.\n",
            plural(already + gone, "integration", "integrations")
        ));
    }
    for (id, why) in &failed {
        text.push_str(&format!("Not re-sealed: integration {id}: {why}\n"));
    }
    if !dry_run {
        text.push_str(&format!(
            "{} remain sealed with the previous key {previous}.{}\n",
            plural(remaining as u64, "integration", "integrations"),
            if remaining == 0 {
                " encryption_key_previous can be removed from the secret."
            } else {
                ""
            }
        ));
    }
    let json = json!({
        "dryRun": dry_run,
        "currentKey": current,
        "previousKey": previous,
        "resealed": resealed,
        "wouldReseal": would,
        "alreadyCurrent": already,
        "gone": gone,
        "failed": failed.iter().map(|(id, why)| json!({"integrationId": id, "error": why})).collect::<Vec<_>>(),
        "remaining": remaining,
    });
    let failure = (!failed.is_empty()).then(|| {
        format!(
            "{} could not be re-sealed (see above)",
            plural(failed.len() as u64, "credential", "credentials")
        )
    });
    Ok(Output {
        text,
        json,
        failure,
    })
}

// ---------------------------------------------------------------------------------------------------
// deliveries

fn delivery_json(d: &AdminDelivery) -> Value {
    let r = &d.delivery;
    json!({
        "id": r.id,
        "userId": d.user_id,
        "integrationId": d.integration_id,
        "provider": d.provider.as_str(),
        "integrationStatus": d.integration_status.as_str(),
        "eventId": r.event_id,
        "leadId": r.lead_id,
        "event": r.event,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "nextAttemptAt": if r.status == DeliveryStatus::Pending { json_time(Some(r.next_attempt_at)) } else { Value::Null },
        "lastError": r.last_error,
        "externalId": r.external_id,
        "createdAt": json_time(Some(r.created_at)),
        "updatedAt": json_time(Some(r.updated_at)),
    })
}

async fn deliveries_list(
    store: &Store,
    filter: &DeliveryFilter,
    limit: i64,
) -> Result<Output, AdminError> {
    let found = store.admin_deliveries(filter, limit).await?;
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|d| {
            let r = &d.delivery;
            vec![
                r.id.to_string(),
                d.user_id.to_string(),
                d.integration_id.to_string(),
                format!(
                    "{} ({})",
                    d.provider.as_str(),
                    d.integration_status.as_str()
                ),
                shorten(&r.lead_id, 24),
                r.status.as_str().to_owned(),
                r.attempts.to_string(),
                if r.status == DeliveryStatus::Pending {
                    time(Some(r.next_attempt_at))
                } else {
                    "-".into()
                },
                time(Some(r.created_at)),
                r.last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), |e| shorten(e, 60)),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ID",
            "USER",
            "INTEGRATION",
            "CRM",
            "LEAD",
            "STATUS",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "CREATED",
            "LAST ERROR",
        ],
        &rows,
    );
    text.push_str(&format!(
        "{}{}\n",
        plural(found.len() as u64, "delivery", "deliveries"),
        if found.len() as i64 == limit {
            " (the limit: there may be more, see --limit)"
        } else {
            ""
        }
    ));
    let json = json!({"deliveries": found.iter().map(delivery_json).collect::<Vec<_>>()});
    Ok(Output::ok(text, json))
}

async fn deliveries_retry(
    store: &Store,
    ids: &[Uuid],
    filter: &DeliveryFilter,
) -> Result<Output, AdminError> {
    let looked = match store.admin_retry_deliveries(ids, filter).await? {
        Ok(looked) => looked,
        Err(unknown) => {
            let list: Vec<String> = unknown.iter().map(Uuid::to_string).collect();
            return Err(AdminError::Failed(format!(
                "no delivery with id {}; nothing was changed",
                list.join(", ")
            )));
        }
    };
    let retried: Vec<_> = looked
        .iter()
        .filter(|d| d.outcome == RetryOutcome::Retried)
        .collect();
    let from_failed = retried
        .iter()
        .filter(|d| d.status == DeliveryStatus::Failed)
        .count();
    let waiting = retried
        .iter()
        .filter(|d| d.integration_status != IntegrationStatus::Active)
        .count();
    let rows: Vec<Vec<String>> = looked
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.integration_id.to_string(),
                d.status.as_str().to_owned(),
                match d.outcome {
                    RetryOutcome::Retried => "due now".to_owned(),
                    RetryOutcome::LeftAlone { leased: true } => {
                        "left alone: being pushed right now".to_owned()
                    }
                    RetryOutcome::LeftAlone { leased: false } => {
                        format!("left alone: {}", d.status.as_str())
                    }
                },
                d.integration_status.as_str().to_owned(),
            ]
        })
        .collect();
    let mut text = if looked.is_empty() {
        "No delivery matches: nothing was changed.\n".to_owned()
    } else {
        table(
            &["ID", "INTEGRATION", "WAS", "NOW", "INTEGRATION STATUS"],
            &rows,
        )
    };
    text.push_str(&format!(
        "Made {} due now ({} failed made pending with fresh attempts). The next scheduled run pushes them, or at once `POST /api/integrations/{{id}}/deliveries/retry`.\n",
        plural(retried.len() as u64, "delivery", "deliveries"),
        from_failed
    ));
    if waiting > 0 {
        text.push_str(&format!(
            "Of these, {waiting} wait for an integration that is not active (paused, or needing its credentials again): they go out once it is active.\n"
        ));
    }
    let json = json!({
        "retried": retried.len(),
        "fromFailed": from_failed,
        "waitingForInactiveIntegration": waiting,
        "deliveries": looked.iter().map(|d| json!({
            "id": d.id,
            "integrationId": d.integration_id,
            "previousStatus": d.status.as_str(),
            "integrationStatus": d.integration_status.as_str(),
            "retried": d.outcome == RetryOutcome::Retried,
            "leased": d.outcome == RetryOutcome::LeftAlone { leased: true },
        })).collect::<Vec<_>>(),
    });
    Ok(Output::ok(text, json))
}

// ---------------------------------------------------------------------------------------------------
// integrations

fn integration_json(i: &AdminIntegration) -> Value {
    json!({
        "id": i.id,
        "userId": i.user_id,
        "provider": i.provider.as_str(),
        "status": i.status.as_str(),
        "consecutiveFailures": i.consecutive_failures,
        "lastError": i.last_error,
        "lastSyncAt": json_time(i.last_sync_at),
        "lastFullSyncAt": json_time(i.last_full_sync_at),
        "keyId": i.key_version,
        "createdAt": json_time(Some(i.created_at)),
    })
}

async fn integrations_list(
    store: &Store,
    status: Option<IntegrationStatus>,
    user: Option<Uuid>,
) -> Result<Output, AdminError> {
    let found = store.admin_integrations(status, user).await?;
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.user_id.to_string(),
                i.provider.as_str().to_owned(),
                i.status.as_str().to_owned(),
                i.consecutive_failures.to_string(),
                time(i.last_sync_at),
                i.last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), |e| shorten(e, 60)),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ID",
            "USER",
            "CRM",
            "STATUS",
            "FAILURES",
            "LAST SYNC",
            "LAST ERROR",
        ],
        &rows,
    );
    text.push_str(&format!(
        "{}\n",
        plural(found.len() as u64, "integration", "integrations")
    ));
    let json = json!({"integrations": found.iter().map(integration_json).collect::<Vec<_>>()});
    Ok(Output::ok(text, json))
}

// ---------------------------------------------------------------------------------------------------
// cursor

async fn cursor_reset(store: &Store, id: Uuid) -> Result<Output, AdminError> {
    match store.reset_sync_cursor(id).await? {
        CursorReset::NotFound => Err(AdminError::Failed(format!(
            "no integration with id {id}; nothing was changed"
        ))),
        CursorReset::Busy => Err(AdminError::Failed(format!(
            "integration {id} is syncing right now; nothing was changed: try again when the sync ends"
        ))),
        CursorReset::Reset {
            user_id,
            provider,
            had_cursor,
        } => {
            let text = if had_cursor {
                format!(
                    "Cleared the pull cursor of integration {id} ({}, user {user_id}): its next sync reads the whole account and marks what the CRM no longer holds as deleted.\n",
                    provider.as_str()
                )
            } else {
                format!(
                    "Integration {id} ({}, user {user_id}) had no pull cursor: its next sync reads the whole account already; nothing was changed.\n",
                    provider.as_str()
                )
            };
            let json = json!({
                "integrationId": id,
                "userId": user_id,
                "provider": provider.as_str(),
                "cleared": had_cursor,
                "nextSyncReadsEverything": true,
            });
            Ok(Output::ok(text, json))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn retry_needs_ids_or_a_status_and_not_both() {
        let base = ["crmsync-admin", "--database-url", "postgres://x@h/db"];
        let parse = |more: &[&str]| Cli::try_parse_from(base.iter().chain(more));
        assert!(parse(&["deliveries", "retry"]).is_err());
        assert!(parse(&["deliveries", "retry", "--status", "failed"]).is_ok());
        assert!(parse(&["deliveries", "retry", "--status", "delivered"]).is_err());
        let id = Uuid::new_v4().to_string();
        assert!(parse(&["deliveries", "retry", &id]).is_ok());
        assert!(parse(&["deliveries", "retry", &id, "--status", "failed"]).is_err());
        assert!(parse(&["deliveries", "retry", "not-a-uuid"]).is_err());
    }

    #[test]
    fn tables_pad_columns_and_messages_stay_on_one_line() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(
            one_line("db error: ERROR: x\nDETAIL: y\n"),
            "db error: ERROR: x; DETAIL: y"
        );
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
