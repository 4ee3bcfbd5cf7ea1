//! The Postgres store on tokio-postgres (TLS through rustls when the URL asks for it, as Supabase does).
//!
//! Every user-facing operation runs in a transaction that switches to the role `crmsync_app` and sets
//! `crmsync.user_id`, so Row Level Security, not only our `WHERE` clauses, keeps users apart.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crmsync_domain::{Contact, Provider, dedupe_by_phone};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use crate::error::ApiError;
use crate::vault::Sealed;

mod integrations;
mod push;
mod sync;
mod tx;

pub use integrations::{
    IntegrationPatch, IntegrationView, LogCursor, SyncLogPage, SyncLogRecord, UserStatus,
};
pub use push::{
    Accepted, ClaimedDelivery, DeliveryOutcome, MAX_DELIVERY_ATTEMPTS, NewLeadEvent,
    PAUSE_AFTER_FAILURES,
};
pub use sync::{Direction, LockedIntegration, LogStatus, NewSyncLog, SyncLease, Trigger};
pub use tx::OwnedTx;

mod embedded {
    refinery::embed_migrations!("../../infra/migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL is invalid: {0}")]
    BadUrl(String),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::internal(err)
    }
}

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

/// How an integration authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    OAuth,
    ApiKey,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::OAuth => "oauth",
            AuthType::ApiKey => "api_key",
        }
    }
}

/// A row of `crm_integrations`, credentials still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: Provider,
    pub auth_type: AuthType,
    pub sealed: Sealed,
    pub status: String,
    pub auto_sync: bool,
    pub risk_threshold: i32,
    pub consecutive_failures: i32,
    pub sync_cursor: Option<serde_json::Value>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A pool of connections to the application database. Cheap to clone; connects lazily.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
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
    /// A pool for `database_url` (a `postgres://` URL; `sslmode=require` uses TLS with the web PKI
    /// roots). No connection is made until the first query.
    pub fn connect(database_url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(database_url)
            // tokio-postgres's parse errors do not echo the URL (or its password).
            .map_err(|e| StoreError::BadUrl(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::BadUrl(format!("TLS set-up failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let manager = Manager::from_config(
            config,
            MakeRustlsConnect::new(tls_config),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::BadUrl(e.to_string()))?;
        Ok(Store { pool })
    }

    /// Applies the migrations of `infra/migrations`, one runner at a time across processes.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        client
            .execute(
                "SELECT pg_advisory_lock(hashtext('crmsync:migrations'))",
                &[],
            )
            .await?;
        let result = embedded::migrations::runner().run_async(client).await;
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtext('crmsync:migrations'))",
                &[],
            )
            .await?;
        result?;
        Ok(())
    }

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

    /// One integration of `user`, or `None` if it does not exist or belongs to someone else.
    pub async fn get_integration(
        &self,
        user: Uuid,
        id: Uuid,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1"),
                &[&id],
            )
            .await?;
        let record = row.as_ref().map(integration_from_row).transpose()?;
        tx.commit().await?;
        Ok(record)
    }

    /// All integrations of `user`, oldest first.
    pub async fn list_integrations(
        &self,
        user: Uuid,
    ) -> Result<Vec<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations ORDER BY created_at, id"
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(integration_from_row).collect()
    }
}

/// Begins a transaction that sees only `user`'s rows: role `crmsync_app` (not a superuser, not the
/// table owner, so Row Level Security applies) and `crmsync.user_id`, both local to the transaction.
pub async fn begin_as(
    conn: &mut deadpool_postgres::Object,
    user: Uuid,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = conn.transaction().await?;
    tx.execute(
        "SELECT set_config('role', 'crmsync_app', true), set_config('crmsync.user_id', $1, true)",
        &[&user.to_string()],
    )
    .await?;
    Ok(tx)
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

const INTEGRATION_COLUMNS: &str =
    "id, user_id, provider, auth_type, credentials_ciphertext, credentials_nonce,
    credentials_key_version, status, auto_sync, risk_threshold, consecutive_failures, sync_cursor,
    token_expires_at, last_sync_at, created_at";

fn integration_from_row(row: &tokio_postgres::Row) -> Result<IntegrationRecord, StoreError> {
    let provider: String = row.get(2);
    let provider = provider
        .parse::<Provider>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let auth_type = match row.get::<_, &str>(3) {
        "oauth" => AuthType::OAuth,
        "api_key" => AuthType::ApiKey,
        other => return Err(StoreError::Corrupt(format!("unknown auth_type {other}"))),
    };
    let nonce: Vec<u8> = row.get(5);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| StoreError::Corrupt("credentials_nonce is not 12 bytes".into()))?;
    Ok(IntegrationRecord {
        id: row.get(0),
        user_id: row.get(1),
        provider,
        auth_type,
        sealed: Sealed {
            ciphertext: row.get(4),
            nonce,
            key_version: row.get(6),
        },
        status: row.get(7),
        auto_sync: row.get(8),
        risk_threshold: row.get(9),
        consecutive_failures: row.get(10),
        sync_cursor: row.get(11),
        token_expires_at: row.get(12),
        last_sync_at: row.get(13),
        created_at: row.get(14),
    })
}
