//! The `contacts` table and where each contact came from (`contact_sources`), always as one user.
//!
//! A pull writes CRM records as *sources*: one row per CRM record (integration and external id), holding
//! the record's own fields, pointing at the contact of its phone (created when new). Each contact's
//! fields are then taken from its sources: for each field, the value of the most recently updated live
//! source that has one, so an empty field never overwrites a filled one and two CRMs holding one phone
//! do not blank each other's fields. "Most recently updated" is the CRM's update time; a source whose
//! CRM gives none ranks below those with one, then by when crmsync saw it change (a record first read
//! has not been seen changing), then by its id (the newest record of a CRM has the highest). A contact with no live source left (deleted, trashed or
//! archived in the CRM, or not seen by a complete read) gets `crm_deleted_at`; one that has a live
//! source again loses it. Unchanged rows are not rewritten; crmsync never deletes a contact.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crmsync_domain::{Contact, Provider};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{Store, StoreError, begin_as};

/// How a batch went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// New contacts.
    pub inserted: u64,
    /// Existing contacts whose values changed.
    pub updated: u64,
    /// Live records identical to what was stored (not written).
    pub unchanged: u64,
    /// Records of the batch whose phone another record of the batch also had.
    pub duplicates_in_batch: u64,
    /// Records newly marked deleted.
    pub deleted: u64,
}

impl UpsertReport {
    /// Contacts written: inserted plus changed.
    pub fn upserted(&self) -> u64 {
        self.inserted + self.updated
    }

    pub fn add(&mut self, other: UpsertReport) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.duplicates_in_batch += other.duplicates_in_batch;
        self.deleted += other.deleted;
    }
}

/// A row of `contacts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContact {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub phone_number: String,
    pub email: Option<String>,
    pub notes: Option<String>,
    pub source_provider: Option<String>,
    pub external_id: Option<String>,
    pub source_updated_at: Option<DateTime<Utc>>,
    pub crm_deleted_at: Option<DateTime<Utc>>,
}

/// Records of one CRM account to write.
#[derive(Debug, Clone, Default)]
pub struct SourceBatch {
    /// Live records.
    pub live: Vec<Contact>,
    /// External ids of records that are no longer a live source: deleted, trashed or archived in the
    /// CRM, or without a usable phone now.
    pub gone: Vec<String>,
    /// The start of the complete read these records belong to: they are marked seen by it.
    pub seen_at: Option<DateTime<Utc>>,
}

/// A source's key for a record without an id of its own (its phone stands for it).
fn source_key(c: &Contact) -> String {
    c.external_id
        .clone()
        .unwrap_or_else(|| format!("#{}", c.phone.as_str()))
}

/// The batch's records, one row per source key, for the statements below: made in each transaction
/// that writes a batch and dropped at its end (no state outlives the transaction, so a transaction-mode
/// pooler may hand the next one to another server connection), filled with one binary COPY.
const CREATE_BATCH: &str = "
CREATE TEMP TABLE crmsync_batch (
    ext text NOT NULL, phone text NOT NULL, name text, email text, notes text, updated timestamptz
) ON COMMIT DROP";

const COPY_BATCH: &str =
    "COPY crmsync_batch (ext, phone, name, email, notes, updated) FROM STDIN (FORMAT binary)";

const BATCH_TYPES: [Type; 6] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
];

const INSERT_CONTACTS: &str = "
INSERT INTO contacts (owner_id, name, phone_number, email, notes, source_provider, external_id, source_updated_at)
SELECT $1, COALESCE(u.name, u.email, u.phone), u.phone, u.email, u.notes, $2, u.ext, u.updated
  FROM crmsync_batch u
ON CONFLICT (owner_id, phone_number) DO NOTHING
RETURNING id, phone_number";

