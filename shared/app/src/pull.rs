//! Pull: contacts from a CRM into `contacts`, for inspection (`fetch`) or by a sync (`sync`).
//!
//! A sync is one *read* of the CRM account, resumable if it is cut short:
//! * a read of the **changes** since the saved cursor, where the CRM lists them
//!   ([`CrmKind::lists_changes`]): REX oldest first by `system_modtime`, Follow Up Boss newest first
//!   with an early stop, so an incremental sync costs what changed;
//! * a **complete read** of the account: the first sync, `?full=true`, a CRM that cannot list changes
//!   (Lofty: its records carry no update time, so each sync reads it all and compares it with what is
//!   stored, writing only what changed), a changes listing the CRM will not page any deeper, and, for
//!   the scheduled run, once every [`FULL_READ_EVERY`]. At its end, every record it did not see is
//!   marked deleted (what a CRM deletes without telling: Lofty's deleted leads, REX's archived
//!   contacts, Follow Up Boss's trash).
//!
//! Pages stream through (memory bounded by a few pages): each page is mapped and filtered (a changes
//! read keeps what changed at or after the saved cursor and was not already stored at that exact
//! instant) while the pages before it are written. The writer takes the pages that have arrived (up to
//! 1,000 records) and writes them as sources of their contacts (see `crmsync_store`) in one
//! transaction with the read's progress, so a killed sync resumes where it stopped. The saved cursor
//! moves only when a read finishes, to the latest update time it saw — never to a time beyond our clock
//! plus [`MAX_CLOCK_SKEW`]. One sync per integration runs at a time.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_crm::{CrmError, CrmKind, Listing, PageRequest};
use crmsync_domain::{
    Contact, Direction, LogStatus, MAX_CLOCK_SKEW, Mapped, NormalizedContact, Provider, Region,
    SyncCursor, Trigger,
};
use crmsync_store::{IntegrationRecord, NewSyncLog, SourceBatch, UpsertReport};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credentials::{Connection, Session, phone_region};
use crate::{AppError, Context};

/// Records asked for per page (the largest page every CRM allows).
pub const PAGE_SIZE: u32 = 100;
/// A fetch looks at no more than this many pages, however many records lack a phone.
const FETCH_MAX_PAGES: usize = 20;
/// The scheduled run reads each account in full at least this often, to see what was deleted without
/// the CRM listing it as changed.
pub const FULL_READ_EVERY: chrono::Duration = chrono::Duration::hours(24);

/// What is saved in `crm_integrations.sync_cursor`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullState {
    /// Everything the CRM changed before this mark is stored.
    #[serde(flatten)]
    pub cursor: SyncCursor,
    /// A read that was cut short, to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Read>,
}

/// A read of a CRM account in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// A complete read (what it does not see is gone), else a read of the changes since the cursor.
    pub complete: bool,
    pub started_at: DateTime<Utc>,
    /// Where the listing is, for a CRM that pages by it ([`CrmKind::pages_by_cursor`]).
    #[serde(default)]
    pub position: SyncCursor,
    /// The CRM's token for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// The latest update time this read stored.
    #[serde(default)]
    pub seen: SyncCursor,
}

impl PullState {
    pub fn from_stored(value: Option<&serde_json::Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The metrics of a sync, as the contract names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncMetrics {
    pub upserted: u64,
    pub total_fetched: u64,
    pub skipped: u64,
    /// Records the sync found deleted (deleted, trashed or archived in the CRM, or gone from a complete
    /// read).
    pub deleted: u64,
    pub duration_ms: u64,
    /// The high-water mark after the sync (RFC 3339), `null` before any dated record.
    pub cursor: Option<String>,
    /// `false` when the sync stopped at a page boundary before the end (time limit); the next run
    /// continues from there.
    pub complete: bool,
    /// Whether this sync read the whole account (and so marked what it did not see as deleted).
    pub full_read: bool,
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// What a sync is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncRequest {
    /// Replaces the saved cursor: the changes since then are read again.
    pub since: Option<DateTime<Utc>>,
    /// A complete read, whatever was saved.
    pub full: bool,
}

/// The caller's integration with `provider`, or `NotFound`.
pub async fn connected(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
) -> Result<IntegrationRecord, AppError> {
    ctx.store
        .integration_by_provider(user, provider)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!("No {} integration is connected.", provider.label()))
        })
}

