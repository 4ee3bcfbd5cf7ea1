//! The store and the functions through a transaction-mode pooler: Debian's PgBouncer 1.18 with
//! `pool_mode = transaction` (started by `crmsync_testkit::pgbouncer`), which, like Supabase's pooler
//! on port 6543 and RDS Proxy, may run each transaction of a client on another server connection and
//! (before 1.21) does not carry named prepared statements from one to the next.
//!
//! A concurrent workload of the store's query families, then flows of the other suites run again
//! with their database behind PgBouncer (`support::common::through_pgbouncer`): the pull (OAuth,
//! token refresh, sync lease, page commits, logs), the push outbox (accept, claim, finish, retry),
//! integration CRUD, the vault, Row Level Security and the scheduled run. The whole suite runs through
//! PgBouncer with `CRMSYNC_TEST_POOLER=pgbouncer`.

use crmsync_store::{Store, StoreError};
use uuid::Uuid;

use crate::support::common::{contact, integration_of, through_pgbouncer};

/// A migrated database, and a store on it through PgBouncer with more connections than PgBouncer
/// gives the database.
async fn pooled(connections: usize) -> (crmsync_testkit::TestDb, Store) {
    let db = crmsync_testkit::postgres().await.fresh_database().await;
    Store::connect(&db.direct_url, 1)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let url = crmsync_testkit::pgbouncer().await.url(&db.name);
    (db, Store::connect(&url, connections).unwrap())
}

#[tokio::test]
async fn concurrent_store_work_shares_a_few_server_connections() {
    let (db, store) = pooled(8).await;
    assert!(crmsync_testkit::PGBOUNCER_POOL_SIZE < store.max_connections());
    let owners: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();

    // Twelve users at once, three rounds each: integration, upserts (the typed, unnamed statements),
    // reads under Row Level Security, the row lock of a token refresh. Each holds at most one
    // transaction at a time: a client holding one while it waits for another could wait for ever
    // once every server connection is held (see the README's "Database connections").
    let work = owners.iter().enumerate().map(|(i, &owner)| {
        let store = store.clone();
        async move {
            let integration = integration_of(&store, owner).await;
            for round in 0..3u32 {
                let batch = (0..20u32)
                    .map(|n| {
                        contact(
                            &format!("P{n}r{round}"),
                            &format!("+1415555{:04}", n + 100 * i as u32),
                            None,
                        )
                    })
                    .collect();
                store
                    .upsert_contacts(owner, integration, batch)
                    .await
                    .unwrap();
                assert_eq!(store.list_contacts(owner).await.unwrap().len(), 20);
                let locked = store
                    .lock_integration(owner, integration)
                    .await
                    .unwrap()
                    .expect("the integration exists");
                locked.release().await.unwrap();
                assert_eq!(store.integration_views(owner).await.unwrap().len(), 1);
            }
            integration
        }
    });
    let integrations = futures::future::join_all(work).await;

    // A sync's lease is a transaction held open, so it keeps one server connection while the sync
    // runs; it still excludes a second sync, and the other server connections keep serving.
    let (owner, integration) = (owners[0], integrations[0]);
    let lease = store
        .try_lock_sync(owner, integration)
        .await
        .unwrap()
        .expect("nobody else syncs this integration");
    let others = owners[1..].iter().zip(&integrations[1..]).map(|(&o, &i)| {
        let store = store.clone();
        async move {
            assert!(
                store
                    .try_lock_sync(owner, integration)
                    .await
                    .unwrap()
                    .is_none(),
                "the lease holds through the pooler"
            );
            let other = store.try_lock_sync(o, i).await.unwrap().expect("free");
            other.release().await.unwrap();
        }
    });
    futures::future::join_all(others).await;
    lease.release().await.unwrap();
    assert!(
        store
            .try_lock_sync(owner, integration)
            .await
            .unwrap()
            .is_some()
    );

    // The scheduled run's queries across users, outside a transaction.
    assert_eq!(store.active_integrations_all().await.unwrap().len(), 12);
    assert!(store.due_deliveries_all(10).await.unwrap().is_empty());

    // PgBouncer did the work on its few server connections.
    let admin = crmsync_testkit::connect(&crmsync_testkit::postgres().await.url("postgres")).await;
    let servers: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (1..=crmsync_testkit::PGBOUNCER_POOL_SIZE as i64).contains(&servers),
        "{servers} server connections for the store's {} clients",
        store.max_connections()
    );
}

#[tokio::test]
async fn migrations_through_the_pooler_are_refused_with_a_clear_error() {
    let (_db, store) = pooled(2).await;
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(err, StoreError::MigrateThroughPooler), "{err}");
    assert!(err.to_string().contains("direct"), "{err}");
}

/// Each of these is a test of another suite, run again with its database behind PgBouncer.
macro_rules! through_pgbouncer {
    ($($name:ident => $test:path;)*) => {
        $(
            #[test]
            fn $name() {
                through_pgbouncer($test);
            }
        )*
    };
}

through_pgbouncer! {
    store_upsert => super::store::upsert_inserts_then_writes_only_what_changed;
    store_large_batch => super::store::a_large_batch_is_one_upsert;
    store_row_level_security => super::store::row_level_security_keeps_users_apart;
    store_vault => super::store::integrations_store_only_sealed_credentials_and_stay_private;
    pull_oauth_incremental => crate::routes::contacts_sync::followupboss_connects_by_oauth_and_syncs_incrementally;
    pull_one_at_a_time => crate::routes::contacts_sync::one_sync_per_integration_at_a_time;
    push_every_crm_once => crate::routes::lead_webhook::a_lead_reaches_every_crm_once_and_is_updated_in_place;
    push_same_version_once => crate::routes::lead_webhook::the_same_lead_version_delivered_twice_is_pushed_once;
    integrations_sync_and_disconnect => crate::routes::integrations::lofty_api_key_sync_and_disconnect;
    integrations_pause_and_reactivate => crate::routes::integrations::pausing_keeps_failures_and_reactivating_resets_them;
    deliveries_pages => crate::routes::deliveries::deliveries_page_newest_first_with_each_status_filter;
    deliveries_retry => crate::routes::deliveries::a_crm_outage_leaves_deliveries_visible_and_a_retry_pushes_them_once;
    scheduled_run => crate::routes::scheduled_sync::a_scheduled_run_pulls_every_integration_then_drains_the_outbox;
    sync_logs_pages => crate::routes::sync_logs::logs_page_newest_first_and_outlive_a_disconnect;
    integration_sync => crate::routes::integration_sync::an_integration_sync_pulls_then_pushes_the_waiting_leads;
    queue_dispatch_once => crate::routes::sync_worker::overlapping_dispatcher_runs_queue_each_due_integration_once;
    queue_sync_now_once => crate::routes::sync_worker::ten_concurrent_sync_now_calls_run_the_integration_once;
}