/// The contacts the batch's sources pointed at before, where the record's phone changed since.
///
/// Written as a lookup of each record's source and contact by key, which Postgres does with their
/// unique indexes whatever its statistics say. As a join, planned while `contact_sources` had never
/// been analysed (a first sync into a new table: Postgres then guesses that one integration has a few
/// dozen sources), it read every source of the integration for every batch: a first sync of 100,000
/// took 60 times as long as COPY, most of it here.
const MOVED_FROM: &str = "
SELECT m.contact_id
  FROM (SELECT u.phone,
               (SELECT s.contact_id FROM contact_sources s
                 WHERE s.integration_id = $1 AND s.external_id = u.ext) AS contact_id
          FROM crmsync_batch u) m
 WHERE (SELECT c.phone_number FROM contacts c WHERE c.id = m.contact_id) <> m.phone";

/// Each record's contact is looked up by key (the unique index on owner and phone), as in
/// [`MOVED_FROM`]: a join may be planned as a scan of every contact for each batch.
const UPSERT_SOURCES: &str = "
INSERT INTO contact_sources AS s
       (integration_id, external_id, owner_id, provider, contact_id, name, email, notes,
        source_updated_at, changed_at, seen_at, deleted_at)
SELECT $2, u.ext, $1, $3, u.contact_id, u.name, u.email, u.notes, u.updated, NULL, $4, NULL
  FROM (SELECT b.*,
               (SELECT c.id FROM contacts c WHERE c.owner_id = $1 AND c.phone_number = b.phone)
                 AS contact_id
          FROM crmsync_batch b) u
 WHERE u.contact_id IS NOT NULL
ON CONFLICT (integration_id, external_id) DO UPDATE SET
       contact_id = EXCLUDED.contact_id,
       name = EXCLUDED.name,
       email = EXCLUDED.email,
       notes = EXCLUDED.notes,
       source_updated_at = EXCLUDED.source_updated_at,
       changed_at = CASE
           WHEN (s.contact_id, s.name, s.email, s.notes, s.source_updated_at, s.deleted_at IS NULL)
                IS DISTINCT FROM
                (EXCLUDED.contact_id, EXCLUDED.name, EXCLUDED.email, EXCLUDED.notes,
                 EXCLUDED.source_updated_at, true)
           THEN now() ELSE s.changed_at END,
       seen_at = COALESCE(EXCLUDED.seen_at, s.seen_at),
       deleted_at = NULL
 WHERE (s.contact_id, s.name, s.email, s.notes, s.source_updated_at, s.deleted_at)
       IS DISTINCT FROM
       (EXCLUDED.contact_id, EXCLUDED.name, EXCLUDED.email, EXCLUDED.notes,
        EXCLUDED.source_updated_at, NULL::timestamptz)
    OR (EXCLUDED.seen_at IS NOT NULL AND s.seen_at IS DISTINCT FROM EXCLUDED.seen_at)
RETURNING s.contact_id,
          (xmax = 0 OR s.changed_at IS NOT DISTINCT FROM now()) AS changed";

const MARK_GONE: &str = "
UPDATE contact_sources
   SET deleted_at = now(), changed_at = now()
 WHERE integration_id = $1 AND external_id = ANY($2) AND deleted_at IS NULL
RETURNING contact_id";

const MARK_UNSEEN: &str = "
UPDATE contact_sources
   SET deleted_at = now(), changed_at = now()
 WHERE integration_id = $1 AND deleted_at IS NULL AND (seen_at IS NULL OR seen_at < $2)
RETURNING contact_id";

