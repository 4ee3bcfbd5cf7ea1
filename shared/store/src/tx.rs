//! A transaction that owns its connection, for work that spans awaits on other I/O (a whole sync,
//! a token refresh under a row lock). If it is dropped before `commit`, its connection is closed rather
//! than returned to the pool, so Postgres rolls it back and releases its locks even on a panic or a
//! cancelled future.

use deadpool_postgres::{ClientWrapper, Object, Pool};
use uuid::Uuid;

use super::StoreError;

pub struct OwnedTx {
    conn: Option<Object>,
}

impl std::fmt::Debug for OwnedTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedTx")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl OwnedTx {
    /// Begins a transaction that sees only `user`'s rows (see [`super::begin_as`]).
    pub(crate) async fn begin_as(pool: &Pool, user: Uuid) -> Result<Self, StoreError> {
        let tx = OwnedTx {
            conn: Some(pool.get().await?),
        };
        let client = tx.client()?;
        client.batch_execute("BEGIN").await?;
        client
            .query_typed(
                "SELECT set_config('role', 'crmsync_app', true), set_config('crmsync.user_id', $1, true)",
                &[(&user.to_string(), tokio_postgres::types::Type::TEXT)],
            )
            .await?;
        Ok(tx)
    }

    pub(crate) fn client(&self) -> Result<&ClientWrapper, StoreError> {
        self.conn
            .as_deref()
            .ok_or_else(|| StoreError::Corrupt("transaction already finished".into()))
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Corrupt("transaction already finished".into()))?;
        match conn.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Unknown state: never hand this connection to anyone else.
                drop(Object::take(conn));
                Err(e.into())
            }
        }
    }
}

impl Drop for OwnedTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the connection rolls the transaction back and releases its locks.
            drop(Object::take(conn));
        }
    }
}