/// Runs a sync of `user`'s integration with `provider` (see [`sync`]).
pub async fn sync_provider(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
    request: SyncRequest,
    trigger: Trigger,
    deadline: Option<Instant>,
) -> Result<SyncMetrics, AppError> {
    let integration = connected(ctx, user, provider).await?;
    sync(ctx, &integration, request, trigger, deadline).await
}

/// Runs a sync of `integration` (already checked to belong to the caller). `deadline`: stop cleanly at
/// a page boundary once past it. `Busy` while another sync of the integration runs.
pub async fn sync(
    ctx: &Context,
    integration: &IntegrationRecord,
    request: SyncRequest,
    trigger: Trigger,
    deadline: Option<Instant>,
) -> Result<SyncMetrics, AppError> {
    let (user, id, provider) = (integration.user_id, integration.id, integration.provider);
    let lease = ctx.store.try_lock_sync(user, id).await?.ok_or_else(|| {
        AppError::Busy(format!(
            "A sync of this {} integration is already running.",
            provider.label()
        ))
    })?;
    // Read again under the lock: the previous sync may have moved the cursor since the caller looked.
    let integration = ctx
        .store
        .get_integration(user, id)
        .await?
        .ok_or_else(|| AppError::NotFound("The integration no longer exists.".into()))?;
    let started = Instant::now();
    let result = run(ctx, &integration, request, trigger, deadline, started).await;
    let log = |status: LogStatus, metrics: &SyncMetrics, error: Option<String>| NewSyncLog {
        integration_id: Some(id),
        provider,
        direction: Direction::Pull,
        trigger,
        status,
        lead_id: None,
        action: None,
        attempts: 1,
        metrics: serde_json::to_value(metrics).ok(),
        error,
    };
    let outcome = match result {
        Ok((mut metrics, state, complete_read)) => {
            let status = if metrics.complete {
                LogStatus::Success
            } else {
                LogStatus::Partial
            };
            ctx.store
                .finish_sync(user, id, &state.to_json(), complete_read, |unseen| {
                    metrics.deleted += unseen;
                    log(status, &metrics, None)
                })
                .await?;
            crate::metrics::sync_finished(provider, &metrics, false);
            tracing::info!(
                provider = provider.as_str(), integration = %id, upserted = metrics.upserted,
                fetched = metrics.total_fetched, skipped = metrics.skipped, deleted = metrics.deleted,
                ms = metrics.duration_ms, complete = metrics.complete, full = metrics.full_read,
                "pull sync finished"
            );
            Ok(metrics)
        }
        Err((err, metrics)) => {
            crate::metrics::sync_finished(provider, &metrics, true);
            let entry = log(LogStatus::Failed, &metrics, Some(err.detail()));
            if let Err(e) = ctx.store.insert_sync_log(user, &entry).await {
                tracing::error!(error = %e, "could not log a failed sync");
            }
            Err(err)
        }
    };
    lease.release().await?;
    outcome
}

/// A finished (or cut short) run: its metrics, the state to save, and the start of the complete read
/// it finished, if it did.
type RunResult = Result<(SyncMetrics, PullState, Option<DateTime<Utc>>), (AppError, SyncMetrics)>;

