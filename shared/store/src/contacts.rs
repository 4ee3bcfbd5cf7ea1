//! The `contacts` table: batch upserts by phone (the latest record of a phone wins, unchanged rows are
//! not rewritten) and reads, always as one user.

use chrono::{DateTime, Utc};
use crmsync_domain::{Contact, dedupe_by_phone};
use uuid::Uuid;

use crate::{Store, StoreError, begin_as};

/// How a batch upsert went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// New rows.
    pub inserted: u64,
    /// Existing rows whose values changed.
    pub updated: u64,
    /// Rows in the batch identical to what was stored (not written).
    pub unchanged: u64,
    /// Records dropped because a later record of the same batch had the same phone.
    pub duplicates_in_batch: u64,
}

impl UpsertReport {
    /// Rows written: inserted plus changed.
    pub fn upserted(&self) -> u64 {
        self.inserted + self.updated
    }

    pub fn add(&mut self, other: UpsertReport) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.duplicates_in_batch += other.duplicates_in_batch;
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
}

const UPSERT_CONTACTS: &str = "
INSERT INTO contacts AS c
       (owner_id, name, phone_number, email, notes, source_provider, external_id, source_updated_at)
SELECT $1, u.name, u.phone, u.email, u.notes, u.provider, u.external_id, u.updated
  FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
       AS u(name, phone, email, notes, provider, external_id, updated)
ON CONFLICT (owner_id, phone_number) DO UPDATE SET
       name = EXCLUDED.name,
       email = COALESCE(EXCLUDED.email, c.email),
       notes = COALESCE(EXCLUDED.notes, c.notes),
       source_provider = EXCLUDED.source_provider,
       external_id = EXCLUDED.external_id,
       source_updated_at = EXCLUDED.source_updated_at,
       updated_at = now()
 WHERE (c.name, c.email, c.notes, c.source_provider, c.external_id)
       IS DISTINCT FROM
       (EXCLUDED.name, COALESCE(EXCLUDED.email, c.email), COALESCE(EXCLUDED.notes, c.notes),
        EXCLUDED.source_provider, EXCLUDED.external_id)
RETURNING (xmax = 0) AS inserted";

impl Store {
    /// Upserts contacts of `owner` by phone number in one statement, after de-duplicating phones within
    /// the batch (the latest record wins). Unchanged rows are not rewritten.
    pub async fn upsert_contacts(
        &self,
        owner: Uuid,
        contacts: Vec<Contact>,
    ) -> Result<UpsertReport, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, owner).await?;
        let report = upsert_contacts_in(&tx, owner, contacts).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The contacts of `owner`, by phone number.
    pub async fn list_contacts(&self, owner: Uuid) -> Result<Vec<StoredContact>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, owner).await?;
        let rows = tx
            .query(
                "SELECT id, owner_id, name, phone_number, email, notes, source_provider, external_id,
                        source_updated_at
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
            })
            .collect())
    }
}

/// The upsert of [`Store::upsert_contacts`] inside a transaction the caller controls (the sync saves
/// its cursor in the same transaction).
pub async fn upsert_contacts_in(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: Uuid,
    contacts: Vec<Contact>,
) -> Result<UpsertReport, StoreError> {
    let before = contacts.len();
    let contacts = dedupe_by_phone(contacts);
    let duplicates_in_batch = (before - contacts.len()) as u64;
    if contacts.is_empty() {
        return Ok(UpsertReport {
            duplicates_in_batch,
            ..Default::default()
        });
    }
    let n = contacts.len();
    let mut names = Vec::with_capacity(n);
    let mut phones = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut notes = Vec::with_capacity(n);
    let mut providers = Vec::with_capacity(n);
    let mut external_ids = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    for c in &contacts {
        names.push(c.name.as_str());
        phones.push(c.phone.as_str());
        emails.push(c.email.as_deref());
        notes.push(c.notes.as_deref());
        providers.push(c.source.as_str());
        external_ids.push(c.external_id.as_deref());
        updated.push(c.updated_at);
    }
    let stmt = tx.prepare_cached(UPSERT_CONTACTS).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &owner,
                &names,
                &phones,
                &emails,
                &notes,
                &providers,
                &external_ids,
                &updated,
            ],
        )
        .await?;
    let inserted = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    let written = rows.len() as u64;
    Ok(UpsertReport {
        inserted,
        updated: written - inserted,
        unchanged: n as u64 - written,
        duplicates_in_batch,
    })
}