/// Each contact's fields from its sources (see the module's documentation).
const RECOMPUTE: &str = "
UPDATE contacts c SET
       name = COALESCE(w.name, c.name),
       email = COALESCE(w.email, c.email),
       notes = COALESCE(w.notes, c.notes),
       source_provider = COALESCE(w.provider, c.source_provider),
       external_id = COALESCE(w.external_id, c.external_id),
       source_updated_at = CASE WHEN w.live THEN w.source_updated_at ELSE c.source_updated_at END,
       crm_deleted_at = CASE WHEN w.live THEN NULL ELSE COALESCE(c.crm_deleted_at, now()) END,
       updated_at = now()
  FROM (
    SELECT x.id,
           (SELECT s.name FROM contact_sources s
             WHERE s.contact_id = x.id AND s.deleted_at IS NULL AND s.name IS NOT NULL
             ORDER BY s.source_updated_at DESC NULLS LAST, s.changed_at DESC NULLS LAST,
                      length(s.external_id) DESC, s.external_id DESC LIMIT 1) AS name,
           (SELECT s.email FROM contact_sources s
             WHERE s.contact_id = x.id AND s.deleted_at IS NULL AND s.email IS NOT NULL
             ORDER BY s.source_updated_at DESC NULLS LAST, s.changed_at DESC NULLS LAST,
                      length(s.external_id) DESC, s.external_id DESC LIMIT 1) AS email,
           (SELECT s.notes FROM contact_sources s
             WHERE s.contact_id = x.id AND s.deleted_at IS NULL AND s.notes IS NOT NULL
             ORDER BY s.source_updated_at DESC NULLS LAST, s.changed_at DESC NULLS LAST,
                      length(s.external_id) DESC, s.external_id DESC LIMIT 1) AS notes,
           n.provider, n.external_id, n.source_updated_at, n.external_id IS NOT NULL AS live
      FROM UNNEST($1::uuid[]) AS x(id)
      LEFT JOIN LATERAL (
           SELECT s.provider, s.external_id, s.source_updated_at FROM contact_sources s
            WHERE s.contact_id = x.id AND s.deleted_at IS NULL
            ORDER BY s.source_updated_at DESC NULLS LAST, s.changed_at DESC NULLS LAST,
                      length(s.external_id) DESC, s.external_id DESC LIMIT 1) n ON true
  ) w
 WHERE c.id = w.id
   AND (c.name, c.email, c.notes, c.source_provider, c.external_id, c.source_updated_at,
        c.crm_deleted_at IS NULL)
       IS DISTINCT FROM
       (COALESCE(w.name, c.name), COALESCE(w.email, c.email), COALESCE(w.notes, c.notes),
        COALESCE(w.provider, c.source_provider), COALESCE(w.external_id, c.external_id),
        CASE WHEN w.live THEN w.source_updated_at ELSE c.source_updated_at END, w.live)
RETURNING c.id";

impl Store {
    /// Writes `contacts` as live records of the integration `integration_id` of `owner` (each record a
    /// source of the contact of its phone), in one transaction.
    pub async fn upsert_contacts(
        &self,
        owner: Uuid,
        integration_id: Uuid,
        contacts: Vec<Contact>,
    ) -> Result<UpsertReport, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, owner).await?;
        let batch = SourceBatch {
            live: contacts,
            ..SourceBatch::default()
        };
        let report = write_sources_in(&tx, owner, integration_id, batch).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The contacts of `owner`, by phone number.
    pub async fn list_contacts(&self, owner: Uuid) -> Result<Vec<StoredContact>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, owner).await?;
        let rows = tx
            .query(
                // An adopted dashboard table may hold rows without a name or phone.
                "SELECT id, owner_id, coalesce(name, ''), coalesce(phone_number, ''), email, notes,
                        source_provider, external_id,
                        source_updated_at, crm_deleted_at
                   FROM contacts ORDER BY phone_number",
                &[],
            )
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| StoredContact {
                id: r.get(0),
                owner_id: r.get(1),
                name: r.get(2),
                phone_number: r.get(3),
                email: r.get(4),
                notes: r.get(5),
                source_provider: r.get(6),
                external_id: r.get(7),
                source_updated_at: r.get(8),
                crm_deleted_at: r.get(9),
            })
            .collect())
    }
}

