//! The Postgres store of crmsync on tokio-postgres (TLS through rustls, with libpq's `sslmode` and
//! `sslrootcert`: see [`connect`]): the migrations of `infra/migrations`, the queries of each table (`contacts`,
//! `crm_integrations`, `crm_sync_logs`, the push outbox), and the credential [`vault`].
//!
//! Every user-facing operation runs in a transaction that switches to the role `crmsync_app` and sets
//! `crmsync.user_id`, so Row Level Security, not only our `WHERE` clauses, keeps users apart. The few
//! operations of the scheduled run that work across users say so.
//!
//! Every statement with parameters runs inside an explicit transaction (or, unnamed, through
//! `query_typed`), and no session state outlives a transaction (advisory locks and settings are
//! transaction-scoped): so the store works through a transaction-mode pooler (PgBouncer, Supabase's
//! pooler on port 6543, RDS Proxy), where consecutive transactions of one client may run on different
//! server connections. tokio-postgres's named statements are prepared and closed within the
//! transaction that uses them; none is cached across transactions. [`Store::migrate`] is the
//! exception: it needs a direct (session) connection.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

mod admin;
pub mod connect;
mod contacts;
mod deliveries;
mod health;
mod integrations;
mod outbox;
mod queue;
mod sync;
mod sync_logs;
mod tx;
pub mod vault;
mod webhooks;

pub use admin::{
    AdminDelivery, AdminIntegration, CursorReset, DeliveryFilter, KeyCount, Resealed,
    RetriedDelivery, RetryOutcome,
};
pub use connect::{ConnectOptions, SslMode};
pub use contacts::{SourceBatch, StoredContact, UpsertReport};
pub use deliveries::{DeliveryPage, DeliveryRecord};
pub use health::Health;
pub use integrations::{IntegrationPatch, IntegrationRecord, IntegrationView, LockedIntegration};
pub use outbox::{Accepted, ClaimedDelivery, DeliveryOutcome, Finished, NewLeadEvent, PushLink};
pub use queue::{ClaimFinished, QueueClaim};
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
    /// With the causes (a TLS certificate refused, a server that does not speak TLS, a refused
    /// login): tokio-postgres's own message leaves them out. None of them quotes the URL.
    #[error("cannot get a database connection: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration failed: {}", migration_detail(.0))]
    Migration(#[from] refinery::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error(
        "migrations need a direct (session) connection, not a transaction-mode pooler (the URL says \
         pgbouncer=true): use the database's direct URL (Supabase: port 5432 of db.<project>.supabase.co)"
    )]
    MigrateThroughPooler,
}

/// An error's message followed by those of its causes that it does not already include.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
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
    /// The URL says `pgbouncer=true`: a transaction-mode pooler.
    pooler: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// A pool for `database_url` (a `postgres://` URL, or libpq's `key=value` form), with the TLS of
    /// its `sslmode` (see [`connect`]; `verify-full` when it has none). No connection is made until
    /// the first query.
    pub fn connect(database_url: &str, max_connections: usize) -> Result<Self, StoreError> {
        Self::connect_with(database_url, max_connections, &ConnectOptions::default())
    }

    /// As [`Store::connect`], with a CA bundle from elsewhere than the URL (the secret).
    pub fn connect_with(
        database_url: &str,
        max_connections: usize,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let url = connect::DbUrl::parse(database_url)?;
        let mut config = tokio_postgres::Config::from_str(&url.rest)
            // tokio-postgres's parse errors do not echo the URL (or its password).
            .map_err(|e| StoreError::BadUrl(e.to_string()))?;
        config.ssl_mode(url.tokio_mode());
        let tls_config = url.tls_config(options)?;
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
        Ok(Store {
            pool,
            pooler: url.pooler,
        })
    }

    /// The most connections this store opens.
    pub fn max_connections(&self) -> usize {
        self.pool.status().max_size
    }

    /// Whether the connection is encrypted (a health check; through a pooler, the pooler's own
    /// connection to the server).
    pub async fn uses_tls(&self) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await?;
        Ok(rows.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")),
        ))
    }

    /// Applies the migrations of `infra/migrations`, one runner at a time across processes (a
    /// session advisory lock: so not through a transaction-mode pooler, which this refuses when the URL
    /// says `pgbouncer=true`).
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
        if self.pooler {
            return Err(StoreError::MigrateThroughPooler);
        }
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
    // Unnamed and typed: one round trip, nothing prepared.
    tx.query_typed(
        "SELECT set_config('role', 'crmsync_app', true), set_config('crmsync.user_id', $1, true)",
        &[(&user.to_string(), tokio_postgres::types::Type::TEXT)],
    )
    .await?;
    Ok(tx)
}
