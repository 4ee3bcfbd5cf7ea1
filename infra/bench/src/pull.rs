//! Pull sync throughput and memory.
//!
//! * **sync**: `crmsync-bench sync-once`, a child process of its own, calls the real `contacts-sync`
//!   handler with an API Gateway event; the sync reads every page from the sandbox (its own process)
//!   and writes Postgres. The child reports the handler's wall time and its own peak RSS (`VmHWM`).
//! * **COPY**: the same rows (the sandbox's records as the client maps them, de-duplicated with
//!   `dedupe_by_phone`) with one binary `COPY` into the same table of a fresh database on the same
//!   server: the physical limit.
//! * **naive**: the same rows, one single-row upsert statement per contact (prepared once, autocommit).
//! * **batched writes alone**: the same pages the sync writes, each with the store's own page upsert
//!   (one statement per page, in a transaction), without any CRM call: how much of the sync is Postgres.
//!
//! Every approach ends with the same rows in `contacts`; that is checked after every run.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crmsync_crm::{CrmAuth, Listing, PageRequest};
use crmsync_domain::{Contact, Mapped, Provider, SyncCursor, dedupe_by_phone};
use crmsync_lambda::routes;
use crmsync_store::Store;
use serde_json::{Value, json};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::Error;
use crate::procstat;
use crate::stack::{Deployment, FUB_API_KEY, Stack, Wiring, connect_fub, event, token};

/// What one sync in a child process did.
#[derive(Debug, Clone)]
pub struct SyncRun {
    /// Wall time of the handler call.
    pub secs: f64,
    pub fetched: u64,
    pub upserted: u64,
    pub skipped: u64,
    /// Rows in `contacts` afterwards.
    pub rows: u64,
    pub peak_rss_kib: u64,
    /// The child's resident memory, sampled every 100 ms during the handler: anonymous memory
    /// when the handler started and at its highest, file-backed pages (the executable, its
    /// libraries) at their highest, in KiB.
    pub anon_start_kib: u64,
    pub anon_peak_kib: u64,
    pub file_peak_kib: u64,
    /// CPU seconds of the child (whole process: start-up, the secret and pool, the handler), the
    /// sandbox and Postgres during the child's life.
    pub cpu_child: f64,
    /// CPU seconds of the child during the handler call alone.
    pub cpu_handler: f64,
    /// What the handler answered: `fullRead`, whether it read the whole account.
    pub full_read: bool,
    pub cpu_sandbox: f64,
    pub cpu_postgres: f64,
}

/// The child's side: one sync through the handler, reported as one JSON line on stdout.
pub async fn sync_once(args: &HashMap<String, String>) -> Result<(), Error> {
    let wiring = Wiring::from_args(args)?;
    let user: Uuid = args
        .get("user")
        .ok_or("--user is required")?
        .parse()
        .map_err(|e| format!("--user: {e}"))?;
    let app = wiring.app().await?;
    // The secret and the pool, as the function's first event makes them.
    app.ready().await.map_err(|e| e.detail().to_owned())?;
    let req = event(
        "POST",
        "/api/integrations/followupboss/contacts/sync",
        "",
        &[format!("alto_admin={}", token(user)?)],
        &[],
        None,
    )?;
    let (user0, sys0) = procstat::own_cpu();
    let sampler = procstat::RssSampler::start(Duration::from_millis(100));
    let started = Instant::now();
    let resp = routes::contacts_sync::handle(&app, req).await;
    let secs = started.elapsed().as_secs_f64();
    let (user1, sys1) = procstat::own_cpu();
    let rss = sampler.stop();
    let (parts, body) = resp.into_parts();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let line = json!({
        "status": parts.status.as_u16(),
        "secs": secs,
        "metrics": body,
        "peak_rss_kib": procstat::own_peak_rss_kib(),
        "anon_start_kib": rss.anon_start_kib,
        "anon_peak_kib": rss.anon_peak_kib,
        "file_peak_kib": rss.file_peak_kib,
        "cpu": user1 + sys1,
        "cpu_handler": (user1 + sys1) - (user0 + sys0),
    });
    println!("{line}");
    Ok(())
}

async fn count_rows(db_url: &str) -> Result<u64, Error> {
    let client = crmsync_testkit::connect(db_url).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM contacts", &[])
        .await?
        .get(0);
    Ok(n as u64)
}