/// Where a sync starts: the read to resume, or a new one.
fn plan(
    kind: &dyn CrmKind,
    integration: &IntegrationRecord,
    request: SyncRequest,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> PullState {
    let mut state = PullState::from_stored(integration.sync_cursor.as_ref());
    if let Some(since) = request.since {
        state.cursor = SyncCursor::starting_at(since);
        state.read = None;
    }
    if request.full {
        state.read = None;
    }
    match &mut state.read {
        Some(read) => {
            if !kind.page_token_survives_restart() {
                // The CRM's page token of an interrupted read does not list the same records now:
                // resume from the read's position.
                read.page_token = None;
            }
        }
        None => {
            let stale = integration
                .last_full_sync_at
                .is_none_or(|t| now - t > FULL_READ_EVERY);
            let complete = request.full
                || !kind.lists_changes()
                || (state.cursor.since.is_none() && request.since.is_none())
                || (trigger == Trigger::Schedule && stale);
            state.read = Some(Read {
                complete,
                started_at: now,
                position: if complete {
                    SyncCursor::default()
                } else {
                    state.cursor.clone()
                },
                page_token: None,
                seen: SyncCursor::default(),
            });
        }
    }
    state
}

async fn run(
    ctx: &Context,
    integration: &IntegrationRecord,
    request: SyncRequest,
    trigger: Trigger,
    deadline: Option<Instant>,
    started: Instant,
) -> RunResult {
    let mut metrics = SyncMetrics::default();
    let mut conn = Connection::open(ctx, integration)
        .await
        .map_err(|e| (e, metrics.clone()))?;
    let state = plan(
        conn.client.kind(),
        integration,
        request,
        trigger,
        Utc::now(),
    );
    let region = phone_region(ctx, integration);
    // Reading (the CRM's answer, JSON, mapping) and writing (Postgres) overlap: the reader runs up to
    // `READ_AHEAD` pages ahead, and the writer commits whatever has arrived (up to `WRITE_BATCH`
    // records) in one transaction with the state after its last page. Both run in this task; the
    // CRM and Postgres work meanwhile in their own processes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Pages>(READ_AHEAD);
    let reader = read_pages(&mut conn, region, state.clone(), deadline, tx);
    let writer = async {
        // Owned here, so that a writer that fails closes the channel and the reader stops.
        let mut rx = rx;
        let mut written: Option<PullState> = None;
        while let Some(mut batch) = rx.recv().await {
            while batch.live.len() + batch.gone.len() < WRITE_BATCH && !batch.last {
                match rx.try_recv() {
                    Ok(next) => batch.absorb(next),
                    Err(_) => break,
                }
            }
            metrics.total_fetched += batch.fetched;
            metrics.skipped += batch.skipped;
            let seen_at = batch
                .state
                .read
                .as_ref()
                .filter(|r| r.complete)
                .map(|r| r.started_at);
            let saved = if batch.last {
                finished(batch.state.clone())
            } else {
                batch.state.clone()
            };
            let records = SourceBatch {
                live: batch.live,
                gone: batch.gone,
                seen_at,
            };
            let report: UpsertReport = ctx
                .store
                .commit_page(
                    integration.user_id,
                    integration.id,
                    records,
                    &saved.to_json(),
                )
                .await?;
            metrics.upserted += report.upserted();
            metrics.deleted += report.deleted;
            metrics.cursor = rfc3339(saved.cursor.since);
            metrics.complete = batch.last;
            written = Some(batch.state);
        }
        Ok::<_, AppError>(written)
    };
    let (read, written) = tokio::join!(reader, writer);
    metrics.duration_ms = started.elapsed().as_millis() as u64;
    // The writer's failure first: the reader stopped because of it.
    let written = written.map_err(|e| (e, metrics.clone()))?;
    read.map_err(|e| (e, metrics.clone()))?;
    let last = written.unwrap_or(state);
    metrics.full_read = last.read.as_ref().is_some_and(|r| r.complete);
    let complete_read = last
        .read
        .as_ref()
        .filter(|r| r.complete && metrics.complete)
        .map(|r| r.started_at);
    let saved = if metrics.complete {
        finished(last)
    } else {
        last
    };
    metrics.cursor = rfc3339(saved.cursor.since);
    Ok((metrics, saved, complete_read))
}

/// The state once its read is finished: the cursor moved to what the read saw.
fn finished(mut state: PullState) -> PullState {
    if let Some(read) = state.read.take() {
        state.cursor.merge(&read.seen);
    }
    state
}

/// Pages the reader runs ahead of the writer.
const READ_AHEAD: usize = 8;
/// Records the writer gathers into one transaction when pages arrive faster than it writes.
pub const WRITE_BATCH: usize = 1_000;

/// Pages read and mapped, waiting to be written, with the state after the last of them.
struct Pages {
    live: Vec<Contact>,
    gone: Vec<String>,
    state: PullState,
    fetched: u64,
    skipped: u64,
    /// The last page of the read.
    last: bool,
}

impl Pages {
    /// Appends the next pages (records stay in order: the latest version of a record wins).
    fn absorb(&mut self, next: Pages) {
        self.live.extend(next.live);
        self.gone.extend(next.gone);
        self.state = next.state;
        self.fetched += next.fetched;
        self.skipped += next.skipped;
        self.last = next.last;
    }
}

/// Reads pages from `state` on, maps and filters them, and sends them to the writer, until the last
/// page, the deadline, or an error. Stops early (`Ok`) when the writer has stopped.
async fn read_pages(
    conn: &mut impl Session,
    region: Region,
    mut state: PullState,
    deadline: Option<Instant>,
    tx: tokio::sync::mpsc::Sender<Pages>,
) -> Result<(), AppError> {
    let provider = conn.client().provider();
    let kind = conn.client().kind();
    loop {
        let Some(read) = state.read.as_mut() else {
            return Err(AppError::internal("a sync started without a read"));
        };
        let listing = if read.complete {
            Listing::All
        } else {
            Listing::Changes {
                since: state.cursor.since,
            }
        };
        let request = PageRequest {
            listing,
            position: &read.position,
            page_token: read.page_token.as_deref(),
            limit: PAGE_SIZE,
            region,
        };
        let page = match conn.client().list_page(request).await {
            Ok(page) => page,
            // The CRM will not page the changes any deeper: read the account in full instead.
            Err(CrmError::ListingTooDeep) if !read.complete => {
                tracing::info!(
                    provider = provider.as_str(),
                    "too many changes to page through; reading the account in full"
                );
                read.complete = true;
                read.started_at = Utc::now();
                read.position = SyncCursor::default();
                read.page_token = None;
                continue;
            }
            // A saved page token the CRM no longer accepts: start the listing again; what is already
            // stored is not written again.
            Err(CrmError::Upstream {
                status: 400..=499, ..
            }) if read.page_token.is_some() => {
                tracing::warn!(
                    provider = provider.as_str(),
                    "saved page token refused; listing again"
                );
                read.page_token = None;
                continue;
            }
            Err(CrmError::InvalidCredentials) => {
                conn.recover().await?;
                continue;
            }
            Err(e) => return Err(AppError::from_crm(provider, e)),
        };
        let Some(read) = state.read.as_mut() else {
            return Err(AppError::internal("a sync lost its read"));
        };
        let before = read.position.clone();
        let read_count = page.records.len() as u64;
        let admitted = admit_page(kind, page.records, &state.cursor, read);
        read.page_token = if page.has_more {
            page.next_token.clone()
        } else {
            None
        };
        let stuck = page.has_more && page.next_token.is_none() && read.position == before;
        let pages = Pages {
            live: admitted.live,
            gone: admitted.gone,
            state: state.clone(),
            // Records read again because they are the ones already stored at the cursor's instant
            // (REX reads its cursor's second from its first record) are not counted as fetched.
            fetched: read_count - admitted.reread,
            skipped: admitted.skipped,
            last: !page.has_more,
        };
        if tx.send(pages).await.is_err() {
            return Ok(());
        }
        if !page.has_more {
            return Ok(());
        }
        // Paging by the cursor alone (REX) must move it; a CRM that repeats itself would loop forever.
        if stuck {
            tracing::error!(
                provider = provider.as_str(),
                "the CRM returned a page that moved nothing"
            );
            return Err(AppError::Upstream(format!(
                "{} kept returning the same records.",
                provider.label()
            )));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// What a page gave: the live records to store, the ids of those that are no longer a live source,
/// how many records had no usable phone, and how many were the records already stored at the cursor's
/// instant, read again.
struct Admitted {
    live: Vec<Contact>,
    gone: Vec<String>,
    skipped: u64,
    reread: u64,
}

/// Maps a page and keeps what the read admits: every record of a complete read, the records of a
/// changes read that changed at or after `cursor` and were not stored at its instant. Moves the read's
/// position (for a CRM that pages by it) and its high-water mark.
fn admit_page(
    kind: &dyn CrmKind,
    records: Vec<Mapped>,
    cursor: &SyncCursor,
    read: &mut Read,
) -> Admitted {
    let mut admitted = Admitted {
        live: Vec::with_capacity(records.len()),
        gone: Vec::new(),
        skipped: 0,
        reread: 0,
    };
    let latest = Utc::now() + MAX_CLOCK_SKEW;
    let mut future = 0u64;
    let position = read.position.clone();
    for mapped in records {
        let updated = mapped.updated_at();
        let id = mapped.external_id().unwrap_or_default().to_owned();
        let by_cursor = kind.pages_by_cursor();
        let repeated = by_cursor && !position.admits(&id, updated);
        let old = !read.complete && !cursor.admits(&id, updated);
        if repeated || old {
            if updated.is_some() && (updated == position.since || updated == cursor.since) {
                admitted.reread += 1;
            }
            continue;
        }
        if by_cursor {
            read.position.observe(&id, updated);
        }
        if !read.seen.observe_until(&id, updated, latest) {
            future += 1;
        }
        match mapped {
            Mapped::Contact(c) if c.deleted => admitted.gone.push(id),
            Mapped::Contact(c) => admitted.live.push(c),
            Mapped::Skipped(s) => {
                admitted.skipped += 1;
                // A record without a usable phone (now) is no source of any contact.
                if let Some(id) = s.external_id {
                    admitted.gone.push(id);
                }
            }
        }
    }
    if future > 0 {
        tracing::warn!(
            provider = kind.provider().as_str(),
            records = future,
            "records dated in the future do not move the cursor"
        );
    }
    admitted
}

/// What `contacts-fetch` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub contacts: Vec<NormalizedContact>,
    pub count: usize,
    /// Records seen without a usable phone (not shown).
    pub skipped: u64,
}

/// Up to `limit` normalized contacts of `user`'s `provider` account changed at or after `since` (for a
/// CRM whose records carry no update time: created at or after it). Writes nothing.
pub async fn fetch(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Fetched, AppError> {
    let integration = connected(ctx, user, provider).await?;
    let mut conn = Connection::open(ctx, &integration).await?;
    let kind = conn.client.kind();
    let listing = if kind.lists_changes() {
        Listing::Changes { since }
    } else {
        Listing::All
    };
    let mut read = Read {
        complete: true,
        started_at: Utc::now(),
        position: since.map(SyncCursor::starting_at).unwrap_or_default(),
        page_token: None,
        seen: SyncCursor::default(),
    };
    let mut contacts = Vec::new();
    let mut skipped: u64 = 0;
    let region = phone_region(ctx, &integration);
    let mut pages = 0;
    while pages < FETCH_MAX_PAGES {
        let request = PageRequest {
            listing,
            position: &read.position,
            page_token: read.page_token.as_deref(),
            limit: PAGE_SIZE.min(limit.max(1)),
            region,
        };
        let page = match conn.client.list_page(request).await {
            Ok(page) => page,
            Err(CrmError::InvalidCredentials) => {
                conn.recover().await?;
                continue;
            }
            Err(e) => return Err(AppError::from_crm(provider, e)),
        };
        pages += 1;
        let in_range = |t: Option<DateTime<Utc>>| match (since, t) {
            (None, _) => true,
            (Some(since), t) => t.is_some_and(|t| t >= since),
        };
        let wanted = |c: &Contact| in_range(c.updated_at.or(c.created_at));
        // Skipped records count where they fall in the range (a page may reach past `since`).
        skipped += page
            .records
            .iter()
            .filter(|m| m.skipped().is_some_and(|s| !s.deleted) && in_range(m.updated_at()))
            .count() as u64;
        let admitted = admit_page(kind, page.records, &SyncCursor::default(), &mut read);
        contacts.extend(
            admitted
                .live
                .iter()
                .filter(|c| wanted(c))
                .map(NormalizedContact::from),
        );
        if contacts.len() >= limit as usize || !page.has_more {
            break;
        }
        read.page_token = page.next_token;
    }
    contacts.truncate(limit as usize);
    Ok(Fetched {
        count: contacts.len(),
        contacts,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_filtered_by_the_cursor_and_moves_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut cursor = SyncCursor::starting_at(t("2026-03-01T00:00:00Z"));
        cursor.observe("1", Some(t("2026-03-01T00:00:00Z")));
        let page = vec![
            // Already stored at the boundary instant.
            json!({"id": 1, "updated": "2026-03-01T00:00:00Z", "phones": [{"value": "+14155550101"}]}),
            // Same instant, not yet stored.
            json!({"id": 2, "updated": "2026-03-01T00:00:00Z", "phones": [{"value": "+14155550102"}]}),
            // Older than the cursor.
            json!({"id": 3, "updated": "2026-02-01T00:00:00Z", "phones": [{"value": "+14155550103"}]}),
            // Newer, without a phone.
            json!({"id": 4, "updated": "2026-03-02T00:00:00Z"}),
            json!({"id": 5, "updated": "2026-03-02T00:00:00Z", "phones": [{"value": "(415) 555-0105"}]}),
        ];
        let mut read = Read {
            complete: false,
            started_at: Utc::now(),
            position: cursor.clone(),
            page_token: None,
            seen: SyncCursor::default(),
        };
        let Admitted {
            live,
            skipped,
            gone,
            ..
        } = admit_page(
            crmsync_crm::kind(Provider::FollowUpBoss),
            crate::fake::page(page, None).records,
            &cursor,
            &mut read,
        );
        let ids: Vec<_> = live
            .iter()
            .map(|c| c.external_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["2", "5"]);
        assert_eq!(skipped, 1);
        assert_eq!(gone, ["4"], "a record without a phone is no source");
        // The read's high-water mark: the cursor once the read finishes.
        let cursor = finished(PullState {
            cursor,
            read: Some(read),
        })
        .cursor;
        assert_eq!(cursor.since, Some(t("2026-03-02T00:00:00Z")));
        let mut boundary = cursor.boundary_ids.clone();
        boundary.sort();
        assert_eq!(
            boundary,
            ["4", "5"],
            "the phoneless record moves the cursor too"
        );
    }

    fn changes_state() -> PullState {
        PullState {
            cursor: SyncCursor::starting_at(Utc::now()),
            read: Some(Read {
                complete: true,
                started_at: Utc::now(),
                position: SyncCursor::default(),
                page_token: Some("eyJzaW5jZUlkIjoxMDV9".into()),
                seen: SyncCursor::default(),
            }),
        }
    }

    mod reader_rules {
        //! The rules of the page reader, against a fake CRM.
        use super::super::*;
        use crate::fake::{Call, FakeCrm, page, person};
        use crmsync_crm::CrmClient;
        use serde_json::json;

        /// A client that cannot recover from refused credentials.
        struct Plain(CrmClient);

        impl Session for Plain {
            fn client(&self) -> &CrmClient {
                &self.0
            }

            async fn recover(&mut self) -> Result<(), AppError> {
                Err(AppError::InvalidCredentials("refused".into()))
            }
        }

        /// A changes read from `cursor` (and `page_token`).
        fn changes(cursor: SyncCursor, page_token: Option<&str>) -> PullState {
            PullState {
                read: Some(Read {
                    complete: false,
                    started_at: Utc::now(),
                    position: cursor.clone(),
                    page_token: page_token.map(str::to_owned),
                    seen: SyncCursor::default(),
                }),
                cursor,
            }
        }

        /// Runs the reader from `state` and collects what it sends to the writer.
        async fn read(
            crm: &std::sync::Arc<FakeCrm>,
            state: PullState,
            deadline: Option<Instant>,
        ) -> (Result<(), AppError>, Vec<Pages>) {
            let mut session = Plain(crm.client());
            let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            let reader = read_pages(&mut session, Region::US, state, deadline, tx);
            let collect = async {
                let mut got = Vec::new();
                while let Some(p) = rx.recv().await {
                    got.push(p);
                }
                got
            };
            tokio::join!(reader, collect)
        }

        fn ids(p: &Pages) -> Vec<String> {
            p.live
                .iter()
                .map(|c| c.external_id.clone().unwrap())
                .collect()
        }

        #[tokio::test]
        async fn pages_are_followed_to_the_end_and_filtered_by_the_cursor() {
            let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            let mut cursor = SyncCursor::starting_at(t("2026-03-01T00:00:00Z"));
            cursor.observe("1", Some(t("2026-03-01T00:00:00Z")));
            let crm = FakeCrm::new();
            crm.page(Ok(page(
                vec![
                    person(1, "2026-03-01T00:00:00Z", Some("+14155550101")),
                    person(2, "2026-03-02T00:00:00Z", Some("+14155550102")),
                ],
                Some("t2"),
            )))
            .page(Ok(page(
                vec![
                    person(3, "2026-03-03T00:00:00Z", Some("+14155550103")),
                    person(4, "2026-03-03T00:00:00Z", None),
                ],
                None,
            )));
            let (result, pages) = read(&crm, changes(cursor, None), None).await;
            result.unwrap();
            assert_eq!(
                crm.calls(),
                [
                    Call::List { page_token: None },
                    Call::List {
                        page_token: Some("t2".into())
                    }
                ]
            );
            assert_eq!(pages.len(), 2);
            assert_eq!(ids(&pages[0]), ["2"]);
            assert_eq!(
                pages[0].fetched, 1,
                "the record stored at the cursor is not fetched again"
            );
            assert!(!pages[0].last);
            let token = |p: &Pages| p.state.read.as_ref().unwrap().page_token.clone();
            assert_eq!(token(&pages[0]).as_deref(), Some("t2"));
            assert_eq!(ids(&pages[1]), ["3"]);
            assert_eq!(pages[1].skipped, 1, "a record without a phone is skipped");
            assert!(pages[1].last);
            assert_eq!(token(&pages[1]), None);
            assert_eq!(
                finished(pages[1].state.clone()).cursor.since,
                Some(t("2026-03-03T00:00:00Z")),
                "the skipped record moves the cursor too"
            );
        }

        #[tokio::test]
        async fn a_refused_saved_page_token_starts_the_listing_again() {
            let crm = FakeCrm::new();
            crm.page(Err(CrmError::Upstream {
                status: 400,
                message: "bad next".into(),
            }))
            .page(Ok(page(
                vec![person(5, "2026-03-03T00:00:00Z", Some("+14155550105"))],
                None,
            )));
            let state = changes(SyncCursor::default(), Some("stale"));
            let (result, pages) = read(&crm, state, None).await;
            result.unwrap();
            assert_eq!(
                crm.calls(),
                [
                    Call::List {
                        page_token: Some("stale".into())
                    },
                    Call::List { page_token: None }
                ]
            );
            assert_eq!(ids(&pages[0]), ["5"]);
        }

        #[tokio::test]
        async fn a_crm_that_repeats_itself_is_an_error_not_an_endless_loop() {
            let crm = FakeCrm::new();
            // More to read, no token, and nothing that moves the cursor.
            for _ in 0..3 {
                crm.page(Ok(crmsync_crm::Page {
                    records: vec![],
                    next_token: None,
                    has_more: true,
                }));
            }
            let (result, _) = read(&crm, changes(SyncCursor::default(), None), None).await;
            let err = result.unwrap_err();
            assert!(matches!(err, AppError::Upstream(_)), "{err:?}");
            assert!(err.detail().contains("same records"), "{}", err.detail());
            assert_eq!(crm.calls().len(), 1);
        }

        #[tokio::test]
        async fn a_reader_past_its_deadline_stops_at_a_page_boundary() {
            let crm = FakeCrm::new();
            crm.page(Ok(page(
                vec![person(6, "2026-03-03T00:00:00Z", Some("+14155550106"))],
                Some("t2"),
            )));
            let state = changes(SyncCursor::default(), None);
            let (result, pages) = read(&crm, state, Some(Instant::now())).await;
            result.unwrap();
            assert_eq!(crm.calls().len(), 1);
            assert_eq!(pages.len(), 1);
            assert!(
                !pages[0].last,
                "the next run continues from the saved token"
            );
            let read = pages[0].state.read.as_ref().unwrap();
            assert_eq!(read.page_token.as_deref(), Some("t2"));
        }

        #[tokio::test]
        async fn refused_credentials_end_the_read_with_a_reconnect_error() {
            let crm = FakeCrm::new();
            crm.page(Err(CrmError::InvalidCredentials));
            let (result, pages) = read(&crm, changes(SyncCursor::default(), None), None).await;
            assert!(
                matches!(result, Err(AppError::InvalidCredentials(_))),
                "{result:?}"
            );
            assert!(pages.is_empty());
            let _ = json!(null);
        }
    }

    #[test]
    fn the_saved_state_round_trips_and_tolerates_junk() {
        let state = changes_state();
        let json = state.to_json();
        assert_eq!(PullState::from_stored(Some(&json)), state);
        // The state of a sync saved before reads were resumable: its cursor is kept.
        let old =
            json!({"since": "2026-03-01T00:00:00Z", "boundary_ids": ["1"], "page_token": "x"});
        let old = PullState::from_stored(Some(&old));
        assert_eq!(old.cursor.boundary_ids, ["1"]);
        assert_eq!(old.read, None);
        let state = PullState {
            cursor: SyncCursor::starting_at(Utc::now()),
            read: None,
        };
        let json = state.to_json();
        assert_eq!(PullState::from_stored(Some(&json)), state);
        assert_eq!(
            PullState::from_stored(Some(&json!("junk"))),
            PullState::default()
        );
        assert_eq!(PullState::from_stored(None), PullState::default());
    }
}
