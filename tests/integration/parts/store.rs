//! The Postgres store: migrations, batch upsert by phone, Row Level Security, sealed credentials.

use chrono::{TimeZone, Utc};
use crmsync_domain::AuthType;
use crmsync_domain::Provider;
use crmsync_store::{Credentials, Vault};
use uuid::Uuid;

use crate::support::common::{contact, integration_of, migrated_store};

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let (db, _) = migrated_store().await;
    let store = crmsync_store::Store::connect(&db.direct_url, 2).unwrap();
    let again = crmsync_store::Store::connect(&db.direct_url, 2).unwrap();
    let (a, b) = tokio::join!(store.migrate(), again.migrate());
    a.unwrap();
    b.unwrap();
    let client = crmsync_testkit::connect(&db.url).await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND rowsecurity ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "contact_sources",
            "contacts",
            "crm_integrations",
            "crm_sync_logs",
            "crm_webhook_receipts",
            "lead_events",
            "push_deliveries",
            "push_links"
        ],
        "every table exists with Row Level Security on"
    );
}

#[tokio::test]
pub(crate) async fn upsert_inserts_then_writes_only_what_changed() {
    let (_db, store) = migrated_store().await;
    let owner = Uuid::new_v4();
    let batch = vec![
        contact("Ann", "+1 415 555 0101", None),
        contact("Bob", "(415) 555-0102", None),
        contact("Cy", "415.555.0103", None),
    ];
    let first = store
        .upsert_contacts(owner, integration_of(&store, owner).await, batch.clone())
        .await
        .unwrap();
    assert_eq!((first.inserted, first.updated, first.unchanged), (3, 0, 0));

    let again = store
        .upsert_contacts(owner, integration_of(&store, owner).await, batch.clone())
        .await
        .unwrap();
    assert_eq!(again.upserted(), 0, "an unchanged batch writes nothing");
    assert_eq!(again.unchanged, 3);

    let mut changed = batch;
    changed[1].name = Some("Robert".into());
    let third = store
        .upsert_contacts(owner, integration_of(&store, owner).await, changed)
        .await
        .unwrap();
    assert_eq!((third.inserted, third.updated, third.unchanged), (0, 1, 2));

    let rows = store.list_contacts(owner).await.unwrap();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.phone_number.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("+14155550101", "Ann"),
            ("+14155550102", "Robert"),
            ("+14155550103", "Cy")
        ]
    );
}

#[tokio::test]
async fn duplicate_phones_in_one_batch_keep_the_latest_record() {
    let (_db, store) = migrated_store().await;
    let owner = Uuid::new_v4();
    let older = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let newer = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    // The same number written three ways; the newest record is in the middle.
    let batch = vec![
        contact("Old Name", "+1 (415) 555-0199", Some(older)),
        contact("New Name", "4155550199", Some(newer)),
        contact("Undated", "+14155550199", None),
        contact("Other", "+1 415 555 0100", Some(older)),
    ];
    let report = store
        .upsert_contacts(owner, integration_of(&store, owner).await, batch)
        .await
        .unwrap();
    assert_eq!(report.duplicates_in_batch, 2);
    assert_eq!(report.inserted, 2);
    let rows = store.list_contacts(owner).await.unwrap();
    assert_eq!(rows.len(), 2);
    let dup = rows
        .iter()
        .find(|r| r.phone_number == "+14155550199")
        .unwrap();
    assert_eq!(dup.name, "New Name");
    assert_eq!(dup.source_updated_at, Some(newer));
}

#[tokio::test]
async fn a_record_without_email_keeps_the_stored_one() {
    let (_db, store) = migrated_store().await;
    let owner = Uuid::new_v4();
    store
        .upsert_contacts(
            owner,
            integration_of(&store, owner).await,
            vec![contact("Ann", "+14155550101", None)],
        )
        .await
        .unwrap();
    let mut no_email = contact("Ann B", "+14155550101", None);
    no_email.email = None;
    let report = store
        .upsert_contacts(owner, integration_of(&store, owner).await, vec![no_email])
        .await
        .unwrap();
    assert_eq!(report.updated, 1);
    let rows = store.list_contacts(owner).await.unwrap();
    assert_eq!(rows[0].name, "Ann B");
    assert_eq!(rows[0].email.as_deref(), Some("ann@example.com"));
}

