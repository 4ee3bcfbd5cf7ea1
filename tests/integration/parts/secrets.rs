//! The application secret from Secrets Manager (moto): fetched once, cached, checked.

use crmsync_aws::SecretError as ConfigError;
use crmsync_lambda::config::SecretsProvider;

use crate::support::common::{CallCounter, moto_config};

async fn client() -> (aws_sdk_secretsmanager::Client, CallCounter) {
    let conf = moto_config().await;
    let counter = CallCounter::default();
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&conf)
            .interceptor(counter.clone())
            .build(),
    );
    (client, counter)
}

#[tokio::test]
async fn the_secret_is_fetched_once_and_cached() {
    let (client, counter) = client().await;
    let id = format!("crmsync/test/{}", uuid::Uuid::new_v4().simple());
    let value = serde_json::json!({
        "database_url": "postgres://app:pw@db:5432/app",
        "jwt_secret": "a-jwt-secret-that-is-long-enough-0123",
        "encryption_key": "0f".repeat(32),
        "webhook_secret": "whsec_dGVzdA==",
        "followupboss_system": "crmsync",
    });
    client
        .create_secret()
        .name(&id)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
    let calls_before = counter.get();

    let provider = SecretsProvider::new(client, &id);
    let (a, b) = tokio::join!(provider.get(), provider.get());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.database_url, "postgres://app:pw@db:5432/app");
    assert_eq!(b.crm.followupboss.system, "crmsync");
    assert_eq!(a.encryption_key_previous, None);
    for _ in 0..5 {
        provider.get().await.unwrap();
    }
    assert_eq!(
        counter.get() - calls_before,
        1,
        "one GetSecretValue per cold start"
    );
}

#[tokio::test]
async fn a_missing_or_malformed_secret_is_a_clear_error_and_is_retried() {
    let (client, counter) = client().await;
    let id = format!("crmsync/missing/{}", uuid::Uuid::new_v4().simple());
    let provider = SecretsProvider::new(client.clone(), &id);
    let err = provider.get().await.unwrap_err();
    assert!(
        matches!(err, ConfigError::SecretUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ResourceNotFound"), "{err}");
    let calls = counter.get();
    let _ = provider.get().await;
    assert_eq!(counter.get(), calls + 1, "a failure is not cached");

    let bad = format!("crmsync/bad/{}", uuid::Uuid::new_v4().simple());
    client
        .create_secret()
        .name(&bad)
        .secret_string(r#"{"database_url":"x","jwt_secret":"short","encryption_key":"zz"}"#)
        .send()
        .await
        .unwrap();
    let err = SecretsProvider::new(client, &bad).get().await.unwrap_err();
    assert!(matches!(err, ConfigError::SecretMalformed { .. }), "{err}");
    assert!(
        !err.to_string().contains("short"),
        "values are never echoed: {err}"
    );
}
