//! The integrations' claims on the sync queue (`crm_integrations.sync_claimed_until`,
//! `sync_queue_token`): taken by one conditional `UPDATE` each, so that an integration is queued (or
//! run by "sync now") once however many callers (overlapping dispatcher runs, concurrent "sync now"
//! calls, webhooks) ask at the same moment; renewed by the worker and a continuation; cleared by the
//! worker when it is done (unless a sync was requested while it held: then the worker syncs again);
//! expired when its holder vanished. A fresh claim clears a request: its sync starts after it.

use std::time::Duration;

use uuid::Uuid;

use crate::{Store, StoreError, begin_as};

/// A claim taken: the integration and the token its message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClaim {
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub token: Uuid,
}

/// What [`Store::finish_claim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimFinished {
    /// The claim is cleared: the next request queues the integration.
    Released,
    /// A sync was requested while the claim held: the claim still holds, for another run.
    Again,
    /// The claim no longer held (it expired and was taken again, or the integration is gone).
    Lost,
}

/// Whole seconds of `d`, at least one, as Postgres takes them.
fn secs(d: Duration) -> f64 {
    d.as_secs().max(1) as f64
}

impl Store {
    /// Claims the integration `id` of `user` for `ttl`, for one queue message (or one "sync now"),
    /// unless an unexpired claim holds it (its message is queued or being worked on). `None`: not
    /// claimed (held, or not `user`'s).
    pub async fn claim_sync(
        &self,
        user: Uuid,
        id: Uuid,
        ttl: Duration,
    ) -> Result<Option<QueueClaim>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                "UPDATE crm_integrations
                    SET sync_claimed_until = now() + make_interval(secs => $2),
                        sync_queue_token = gen_random_uuid(), sync_requested_at = NULL
                  WHERE id = $1 AND (sync_claimed_until IS NULL OR sync_claimed_until < now())
              RETURNING sync_queue_token",
                &[&id, &secs(ttl)],
            )
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| QueueClaim {
            integration_id: id,
            user_id: user,
            token: r.get(0),
        }))
    }

    /// Claims the integration `id` of `user` for `ttl` as [`Store::claim_sync`]; if a claim holds it,
    /// marks it requested instead, so the holder syncs it again before letting go
    /// ([`Store::finish_claim`]). Each step is one conditional `UPDATE` on the row, so a request either
    /// takes a free claim or marks a held one: one released between the two steps is claimed on the
    /// next turn. `Ok(None)`: marked (or the integration is not `user`'s).
    pub async fn claim_or_request_sync(
        &self,
        user: Uuid,
        id: Uuid,
        ttl: Duration,
    ) -> Result<Option<QueueClaim>, StoreError> {
        for _ in 0..3 {
            if let Some(claim) = self.claim_sync(user, id, ttl).await? {
                return Ok(Some(claim));
            }
            let mut conn = self.pool.get().await?;
            let tx = begin_as(&mut conn, user).await?;
            let marked = tx
                .execute(
                    "UPDATE crm_integrations SET sync_requested_at = now()
                      WHERE id = $1 AND sync_claimed_until >= now()",
                    &[&id],
                )
                .await?;
            tx.commit().await?;
            if marked == 1 {
                return Ok(None);
            }
        }
        // Three claims released and taken again between the steps (someone syncs it right now), or
        // not `user`'s integration (callers check that first).
        Ok(None)
    }

    /// The holder of `claim` is done: clears the claim, unless a sync was requested meanwhile
    /// ([`Store::claim_or_request_sync`]); then it clears the request and keeps the claim for `ttl`
    /// (the holder syncs again). `Released`, `Again`, or `Lost` (the claim no longer held).
    pub async fn finish_claim(
        &self,
        claim: &QueueClaim,
        ttl: Duration,
    ) -> Result<ClaimFinished, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, claim.user_id).await?;
        let row = tx
            .query_opt(
                "UPDATE crm_integrations
                    SET sync_claimed_until = CASE WHEN sync_requested_at IS NULL THEN NULL
                                                  ELSE now() + make_interval(secs => $3) END,
                        sync_queue_token = CASE WHEN sync_requested_at IS NULL THEN NULL
                                                ELSE sync_queue_token END,
                        sync_requested_at = NULL
                  WHERE id = $1 AND sync_queue_token = $2
              RETURNING sync_queue_token IS NOT NULL",
                &[&claim.integration_id, &claim.token, &secs(ttl)],
            )
            .await?;
        tx.commit().await?;
        Ok(match row {
            None => ClaimFinished::Lost,
            Some(r) if r.get::<_, bool>(0) => ClaimFinished::Again,
            Some(_) => ClaimFinished::Released,
        })
    }

    /// Claims for `ttl`, among `ids`, every active integration of any user that no unexpired claim
    /// holds: the dispatcher's one statement, whose row locks make two overlapping runs claim each
    /// integration once. Runs as the table owner (the dispatcher works across users).
    pub async fn claim_syncs_all(
        &self,
        ids: &[Uuid],
        ttl: Duration,
    ) -> Result<Vec<QueueClaim>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.pool.get().await?;
        // Outside a transaction: one unnamed statement (safe through a transaction-mode pooler).
        let rows = conn
            .query_typed(
                "UPDATE crm_integrations
                    SET sync_claimed_until = now() + make_interval(secs => $2),
                        sync_queue_token = gen_random_uuid(), sync_requested_at = NULL
                  WHERE id = ANY($1) AND status = 'active'
                    AND (sync_claimed_until IS NULL OR sync_claimed_until < now())
              RETURNING id, user_id, sync_queue_token",
                &[
                    (&ids, tokio_postgres::types::Type::UUID_ARRAY),
                    (&secs(ttl), tokio_postgres::types::Type::FLOAT8),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| QueueClaim {
                integration_id: r.get(0),
                user_id: r.get(1),
                token: r.get(2),
            })
            .collect())
    }

    /// Whether `claim` still holds its integration, and if so renews it for `ttl` from now (its
    /// message is being worked on, or continues): `false` for a stale message (its claim was cleared or
    /// taken again since), or an integration that is gone.
    pub async fn renew_claim(&self, claim: &QueueClaim, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, claim.user_id).await?;
        let n = tx
            .execute(
                "UPDATE crm_integrations SET sync_claimed_until = now() + make_interval(secs => $3)
                  WHERE id = $1 AND sync_queue_token = $2",
                &[&claim.integration_id, &claim.token, &secs(ttl)],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Clears `claim` if it still holds its integration (the work is done, or its message was never
    /// sent): the next request queues it again. Returns whether it held.
    pub async fn release_claim(&self, claim: &QueueClaim) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, claim.user_id).await?;
        let n = tx
            .execute(
                "UPDATE crm_integrations SET sync_claimed_until = NULL, sync_queue_token = NULL
                  WHERE id = $1 AND sync_queue_token = $2",
                &[&claim.integration_id, &claim.token],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The live records of the integration stored so far (the progress of a sync that continues in
    /// the background).
    pub async fn stored_records(&self, user: Uuid, id: Uuid) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_one(
                "SELECT count(*) FROM contact_sources
                  WHERE integration_id = $1 AND deleted_at IS NULL",
                &[&id],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// The active integrations of any user with a sync requested and no claim holding them (their
    /// holder vanished before it could sync again): due for the dispatcher. Runs as the table owner.
    pub async fn integrations_requested(&self) -> Result<Vec<Uuid>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query_typed(
                "SELECT id FROM crm_integrations
                  WHERE sync_requested_at IS NOT NULL AND status = 'active'
                    AND (sync_claimed_until IS NULL OR sync_claimed_until < now())",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The integrations of any user with push deliveries due now (the dispatcher queues them even
    /// when no pull is due). Runs as the table owner.
    pub async fn integrations_with_due_deliveries(&self) -> Result<Vec<Uuid>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query_typed(
                "SELECT DISTINCT d.integration_id FROM push_deliveries d
                   JOIN crm_integrations i ON i.id = d.integration_id
                  WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND i.status = 'active'
                    AND (d.leased_until IS NULL OR d.leased_until <= now())",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