#[tokio::test]
pub(crate) async fn a_large_batch_is_one_upsert() {
    let (_db, store) = migrated_store().await;
    let owner = Uuid::new_v4();
    let batch: Vec<_> = (0..5_000)
        .map(|i| {
            contact(
                &format!("P{i}"),
                &format!("+1415{:07}", 2_000_000 + i),
                None,
            )
        })
        .collect();
    let report = store
        .upsert_contacts(owner, integration_of(&store, owner).await, batch)
        .await
        .unwrap();
    assert_eq!(report.inserted, 5_000);
    assert_eq!(store.list_contacts(owner).await.unwrap().len(), 5_000);
}

/// Batches go through a temporary table made by the application's role: a database where PUBLIC may
/// not make temporary tables (a hardened one) still takes pulls, as migration V4 grants it.
#[tokio::test]
async fn batches_are_written_where_public_may_not_make_temporary_tables() {
    let db = crmsync_testkit::postgres().await.fresh_database().await;
    let admin = crmsync_testkit::connect(&db.url).await;
    admin
        .batch_execute(&format!(
            "REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC",
            db.name
        ))
        .await
        .unwrap();
    let store = crmsync_store::Store::connect(&db.url, 2).unwrap();
    store.migrate().await.unwrap();
    let owner = Uuid::new_v4();
    let report = store
        .upsert_contacts(
            owner,
            integration_of(&store, owner).await,
            vec![contact("Ann", "+1 415 555 0101", None)],
        )
        .await
        .unwrap();
    assert_eq!(report.inserted, 1);
    let temp_tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        temp_tables, 0,
        "the batch's table ends with its transaction"
    );
}

