//! Helpers shared by the integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use chrono::{DateTime, Utc};
use crmsync_domain::{Contact, PhoneNumber, Provider, Region};
use crmsync_store::Store;

thread_local! {
    static THROUGH_PGBOUNCER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a test (a `#[tokio::test]` function, which builds its runtime on this thread) with its
/// database reached through PgBouncer in transaction pooling mode: [`migrated_store`]'s store and
/// URL (so the functions' secret) go through the pooler. See `parts::pooler`.
pub fn through_pgbouncer(test: fn()) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            THROUGH_PGBOUNCER.with(|p| p.set(false));
        }
    }
    THROUGH_PGBOUNCER.with(|p| p.set(true));
    let _reset = Reset;
    test();
}

/// A migrated database of its own, and a store on it.
pub async fn migrated_store() -> (crmsync_testkit::TestDb, Store) {
    let mut db = crmsync_testkit::postgres().await.fresh_database().await;
    if THROUGH_PGBOUNCER.with(|p| p.get()) {
        db.url = crmsync_testkit::pgbouncer().await.url(&db.name);
    }
    // Migrations need a session: straight to Postgres, even when the suite runs through PgBouncer.
    Store::connect(&db.direct_url, 1)
        .expect("store")
        .migrate()
        .await
        .expect("migrations apply");
    let store = Store::connect(&db.url, 8).expect("store");
    (db, store)
}

/// The AWS SDK configuration for the test run's moto server.
pub async fn moto_config() -> aws_config::SdkConfig {
    let moto = crmsync_testkit::moto().await;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await
}

/// Counts the operations an SDK client sends (one per call, whatever the service).
#[derive(Debug, Default, Clone)]
pub struct CallCounter(pub Arc<AtomicUsize>);

impl CallCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub fn phone(raw: &str) -> PhoneNumber {
    PhoneNumber::parse(raw, Region::default()).expect("test phone parses")
}

pub fn contact(name: &str, raw_phone: &str, updated: Option<DateTime<Utc>>) -> Contact {
    Contact {
        external_id: Some(format!("ext-{name}")),
        name: Some(name.to_owned()),
        email: Some(format!("{}@example.com", name.to_lowercase())),
        phone: phone(raw_phone),
        notes: None,
        updated_at: updated,
        created_at: None,
        source: Provider::FollowUpBoss,
        deleted: false,
    }
}

/// `owner`'s Follow Up Boss integration (made on first use), for records to belong to. Its credentials
/// are never opened.
pub async fn integration_of(store: &Store, owner: uuid::Uuid) -> uuid::Uuid {
    let provider = Provider::FollowUpBoss;
    if let Some(existing) = store
        .integration_by_provider(owner, provider)
        .await
        .unwrap()
    {
        return existing.id;
    }
    let sealed = crmsync_store::Sealed {
        ciphertext: vec![0],
        nonce: [0; 12],
        key_version: "test".into(),
    };
    let id = uuid::Uuid::new_v4();
    store
        .connect_integration(
            owner,
            id,
            provider,
            crmsync_domain::AuthType::ApiKey,
            &sealed,
            None,
            None,
        )
        .await
        .unwrap()
        .expect("a new integration")
        .id
}

/// Creates a rate-limit table shaped as the contract says (key `pk`, TTL on `expires_at`).
pub async fn rate_limit_table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = format!("rate-limits-{}", uuid::Uuid::new_v4().simple());
    crmsync_aws::limiter::create_table(client, &name)
        .await
        .expect("the rate-limit table is created in moto");
    name
}
