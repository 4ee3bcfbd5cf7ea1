//! The Postgres store of crmsync on tokio-postgres (TLS through rustls when the URL asks for it, as
//! Supabase does): the migrations of `infra/migrations`, the queries of each table (`contacts`,
//! `crm_integrations`, `crm_sync_logs`, the push outbox), and the credential [`vault`].
//!
//! Every user-facing operation runs in a transaction that switches to the role `crmsync_app` and sets
//! `crmsync.user_id`, so Row Level Security, not only our `WHERE` clauses, keeps users apart. The few
//! operations of the scheduled run that work across users say so.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

mod admin;
mod contacts;
mod deliveries;
mod health;
mod integrations;
mod outbox;
mod sync;
mod sync_logs;
mod tx;
pub mod vault;

pub use admin::{
    AdminDelivery, AdminIntegration, CursorReset, DeliveryFilter, KeyCount, Resealed,
    RetriedDelivery, RetryOutcome,
};
pub use contacts::{SourceBatch, StoredContact, UpsertReport};
pub use deliveries::{DeliveryPage, DeliveryRecord};
pub use health::Health;
pub use integrations::{IntegrationPatch, IntegrationRecord, IntegrationView, LockedIntegration};
pub use outbox::{Accepted, ClaimedDelivery, DeliveryOutcome, Finished, NewLeadEvent, PushLink};
pub use sync::SyncLease;
pub use sync_logs::{LogCursor, NewSyncLog, SyncLogPage, SyncLogRecord};
pub use tx::OwnedTx;
pub use vault::{Credentials, Opened, Sealed, Vault, VaultError};

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
    #[error("migration failed: {}", migration_detail(.0))]
    Migration(#[from] refinery::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// A failed migration, with what Postgres said (its message and hint), which refinery's own text leaves
/// out.
fn migration_detail(e: &refinery::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(db) = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
        {
            text.push_str(": ");
            text.push_str(db.message());
            if let Some(hint) = db.hint() {
                text.push_str(" (");
                text.push_str(hint);
                text.push(')');
            }
            break;
        }
        source = cause.source();
    }
    text
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
        self.migrate_adopting(None).await
    }

    /// [`Store::migrate`], and on a database whose dashboard already has a `contacts` table, gives the
    /// rows there to `owner` (the dashboard user they belong to) as crmsync adopts the table. Without
    /// an owner those rows are kept but seen by no user of crmsync.
    ///
    /// `V1__init.sql` was changed to adopt such a table (its `CREATE TABLE contacts` became `IF NOT
    /// EXISTS`, followed by the adoption): a database migrated with the earlier text is not refused for
    /// that (divergent checksums are not fatal), since for it the change does nothing.
    pub async fn migrate_adopting(&self, owner: Option<Uuid>) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        client
            .execute(
                "SELECT pg_advisory_lock(hashtext('crmsync:migrations'))",
                &[],
            )
            .await?;
        let owner = owner.map(|o| o.to_string()).unwrap_or_default();
        client
            .execute(
                "SELECT set_config('crmsync.adopt_owner', $1, false)",
                &[&owner],
            )
            .await?;
        let result = embedded::migrations::runner()
            .set_abort_divergent(false)
            .run_async(client)
            .await;
        client
            .execute("SELECT set_config('crmsync.adopt_owner', '', false)", &[])
            .await?;
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtext('crmsync:migrations'))",
                &[],
            )
            .await?;
        result?;
        Ok(())
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
