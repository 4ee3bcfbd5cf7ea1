//! Pull: contacts from a CRM into `contacts`, for inspection (`fetch`) or incrementally (`sync`).
//!
//! A sync streams pages (memory bounded by a few pages): each page is mapped and filtered through the
//! cursor (records at or after its high-water mark that were not already stored at that exact instant)
//! while the pages before it are written. The writer takes the pages that have arrived (up to 1,000
//! contacts), de-duplicates them by phone and upserts them in one statement, and saves the cursor —
//! with the CRM's page token, so a killed sync resumes where it stopped — in the same transaction. One
//! sync per integration runs at a time.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_crm::{CrmClient, CrmError, CrmKind};
use crmsync_domain::{
    Contact, Direction, LogStatus, Mapped, NormalizedContact, Provider, Region, SyncCursor, Trigger,
};
use crmsync_store::{IntegrationRecord, NewSyncLog, UpsertReport};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credentials::crm_client;
use crate::{AppError, Context};

/// Records asked for per page (the largest page every CRM allows).
pub const PAGE_SIZE: u32 = 100;
/// A fetch looks at no more than this many pages, however many records lack a phone.
const FETCH_MAX_PAGES: usize = 20;

/// What is saved in `crm_integrations.sync_cursor`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullState {
    #[serde(flatten)]
    pub cursor: SyncCursor,
    /// The CRM's token for the next page of an unfinished run (Follow Up Boss `next`, Lofty `scrollId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
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
    pub duration_ms: u64,
    /// The high-water mark after the sync (RFC 3339), `null` before any dated record.
    pub cursor: Option<String>,
    /// `false` when the sync stopped at a page boundary before the end (time limit); the next run
    /// continues from there.
    pub complete: bool,
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
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
    since: Option<DateTime<Utc>>,
    trigger: Trigger,
    deadline: Option<Instant>,
) -> Result<SyncMetrics, AppError> {
    let integration = connected(ctx, user, provider).await?;
    sync(ctx, &integration, since, trigger, deadline).await
}

/// Runs a sync of `integration` (already checked to belong to the caller). `since` replaces the saved
/// cursor. `deadline`: stop cleanly at a page boundary once past it. `Busy` while another sync of the
/// integration runs.
pub async fn sync(
    ctx: &Context,
    integration: &IntegrationRecord,
    since: Option<DateTime<Utc>>,
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
    let result = run(ctx, &integration, since, deadline, started).await;
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
        Ok((metrics, state)) => {
            let status = if metrics.complete {
                LogStatus::Success
            } else {
                LogStatus::Partial
            };
            ctx.store
                .finish_sync(user, id, &state.to_json(), &log(status, &metrics, None))
                .await?;
            tracing::info!(
                provider = provider.as_str(), integration = %id, upserted = metrics.upserted,
                fetched = metrics.total_fetched, skipped = metrics.skipped, ms = metrics.duration_ms,
                complete = metrics.complete, "pull sync finished"
            );
            Ok(metrics)
        }
        Err((err, metrics)) => {
            let entry = log(LogStatus::Failed, &metrics, Some(err.detail().to_owned()));
            if let Err(e) = ctx.store.insert_sync_log(user, &entry).await {
                tracing::error!(error = %e, "could not log a failed sync");
            }
            Err(err)
        }
    };
    lease.release().await?;
    outcome
}

type RunResult = Result<(SyncMetrics, PullState), (AppError, SyncMetrics)>;