/// Writes a batch of one integration's records inside a transaction the caller controls (a sync
/// saves its cursor in the same transaction): new contacts for new phones, the sources, the records
/// that are gone, and the fields of every contact concerned.
pub(crate) async fn write_sources_in(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: Uuid,
    integration_id: Uuid,
    batch: SourceBatch,
) -> Result<UpsertReport, StoreError> {
    let SourceBatch {
        live,
        gone,
        seen_at,
    } = batch;
    let mut report = UpsertReport::default();
    let mut concerned: HashSet<Uuid> = HashSet::new();
    let mut inserted: HashSet<Uuid> = HashSet::new();
    // New contacts whose fields are already what their sources say (see below).
    let mut settled: HashSet<Uuid> = HashSet::new();

    if !live.is_empty() {
        let phones: HashSet<&str> = live.iter().map(|c| c.phone.as_str()).collect();
        report.duplicates_in_batch = (live.len() - phones.len()) as u64;
        // One row per record: the latest version of a record read twice (None is oldest).
        let mut latest: HashMap<String, &Contact> = HashMap::with_capacity(live.len());
        let mut order: Vec<String> = Vec::with_capacity(live.len());
        for c in &live {
            let key = source_key(c);
            match latest.get(&key) {
                Some(prev) if c.updated_at < prev.updated_at => {}
                Some(_) => {
                    latest.insert(key, c);
                }
                None => {
                    latest.insert(key.clone(), c);
                    order.push(key);
                }
            }
        }
        let records: Vec<(&String, &Contact)> = order.iter().map(|k| (k, latest[k])).collect();
        let provider_name = provider_str(records[0].1.source);
        let n = records.len();
        // The statements are not prepared once for the connection: they name this transaction's
        // table (a new one each time), so each is planned for it.
        tx.batch_execute(CREATE_BATCH).await?;
        let sink = tx.copy_in(COPY_BATCH).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &BATCH_TYPES));
        for (key, c) in &records {
            let phone = c.phone.as_str();
            writer
                .as_mut()
                .write(&[key, &phone, &c.name, &c.email, &c.notes, &c.updated_at])
                .await?;
        }
        writer.finish().await?;
        // A contact this statement created for a phone only one record of the batch has holds exactly
        // that record's fields, and that record is its only source: recomputing it from its sources
        // would change nothing, so it is left out (on a first sync, that is every contact).
        let mut phone_count: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (_, c) in &records {
            *phone_count.entry(c.phone.as_str()).or_default() += 1;
        }
        for row in tx.query(INSERT_CONTACTS, &[&owner, &provider_name]).await? {
            let id: Uuid = row.get(0);
            let phone: &str = row.get(1);
            inserted.insert(id);
            if phone_count.get(phone) == Some(&1) {
                settled.insert(id);
            }
        }
        for row in tx.query(MOVED_FROM, &[&integration_id]).await? {
            concerned.insert(row.get(0));
        }
        let rows = tx
            .query(
                UPSERT_SOURCES,
                &[&owner, &integration_id, &provider_name, &seen_at],
            )
            .await?;
        let mut changed_sources = 0u64;
        for row in &rows {
            if row.get::<_, bool>(1) {
                changed_sources += 1;
                let id: Uuid = row.get(0);
                if !settled.contains(&id) {
                    concerned.insert(id);
                }
            }
        }
        report.unchanged = n as u64 - changed_sources;
        concerned.extend(inserted.difference(&settled).copied());
    }

    if !gone.is_empty() {
        let rows = tx
            .query_typed(
                MARK_GONE,
                &[(&integration_id, Type::UUID), (&gone, Type::TEXT_ARRAY)],
            )
            .await?;
        report.deleted = rows.len() as u64;
        concerned.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
    }

    let changed = recompute_in(tx, &concerned).await?;
    report.inserted = inserted.len() as u64;
    report.updated = changed.iter().filter(|id| !inserted.contains(id)).count() as u64;
    Ok(report)
}

/// Marks every live source of the integration that the complete read started at `started` did not
/// see as deleted, and updates the contacts concerned. Returns how many were marked.
pub(crate) async fn mark_unseen_in(
    tx: &deadpool_postgres::Transaction<'_>,
    integration_id: Uuid,
    started: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let rows = tx.query(MARK_UNSEEN, &[&integration_id, &started]).await?;
    let concerned: HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    recompute_in(tx, &concerned).await?;
    Ok(rows.len() as u64)
}

/// Recomputes the contacts `ids` from their sources; returns those that changed.
async fn recompute_in(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &HashSet<Uuid>,
) -> Result<HashSet<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    let rows = tx
        .query_typed(RECOMPUTE, &[(&ids, Type::UUID_ARRAY)])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn provider_str(p: Provider) -> &'static str {
    p.as_str()
}