/// A fresh deployment with Follow Up Boss connected for `user`, for syncs to run against.
pub struct Prepared {
    pub d: Deployment,
    pub user: Uuid,
}

pub async fn prepare(stack: &Stack) -> Result<Prepared, Error> {
    let d = stack.deploy().await?;
    let user = Uuid::new_v4();
    {
        let app = d.wiring.app().await?;
        connect_fub(&app, &stack.http, user).await?;
    }
    Ok(Prepared { d, user })
}

/// One sync of the sandbox's Follow Up Boss contacts into a fresh deployment, in a child process
/// (under `perf record`, writing `profile`, when given).
pub async fn sync_run(stack: &Stack, profile: Option<&std::path::Path>) -> Result<SyncRun, Error> {
    let p = prepare(stack).await?;
    let run = sync_child(stack, &p, profile).await;
    stack.drop_deployment(&p.d).await?;
    run
}

/// One sync of `p`'s integration through the handler, in a child process: a complete read the
/// first time, the changes since the saved cursor after that.
pub async fn sync_child(
    stack: &Stack,
    p: &Prepared,
    profile: Option<&std::path::Path>,
) -> Result<SyncRun, Error> {
    let (d, user) = (&p.d, p.user);
    let exe = std::env::current_exe()?;
    let (sandbox0, pg0) = (stack.sandbox_cpu(), stack.postgres_cpu());
    let mut cmd = match profile {
        Some(data) => {
            let mut c = tokio::process::Command::new("perf");
            c.args(crate::profile::RECORD)
                .arg("-o")
                .arg(data)
                .arg("--")
                .arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    let out = cmd
        .arg("sync-once")
        .args(d.wiring.to_args())
        .args(["--user", &user.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let (sandbox1, pg1) = (stack.sandbox_cpu(), stack.postgres_cpu());
    if !out.status.success() {
        return Err(format!("sync-once failed: {}", out.status).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or("sync-once printed no result")?;
    if line["status"] != 200 || line["metrics"]["complete"] != true {
        return Err(format!("the sync did not finish: {line}").into());
    }
    let m = &line["metrics"];
    let kib = |k: &str| line[k].as_u64().unwrap_or(0);
    Ok(SyncRun {
        secs: line["secs"].as_f64().unwrap_or(f64::NAN),
        fetched: m["totalFetched"].as_u64().unwrap_or(0),
        upserted: m["upserted"].as_u64().unwrap_or(0),
        skipped: m["skipped"].as_u64().unwrap_or(0),
        rows: count_rows(&d.db_url).await?,
        peak_rss_kib: kib("peak_rss_kib"),
        anon_start_kib: kib("anon_start_kib"),
        anon_peak_kib: kib("anon_peak_kib"),
        file_peak_kib: kib("file_peak_kib"),
        cpu_child: line["cpu"].as_f64().unwrap_or(0.0),
        cpu_handler: line["cpu_handler"].as_f64().unwrap_or(0.0),
        full_read: m["fullRead"] == true,
        cpu_sandbox: sandbox1 - sandbox0,
        cpu_postgres: pg1 - pg0,
    })
}

/// The 1%-changed re-sync: a complete sync, then `share` of the sandbox's records changed (their
/// `background`, the contact's notes, and so their update time), then the handler again.
#[derive(Debug, Clone)]
pub struct Resync {
    pub full: SyncRun,
    pub incremental: SyncRun,
    /// Records the sandbox changed.
    pub touched: u64,
    /// Of those, the records with a usable phone (sources that change), and their distinct phones
    /// (contacts that change): what a sync that writes only the changed rows writes.
    pub expected_sources: u64,
    pub expected_contacts: u64,
    /// Rows whose `updated_at` (contacts) or `changed_at` (contact_sources) moved during the re-sync.
    pub contacts_written: u64,
    pub sources_written: Option<u64>,
}

impl Resync {
    /// Whether the re-sync wrote the changed rows and no others.
    pub fn only_changed(&self) -> bool {
        self.contacts_written == self.expected_contacts
            && self
                .sources_written
                .is_none_or(|n| n == self.expected_sources)
    }
}

pub async fn resync_run(stack: &Stack, rows: &Rows, share: f64) -> Result<Resync, Error> {
    let p = prepare(stack).await?;
    let result = resync_in(stack, &p, rows, share).await;
    stack.drop_deployment(&p.d).await?;
    result
}

async fn resync_in(stack: &Stack, p: &Prepared, rows: &Rows, share: f64) -> Result<Resync, Error> {
    let full = sync_child(stack, p, None).await?;
    let count = ((rows.records as f64 * share).round() as usize).max(1);
    let touched = stack
        .control(
            reqwest::Method::POST,
            "/_sandbox/fub/touch",
            Some(json!({
                "count": count,
                "seed": 16,
                "set": {"background": "changed by crmsync-bench for the re-sync"},
            })),
        )
        .await?;
    let ids: std::collections::HashSet<String> = touched["ids"]
        .as_array()
        .ok_or("the sandbox's touch gave no ids")?
        .iter()
        .map(|id| match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let changed: Vec<&Contact> = rows
        .pages
        .iter()
        .flatten()
        .filter(|c| c.external_id.as_ref().is_some_and(|e| ids.contains(e)))
        .collect();
    let phones: std::collections::HashSet<&str> =
        changed.iter().map(|c| c.phone.as_str()).collect();
    let db = crmsync_testkit::connect(&p.d.db_url).await;
    let t0: chrono::DateTime<chrono::Utc> = db.query_one("SELECT now()", &[]).await?.get(0);
    let incremental = sync_child(stack, p, None).await?;
    let contacts_written: i64 = db
        .query_one(
            "SELECT count(*) FROM contacts WHERE updated_at >= $1",
            &[&t0],
        )
        .await?
        .get(0);
    let sources_written = db
        .query_one(
            "SELECT count(*) FROM contact_sources WHERE changed_at >= $1",
            &[&t0],
        )
        .await
        .ok()
        .map(|r| r.get::<_, i64>(0) as u64);
    Ok(Resync {
        full,
        incremental,
        touched: ids.len() as u64,
        expected_sources: changed.len() as u64,
        expected_contacts: phones.len() as u64,
        contacts_written: contacts_written as u64,
        sources_written,
    })
}

/// The sandbox's records, read page by page as the sync reads them, and mapped.
pub struct Rows {
    /// Records read.
    pub records: usize,
    /// Each page's contacts (mapped, not yet de-duplicated), as the sync writes them.
    pub pages: Vec<Vec<Contact>>,
    /// Every contact once per phone: what ends in `contacts`.
    pub unique: Vec<Contact>,
    /// Wall time of the page requests (sandbox, HTTP and JSON parsing) and of the mapping.
    pub fetch_secs: f64,
    pub map_secs: f64,
    /// CPU seconds of the sandbox while it served the pages.
    pub fetch_cpu_sandbox: f64,
}

pub async fn read_rows(stack: &Stack) -> Result<Rows, Error> {
    let d = stack.deploy().await?;
    let app = d.wiring.app().await?;
    let ctx = app.context().await.map_err(|e| e.detail().to_owned())?;
    let client = ctx.crms.client(
        Provider::FollowUpBoss,
        CrmAuth::ApiKey(FUB_API_KEY.to_owned()),
    );
    let region = app.settings.default_phone_region;
    let cursor = SyncCursor::default();
    let mut token: Option<String> = None;
    let (mut fetch, mut map) = (Duration::ZERO, Duration::ZERO);
    let mut pages = Vec::new();
    let mut records = 0;
    let sandbox0 = stack.sandbox_cpu();
    loop {
        let t = Instant::now();
        let page = client
            .list_page(PageRequest {
                listing: Listing::All,
                position: &cursor,
                page_token: token.as_deref(),
                limit: crmsync_app::pull::PAGE_SIZE,
                region,
            })
            .await?;
        fetch += t.elapsed();
        let t = Instant::now();
        records += page.records.len();
        // Mapped as the client read the page; what is timed here is keeping the contacts.
        let contacts: Vec<Contact> = page
            .records
            .into_iter()
            .filter_map(|r| match r {
                Mapped::Contact(c) => Some(c),
                Mapped::Skipped(_) => None,
            })
            .collect();
        map += t.elapsed();
        pages.push(contacts);
        if !page.has_more {
            break;
        }
        token = page.next_token;
    }
    let fetch_cpu_sandbox = stack.sandbox_cpu() - sandbox0;
    let unique = dedupe_by_phone(pages.iter().flatten().cloned().collect());
    drop(app);
    stack.drop_deployment(&d).await?;
    Ok(Rows {
        records,
        pages,
        unique,
        fetch_secs: fetch.as_secs_f64(),
        map_secs: map.as_secs_f64(),
        fetch_cpu_sandbox,
    })
}

const COLUMNS: &str =
    "owner_id, name, phone_number, email, notes, source_provider, external_id, source_updated_at";

/// Wall time of one binary `COPY` of `rows` into a fresh database's `contacts`.
pub async fn copy_run(stack: &Stack, rows: &[Contact]) -> Result<(f64, u64), Error> {
    use futures::pin_mut;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    let d = stack.deploy().await?;
    let client = crmsync_testkit::connect(&d.db_url).await;
    let owner = Uuid::new_v4();
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ];
    let started = Instant::now();
    let sink = client
        .copy_in(&format!(
            "COPY contacts ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for c in rows {
        let phone = c.phone.as_str();
        let source = c.source.as_str();
        writer
            .as_mut()
            .write(&[
                &owner,
                &c.name,
                &phone,
                &c.email,
                &c.notes,
                &source,
                &c.external_id,
                &c.updated_at,
            ])
            .await?;
    }
    writer.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    let n = count_rows(&d.db_url).await?;
    drop(client);
    stack.drop_deployment(&d).await?;
    Ok((secs, n))
}

/// The naive upsert: the store's statement for one row.
const NAIVE_UPSERT: &str = "\
INSERT INTO contacts AS c (owner_id, name, phone_number, email, notes, source_provider, external_id,
                           source_updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (owner_id, phone_number) DO UPDATE SET
       name = EXCLUDED.name,
       email = COALESCE(EXCLUDED.email, c.email),
       notes = COALESCE(EXCLUDED.notes, c.notes),
       source_provider = EXCLUDED.source_provider,
       external_id = EXCLUDED.external_id,
       source_updated_at = EXCLUDED.source_updated_at,
       updated_at = now()";

/// Wall time of one upsert statement per contact (prepared once, each its own transaction).
pub async fn naive_run(stack: &Stack, rows: &[Contact]) -> Result<(f64, u64), Error> {
    let d = stack.deploy().await?;
    let client = crmsync_testkit::connect(&d.db_url).await;
    let owner = Uuid::new_v4();
    let stmt = client.prepare(NAIVE_UPSERT).await?;
    let started = Instant::now();
    for c in rows {
        let phone = c.phone.as_str();
        let source = c.source.as_str();
        let name = c.display_name();
        client
            .execute(
                &stmt,
                &[
                    &owner,
                    &name,
                    &phone,
                    &c.email,
                    &c.notes,
                    &source,
                    &c.external_id,
                    &c.updated_at,
                ],
            )
            .await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = count_rows(&d.db_url).await?;
    drop(client);
    stack.drop_deployment(&d).await?;
    Ok((secs, n))
}

/// An integration of `owner` for the writes to belong to (its credentials are never opened).
async fn bench_integration(db_url: &str, owner: Uuid) -> Result<Uuid, Error> {
    let admin = crmsync_testkit::connect(db_url).await;
    let row = admin
        .query_one(
            "INSERT INTO crm_integrations
                (user_id, provider, auth_type, credentials_ciphertext, credentials_nonce,
                 credentials_key_version)
             VALUES ($1, 'followupboss', 'api_key', '\\x00', '\\x000000000000000000000000', 'bench')
             RETURNING id",
            &[&owner],
        )
        .await?;
    Ok(row.get(0))
}

/// Wall time of the sync's writes alone: each page with the store's page upsert, no CRM.
pub async fn batched_run(stack: &Stack, pages: &[Vec<Contact>]) -> Result<(f64, u64), Error> {
    let d = stack.deploy().await?;
    let store = Store::connect(&d.db_url, 1)?;
    let owner = Uuid::new_v4();
    let integration = bench_integration(&d.db_url, owner).await?;
    // The first statement opens the connection; keep that out of the timing.
    store
        .upsert_contacts(owner, integration, Vec::new())
        .await?;
    // Gathered as the sync's writer gathers pages that arrive faster than it writes.
    let mut batches: Vec<Vec<Contact>> = Vec::new();
    for page in pages {
        match batches.last_mut() {
            Some(b) if b.len() < crmsync_app::pull::WRITE_BATCH => b.extend(page.iter().cloned()),
            _ => batches.push(page.clone()),
        }
    }
    let started = Instant::now();
    for batch in batches {
        store.upsert_contacts(owner, integration, batch).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(store);
    let n = count_rows(&d.db_url).await?;
    stack.drop_deployment(&d).await?;
    Ok((secs, n))
}

/// The seed's write, as PostgREST runs a Supabase `upsert(rows, { onConflict: 'phone_number' })` of a
/// page: the page's rows as one JSON body, one statement, each its own transaction.
const SEED_UPSERT: &str = "\
INSERT INTO contacts (owner_id, name, phone_number, email, notes, source_provider, external_id,
                      source_updated_at)
SELECT owner_id, name, phone_number, email, notes, source_provider, external_id, source_updated_at
  FROM json_populate_recordset(NULL::contacts, $1::text::json)
ON CONFLICT (owner_id, phone_number) DO UPDATE SET
       name = EXCLUDED.name,
       email = EXCLUDED.email,
       notes = EXCLUDED.notes,
       source_provider = EXCLUDED.source_provider,
       external_id = EXCLUDED.external_id,
       source_updated_at = EXCLUDED.source_updated_at";

/// A page as the seed had to send it: one row per phone, the last record of the page with that phone
/// (one statement cannot update a row twice: "ON CONFLICT DO UPDATE command cannot affect row a
/// second time"), in the order of their first appearance.
pub fn seed_page(page: &[Contact]) -> Vec<&Contact> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(page.len());
    let mut out: Vec<&Contact> = Vec::with_capacity(page.len());
    for c in page {
        match at.get(c.phone.as_str()) {
            Some(&i) => out[i] = c,
            None => {
                at.insert(c.phone.as_str(), out.len());
                out.push(c);
            }
        }
    }
    out
}

/// What one seed-shaped run did: wall time, statements, rows sent, rows of the pages dropped as
/// duplicates within their page, and the rows left in `contacts`.
#[derive(Debug, Clone, Default)]
pub struct SeedRun {
    pub secs: f64,
    pub statements: u64,
    pub sent: u64,
    pub deduped: u64,
    pub rows: u64,
}

/// Wall time of the seed-shaped peer: every fetched page upserted in one statement (de-duplicated
/// by phone within the page first), no CRM.
pub async fn seed_batch_run(stack: &Stack, pages: &[Vec<Contact>]) -> Result<SeedRun, Error> {
    let d = stack.deploy().await?;
    let client = crmsync_testkit::connect(&d.db_url).await;
    let owner = Uuid::new_v4().to_string();
    // The JSON bodies are made before the clock starts (PostgREST gets them from the client).
    let mut run = SeedRun::default();
    let mut bodies = Vec::with_capacity(pages.len());
    for page in pages.iter().filter(|p| !p.is_empty()) {
        let rows = seed_page(page);
        run.deduped += (page.len() - rows.len()) as u64;
        run.sent += rows.len() as u64;
        let body: Vec<Value> = rows
            .iter()
            .map(|c| {
                json!({
                    "owner_id": owner,
                    "name": c.display_name(),
                    "phone_number": c.phone.as_str(),
                    "email": c.email,
                    "notes": c.notes,
                    "source_provider": c.source.as_str(),
                    "external_id": c.external_id,
                    "source_updated_at": c.updated_at.map(|t| t.to_rfc3339()),
                })
            })
            .collect();
        bodies.push(Value::Array(body).to_string());
    }
    let stmt = client.prepare(SEED_UPSERT).await?;
    let started = Instant::now();
    for body in &bodies {
        client.execute(&stmt, &[body]).await?;
        run.statements += 1;
    }
    run.secs = started.elapsed().as_secs_f64();
    run.rows = count_rows(&d.db_url).await?;
    drop(client);
    stack.drop_deployment(&d).await?;
    Ok(run)
}