#[tokio::test]
pub(crate) async fn row_level_security_keeps_users_apart() {
    let (db, store) = migrated_store().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    // The same phone for both users: two rows, one each.
    store
        .upsert_contacts(
            alice,
            integration_of(&store, alice).await,
            vec![contact("Alice's", "+14155550101", None)],
        )
        .await
        .unwrap();
    store
        .upsert_contacts(
            bob,
            integration_of(&store, bob).await,
            vec![
                contact("Bob's", "+14155550101", None),
                contact("B2", "+14155550102", None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.list_contacts(alice).await.unwrap().len(), 1);
    assert_eq!(store.list_contacts(bob).await.unwrap().len(), 2);
    assert_eq!(store.list_contacts(Uuid::new_v4()).await.unwrap().len(), 0);

    // Through a login role that is neither superuser nor table owner, as a deployed app connects.
    let admin = crmsync_testkit::connect(&db.url).await;
    let role = format!("probe_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT crmsync_app TO {role}"
        ))
        .await
        .unwrap();
    let url = db
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let probe = crmsync_testkit::connect(&url).await;
    let is_super: bool = probe
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_super);
    probe.batch_execute("SET ROLE crmsync_app").await.unwrap();

    let count = |user: Option<Uuid>| {
        let probe = &probe;
        async move {
            let setting = user.map(|u| u.to_string()).unwrap_or_default();
            probe
                .execute(
                    "SELECT set_config('crmsync.user_id', $1, false)",
                    &[&setting],
                )
                .await
                .unwrap();
            let n: i64 = probe
                .query_one("SELECT count(*) FROM contacts", &[])
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(count(Some(alice)).await, 1);
    assert_eq!(count(Some(bob)).await, 2);
    assert_eq!(count(None).await, 0, "no user set: no rows");

    // Alice cannot write a row owned by Bob, nor change or delete Bob's rows.
    probe
        .execute(
            "SELECT set_config('crmsync.user_id', $1, false)",
            &[&alice.to_string()],
        )
        .await
        .unwrap();
    let err = probe
        .execute(
            "INSERT INTO contacts (owner_id, name, phone_number) VALUES ($1, 'x', '+14155550109')",
            &[&bob],
        )
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("row-level security"), "{err:?}");
    let changed = probe
        .execute(
            "UPDATE contacts SET name = 'hacked' WHERE owner_id = $1",
            &[&bob],
        )
        .await
        .unwrap();
    assert_eq!(changed, 0);
    let deleted = probe
        .execute("DELETE FROM contacts WHERE owner_id = $1", &[&bob])
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(store.list_contacts(bob).await.unwrap()[0].name, "Bob's");
}

#[tokio::test]
pub(crate) async fn integrations_store_only_sealed_credentials_and_stay_private() {
    let (db, store) = migrated_store().await;
    let vault = Vault::new(&"42".repeat(32), None).unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let id = Uuid::new_v4();
    let creds = Credentials::OAuth {
        access_token: "access-token-SECRET-1".into(),
        refresh_token: Some("refresh-token-SECRET-2".into()),
        expires_at: Some(1_900_000_000),
    };
    let sealed = vault.seal(id, Provider::Rex, &creds).unwrap();
    let record = store
        .connect_integration(
            alice,
            id,
            Provider::Rex,
            AuthType::OAuth,
            &sealed,
            None,
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            record.status.as_str(),
            record.auto_sync,
            record.risk_threshold
        ),
        ("active", true, 20)
    );

    // One integration per provider and user: another id cannot take the provider's row.
    let other = vault.seal(Uuid::new_v4(), Provider::Rex, &creds).unwrap();
    assert!(
        store
            .connect_integration(
                alice,
                Uuid::new_v4(),
                Provider::Rex,
                AuthType::OAuth,
                &other,
                None,
                None
            )
            .await
            .unwrap()
            .is_none()
    );

    // Read back and opened: the same credentials. Bob sees nothing of Alice's.
    let back = store.get_integration(alice, id).await.unwrap().unwrap();
    assert_eq!(
        vault
            .open(id, Provider::Rex, &back.sealed)
            .unwrap()
            .credentials,
        creds
    );
    assert!(store.get_integration(bob, id).await.unwrap().is_none());
    assert!(store.list_integrations(bob).await.unwrap().is_empty());
    assert_eq!(store.list_integrations(alice).await.unwrap().len(), 1);

    // A dump of the table shows no token.
    let admin = crmsync_testkit::connect(&db.url).await;
    let dump: String = admin
        .query_one(
            "SELECT string_agg(t::text, E'\\n') FROM crm_integrations t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !dump.contains("SECRET") && !dump.contains(&hex_of("access-token-SECRET-1")),
        "{dump}"
    );
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The dashboard's own `contacts` table (the REX seed's Supabase table: name, phone_number, email,
/// notes, created_at, updated_at, a unique phone) with rows in it: the migrations adopt it, keep every
/// row (phones not in E.164 too), give them to the dashboard user named at migration time, and a sync
/// then updates the row of a phone it already has instead of adding a second.
#[tokio::test]
async fn an_existing_dashboard_contacts_table_is_adopted_with_every_row() {
    let db = crmsync_testkit::postgres().await.fresh_database().await;
    let admin = crmsync_testkit::connect(&db.url).await;
    admin
        .batch_execute(
            "CREATE TABLE contacts (
                 name text, phone_number text UNIQUE, email text, notes text,
                 created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
             INSERT INTO contacts (name, phone_number, email, notes) VALUES
                 ('Ann Seed', '+14155550100', 'ann@example.com', 'from the dashboard'),
                 ('Bob Typed', '0412 345 678', NULL, NULL),
                 ('Cy Seed', '+14155550101', NULL, 'keep me');",
        )
        .await
        .unwrap();
    let owner = Uuid::new_v4();
    let store = crmsync_store::Store::connect(&db.url, 2).unwrap();
    store.migrate_adopting(Some(owner)).await.unwrap();
    // Again, as every deploy does: nothing changes.
    store.migrate().await.unwrap();

    let rows = admin
        .query(
            "SELECT name, phone_number, owner_id, notes FROM contacts ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, Option<Uuid>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.2 == Some(owner)), "{rows:?}");
    assert_eq!(
        rows[1].1, "0412 345 678",
        "a phone as the dashboard stored it is kept"
    );
    // Under Row Level Security, the owner sees them; nobody else does.
    assert_eq!(store.list_contacts(owner).await.unwrap().len(), 3);
    assert!(
        store
            .list_contacts(Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );

    // A sync of a phone the dashboard has updates that row.
    let integration = integration_of(&store, owner).await;
    let mut ann = contact("Ann Fromcrm", "+14155550100", Some(Utc::now()));
    ann.external_id = Some("9".into());
    store
        .upsert_contacts(owner, integration, vec![ann])
        .await
        .unwrap();
    let listed = store.list_contacts(owner).await.unwrap();
    assert_eq!(listed.len(), 3);
    let ann = listed
        .iter()
        .find(|c| c.phone_number == "+14155550100")
        .unwrap();
    assert_eq!(ann.name, "Ann Fromcrm");
    assert_eq!(ann.email.as_deref(), Some("ann fromcrm@example.com"));
    assert_eq!(
        ann.notes.as_deref(),
        Some("from the dashboard"),
        "no blank over a value"
    );
    // The dashboard goes on writing rows its own way (no owner, the phone as typed).
    admin
        .execute(
            "INSERT INTO contacts (name, phone_number) VALUES ('Fay Typed', '0412 000 000')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.list_contacts(owner).await.unwrap().len(), 3);
}

/// Without an owner at migration time the dashboard's rows are kept and seen by no user; a table whose
/// `id` crmsync cannot refer to is refused with a sentence saying what to do, and nothing changes.
#[tokio::test]
async fn adopting_without_an_owner_keeps_the_rows_and_a_foreign_id_is_refused_clearly() {
    let db = crmsync_testkit::postgres().await.fresh_database().await;
    let admin = crmsync_testkit::connect(&db.url).await;
    admin
        .batch_execute(
            "CREATE TABLE contacts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text,
                 phone_number text, email text, notes text,
                 created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
             INSERT INTO contacts (name, phone_number) VALUES ('Dee', '+14155550102');",
        )
        .await
        .unwrap();
    let store = crmsync_store::Store::connect(&db.url, 2).unwrap();
    store.migrate().await.unwrap();
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM contacts WHERE owner_id IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);

    let db = crmsync_testkit::postgres().await.fresh_database().await;
    let admin = crmsync_testkit::connect(&db.url).await;
    admin
        .batch_execute(
            "CREATE TABLE contacts (id bigserial PRIMARY KEY, name text, phone_number text);
             INSERT INTO contacts (name, phone_number) VALUES ('Eve', '+14155550103');",
        )
        .await
        .unwrap();
    let store = crmsync_store::Store::connect(&db.url, 2).unwrap();
    let err = store.migrate().await.unwrap_err().to_string();
    assert!(err.contains("crmsync needs a uuid id"), "{err}");
    assert!(err.contains("Rename the column"), "{err}");
    let still: i64 = admin
        .query_one("SELECT count(*) FROM contacts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1);
}

/// CRM webhooks in: a live integration is found by its token's hash (for its provider only), and only
/// by the current token; a delivery is taken once; a disconnect of live updates returns what was
/// subscribed and makes the token useless; other users never see another's receipts.
#[tokio::test]
async fn live_integrations_are_found_by_their_token_only_until_cleared() {
    let (_db, store) = migrated_store().await;
    let owner = Uuid::new_v4();
    let integration = integration_of(&store, owner).await;
    let hash = [7u8; 32];
    assert_eq!(
        store
            .integration_by_webhook_token(Provider::FollowUpBoss, &hash)
            .await
            .unwrap(),
        None
    );
    let sub = serde_json::json!({"ids": ["101", "102"]});
    assert!(
        store
            .set_live(owner, integration, &hash, &sub)
            .await
            .unwrap()
    );
    // Another user cannot mark it live.
    assert!(
        !store
            .set_live(Uuid::new_v4(), integration, &[8u8; 32], &sub)
            .await
            .unwrap()
    );
    let found = store
        .integration_by_webhook_token(Provider::FollowUpBoss, &hash)
        .await
        .unwrap()
        .expect("found by its token");
    assert_eq!((found.id, found.user_id), (integration, owner));
    assert_eq!(
        store
            .integration_by_webhook_token(Provider::Lofty, &hash)
            .await
            .unwrap(),
        None,
        "a token is good for its own CRM only"
    );
    let view = store
        .integration_view(owner, integration)
        .await
        .unwrap()
        .unwrap();
    assert!(view.live_since.is_some());

    assert!(
        store
            .take_receipt(owner, integration, "evt-1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_receipt(owner, integration, "evt-1")
            .await
            .unwrap()
    );
    assert!(
        store
            .take_receipt(owner, integration, "evt-2")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .prune_receipts(Utc::now() - chrono::Duration::days(7))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_receipts(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .take_receipt(owner, integration, "evt-1")
            .await
            .unwrap()
    );

    assert_eq!(
        store.clear_live(owner, integration).await.unwrap(),
        Some(sub)
    );
    assert_eq!(
        store
            .integration_by_webhook_token(Provider::FollowUpBoss, &hash)
            .await
            .unwrap(),
        None
    );
    let view = store
        .integration_view(owner, integration)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.live_since, None);
    assert_eq!(store.clear_live(owner, integration).await.unwrap(), None);
}