async fn run(
    ctx: &Context,
    integration: &IntegrationRecord,
    since: Option<DateTime<Utc>>,
    deadline: Option<Instant>,
    started: Instant,
) -> RunResult {
    let mut metrics = SyncMetrics::default();
    let client = crm_client(ctx, integration)
        .await
        .map_err(|e| (e, metrics.clone()))?;
    let mut state = match since {
        Some(t) => PullState {
            cursor: SyncCursor::starting_at(t),
            page_token: None,
        },
        None => PullState::from_stored(integration.sync_cursor.as_ref()),
    };
    if !client.kind().page_token_survives_restart() {
        // The CRM's page token of an interrupted run does not list the same records now: resume from
        // the cursor (the records already stored at its instant are dropped).
        state.page_token = None;
    }
    let region = ctx.settings.phone_region;
    // Reading (the CRM's answer, JSON, mapping) and writing (Postgres) overlap: the reader runs up to
    // `READ_AHEAD` pages ahead, and the writer commits whatever has arrived (up to `WRITE_BATCH`
    // contacts) in one transaction with the state after its last page. Both run in this task; the
    // CRM and Postgres work meanwhile in their own processes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Pages>(READ_AHEAD);
    let reader = read_pages(&client, region, state.clone(), deadline, tx);
    let writer = async {
        // Owned here, so that a writer that fails closes the channel and the reader stops.
        let mut rx = rx;
        let mut written: Option<PullState> = None;
        while let Some(mut batch) = rx.recv().await {
            while batch.contacts.len() < WRITE_BATCH && !batch.last {
                match rx.try_recv() {
                    Ok(next) => batch.absorb(next),
                    Err(_) => break,
                }
            }
            metrics.total_fetched += batch.fetched;
            metrics.skipped += batch.skipped;
            let report: UpsertReport = ctx
                .store
                .commit_page(
                    integration.user_id,
                    integration.id,
                    batch.contacts,
                    &batch.state.to_json(),
                )
                .await?;
            metrics.upserted += report.upserted();
            metrics.cursor = rfc3339(batch.state.cursor.since);
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
    Ok((metrics, written.unwrap_or(state)))
}

/// Pages the reader runs ahead of the writer.
const READ_AHEAD: usize = 8;
/// Contacts the writer gathers into one transaction when pages arrive faster than it writes.
pub const WRITE_BATCH: usize = 1_000;

/// Pages read and mapped, waiting to be written, with the state to save once they are.
struct Pages {
    contacts: Vec<Contact>,
    /// The state after the last of these pages.
    state: PullState,
    fetched: u64,
    skipped: u64,
    /// The last page of the listing.
    last: bool,
}

impl Pages {
    /// Appends the next pages (contacts stay in order: the store keeps the latest of a phone).
    fn absorb(&mut self, next: Pages) {
        self.contacts.extend(next.contacts);
        self.state = next.state;
        self.fetched += next.fetched;
        self.skipped += next.skipped;
        self.last = next.last;
    }
}

/// Reads pages from `state` on, maps and filters them, and sends them to the writer, until the last
/// page, the deadline, or an error. Stops early (`Ok`) when the writer has stopped.
async fn read_pages(
    client: &CrmClient,
    region: Region,
    mut state: PullState,
    deadline: Option<Instant>,
    tx: tokio::sync::mpsc::Sender<Pages>,
) -> Result<(), AppError> {
    let provider = client.provider();
    loop {
        let page = match client
            .list_page(&state.cursor, state.page_token.as_deref(), PAGE_SIZE)
            .await
        {
            Ok(page) => page,
            // A saved page token the CRM no longer accepts: start the listing again; the cursor skips
            // what is already stored.
            Err(CrmError::Upstream {
                status: 400..=499, ..
            }) if state.page_token.is_some() => {
                tracing::warn!(
                    provider = provider.as_str(),
                    "saved page token refused; listing again"
                );
                state.page_token = None;
                continue;
            }
            Err(e) => return Err(AppError::from_crm(provider, e)),
        };
        let before = state.cursor.clone();
        let admitted = admit_page(client.kind(), &page.records, &mut state.cursor, region);
        state.page_token = if page.has_more {
            page.next_token.clone()
        } else {
            None
        };
        let pages = Pages {
            contacts: admitted.contacts,
            state: state.clone(),
            // Records read again because they are the ones already stored at the cursor's instant
            // (REX reads its cursor's second from its first record) are not counted as fetched.
            fetched: page.records.len() as u64 - admitted.reread,
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
        if page.next_token.is_none() && state.cursor == before {
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

/// What a page gave: the contacts to store, how many records had no usable phone, and how many were
/// the records already stored at the cursor's instant, read again.
struct Admitted {
    contacts: Vec<Contact>,
    skipped: u64,
    reread: u64,
}

/// Maps a page and keeps what the cursor admits; every record moves the cursor.
fn admit_page(
    kind: &dyn CrmKind,
    records: &[serde_json::Value],
    cursor: &mut SyncCursor,
    region: Region,
) -> Admitted {
    let mut contacts = Vec::with_capacity(records.len());
    let (mut skipped, mut reread) = (0, 0);
    let snapshot = cursor.clone();
    for record in records {
        let mapped = kind.map_record(record, region);
        let updated = mapped.updated_at();
        let id = mapped.external_id().unwrap_or_default().to_owned();
        if !snapshot.admits(&id, updated) {
            if updated.is_some() && updated == snapshot.since {
                reread += 1;
            }
            continue;
        }
        cursor.observe(&id, updated);
        match mapped {
            Mapped::Contact(c) => contacts.push(c),
            Mapped::Skipped(_) => skipped += 1,
        }
    }
    Admitted {
        contacts,
        skipped,
        reread,
    }
}

/// What `contacts-fetch` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub contacts: Vec<NormalizedContact>,
    pub count: usize,
    /// Records seen without a usable phone (not shown).
    pub skipped: u64,
}

/// Up to `limit` normalized contacts of `user`'s `provider` account changed at or after `since`.
/// Writes nothing.
pub async fn fetch(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Fetched, AppError> {
    let integration = connected(ctx, user, provider).await?;
    let client: CrmClient = crm_client(ctx, &integration).await?;
    let mut cursor = since.map(SyncCursor::starting_at).unwrap_or_default();
    let mut token: Option<String> = None;
    let mut contacts = Vec::new();
    let mut skipped = 0;
    let region = ctx.settings.phone_region;
    for _ in 0..FETCH_MAX_PAGES {
        let page = client
            .list_page(&cursor, token.as_deref(), PAGE_SIZE.min(limit.max(1)))
            .await
            .map_err(|e| AppError::from_crm(provider, e))?;
        let admitted = admit_page(client.kind(), &page.records, &mut cursor, region);
        skipped += admitted.skipped;
        contacts.extend(admitted.contacts.iter().map(NormalizedContact::from));
        if contacts.len() >= limit as usize || !page.has_more {
            break;
        }
        token = page.next_token;
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
        let Admitted {
            contacts, skipped, ..
        } = admit_page(
            crmsync_crm::kind(Provider::FollowUpBoss),
            &page,
            &mut cursor,
            Default::default(),
        );
        let ids: Vec<_> = contacts
            .iter()
            .map(|c| c.external_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["2", "5"]);
        assert_eq!(skipped, 1);
        assert_eq!(cursor.since, Some(t("2026-03-02T00:00:00Z")));
        let mut boundary = cursor.boundary_ids.clone();
        boundary.sort();
        assert_eq!(
            boundary,
            ["4", "5"],
            "the phoneless record moves the cursor too"
        );
    }

    mod reader_rules {
        //! The rules of the page reader, against a fake CRM.
        use super::super::*;
        use crate::fake::{Call, FakeCrm, page, person};
        use serde_json::json;

        /// Runs the reader from `state` and collects what it sends to the writer.
        async fn read(
            crm: &std::sync::Arc<FakeCrm>,
            state: PullState,
            deadline: Option<Instant>,
        ) -> (Result<(), AppError>, Vec<Pages>) {
            let client = crm.client();
            let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            let reader = read_pages(&client, Region::US, state, deadline, tx);
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
            p.contacts
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
            let state = PullState {
                cursor,
                page_token: None,
            };
            let (result, pages) = read(&crm, state, None).await;
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
            assert_eq!(pages[0].state.page_token.as_deref(), Some("t2"));
            assert_eq!(ids(&pages[1]), ["3"]);
            assert_eq!(pages[1].skipped, 1, "a record without a phone is skipped");
            assert!(pages[1].last);
            assert_eq!(pages[1].state.page_token, None);
            assert_eq!(
                pages[1].state.cursor.since,
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
            let state = PullState {
                cursor: SyncCursor::default(),
                page_token: Some("stale".into()),
            };
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
            let (result, _) = read(&crm, PullState::default(), None).await;
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
            let (result, pages) = read(&crm, PullState::default(), Some(Instant::now())).await;
            result.unwrap();
            assert_eq!(crm.calls().len(), 1);
            assert_eq!(pages.len(), 1);
            assert!(
                !pages[0].last,
                "the next run continues from the saved token"
            );
            assert_eq!(pages[0].state.page_token.as_deref(), Some("t2"));
        }

        #[tokio::test]
        async fn refused_credentials_end_the_read_with_a_reconnect_error() {
            let crm = FakeCrm::new();
            crm.page(Err(CrmError::InvalidCredentials));
            let (result, pages) = read(&crm, PullState::default(), None).await;
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
        let state = PullState {
            cursor: SyncCursor::starting_at(Utc::now()),
            page_token: Some("eyJzaW5jZUlkIjoxMDV9".into()),
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
