//! Reading the CRMs' webhook deliveries, as crm-apis §1.6, §2.5 and §3.6 describe them: what changed,
//! and which deliveries are refused (forged, for another account, not a delivery).

use base64::Engine as _;
use crmsync_crm::webhook::{Change, Hint, Refused};
use crmsync_crm::{Common, CrmConfig, CrmSecrets, CrmSettings, kind};
use crmsync_domain::Provider;
use hmac::{KeyInit as _, Mac as _};
use serde_json::json;

const SYSTEM_KEY: &str = "system-key-abc";

fn config(system_key: &str) -> CrmConfig {
    let common = Common {
        base_url: "https://dash.example.com".into(),
        sandbox_url: None,
        default_sandbox_url: "http://127.0.0.1:8787".into(),
    };
    let settings = CrmSettings::from_lookup(&|_| None, &common).unwrap();
    let secrets: CrmSecrets = serde_json::from_value(json!({
        "followupboss_system": "crmsync",
        "followupboss_system_key": system_key,
    }))
    .unwrap();
    CrmConfig::new(settings, secrets)
}

/// FUB's signature, computed here independently of the crate: hex HMAC-SHA256(system key, base64(body)).
fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(
        base64::engine::general_purpose::STANDARD
            .encode(body)
            .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

fn read(
    provider: Provider,
    cfg: &CrmConfig,
    signature: Option<&str>,
    body: &[u8],
    account: Option<&str>,
) -> Result<Hint, Refused> {
    let mut headers = http::HeaderMap::new();
    if let Some(s) = signature {
        headers.insert("fub-signature", s.parse().unwrap());
    }
    kind(provider).read_webhook(cfg, &headers, body, account)
}

fn records(changed: &[&str], deleted: &[&str]) -> Change {
    Change::Records {
        changed: changed.iter().map(|s| s.to_string()).collect(),
        deleted: deleted.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn fub_deliveries_are_checked_against_the_system_key_and_name_the_people() {
    let cfg = config(SYSTEM_KEY);
    let body = serde_json::to_vec(&json!({
        "eventId": "0b6c4b6e-1f0a-4e0f-9d55-1c2e3f4a5b6c", "eventCreated": "2026-12-01T10:00:00Z",
        "event": "peopleUpdated", "resourceIds": [101, 102, 101],
        "uri": "https://api.followupboss.com/v1/people?id=101,102"}))
    .unwrap();
    let hint = read(
        Provider::FollowUpBoss,
        &cfg,
        Some(&sign(SYSTEM_KEY, &body)),
        &body,
        None,
    )
    .unwrap();
    assert_eq!(
        hint.receipt.as_deref(),
        Some("0b6c4b6e-1f0a-4e0f-9d55-1c2e3f4a5b6c")
    );
    assert_eq!(hint.change, records(&["101", "102"], &[]));
    // Upper-case hex is the same signature.
    let upper = sign(SYSTEM_KEY, &body).to_ascii_uppercase();
    assert!(read(Provider::FollowUpBoss, &cfg, Some(&upper), &body, None).is_ok());

    // Forged: no signature, another key's, or the body changed after signing.
    assert_eq!(
        read(Provider::FollowUpBoss, &cfg, None, &body, None),
        Err(Refused::BadSignature)
    );
    let other = sign("another-key", &body);
    assert_eq!(
        read(Provider::FollowUpBoss, &cfg, Some(&other), &body, None),
        Err(Refused::BadSignature)
    );
    let mut changed = body.clone();
    changed.extend_from_slice(b" ");
    assert_eq!(
        read(
            Provider::FollowUpBoss,
            &cfg,
            Some(&sign(SYSTEM_KEY, &body)),
            &changed,
            None
        ),
        Err(Refused::BadSignature)
    );
    // Without a system key there is nothing to check against.
    assert!(read(Provider::FollowUpBoss, &config(""), None, &body, None).is_ok());
}

#[test]
fn fub_events_say_what_to_read_back_and_what_is_gone() {
    let cfg = config("");
    let hint = |v: serde_json::Value| {
        read(
            Provider::FollowUpBoss,
            &cfg,
            None,
            &serde_json::to_vec(&v).unwrap(),
            None,
        )
    };
    assert_eq!(
        hint(json!({"event": "peopleDeleted", "resourceIds": ["7"]}))
            .unwrap()
            .change,
        records(&[], &["7"])
    );
    assert_eq!(
        hint(json!({"event": "peopleStageUpdated", "resourceIds": [7]}))
            .unwrap()
            .change,
        records(&["7"], &[])
    );
    // The ids from `uri` when `resourceIds` is absent.
    assert_eq!(
        hint(json!({"event": "peopleCreated", "uri": "https://api.followupboss.com/v1/people?id=8,9"}))
            .unwrap()
            .change,
        records(&["8", "9"], &[])
    );
    assert_eq!(
        hint(json!({"event": "notesCreated", "resourceIds": [1]}))
            .unwrap()
            .change,
        Change::Nothing
    );
    assert!(matches!(
        hint(json!({"resourceIds": [1]})),
        Err(Refused::Malformed(_))
    ));
    assert!(matches!(
        read(Provider::FollowUpBoss, &cfg, None, b"not json", None),
        Err(Refused::Malformed(_))
    ));
}

#[test]
fn lofty_lead_info_means_the_account_changed() {
    let cfg = config("");
    let body = br#"{"teamId": 13233324, "listId": 2}"#;
    // The integration's account is Lofty's user, not the team: not compared.
    let hint = read(Provider::Lofty, &cfg, None, body, Some("1000001")).unwrap();
    assert_eq!(
        hint,
        Hint {
            receipt: None,
            change: Change::Account
        }
    );
    assert_eq!(
        read(Provider::Lofty, &cfg, None, body, None)
            .unwrap()
            .change,
        Change::Account
    );
    assert_eq!(
        read(
            Provider::Lofty,
            &cfg,
            None,
            br#"{"teamId": 13233324, "listId": 5}"#,
            None
        )
        .unwrap()
        .change,
        Change::Nothing
    );
    for bad in [&br#"{"teamId": 1}"#[..], br#"{"listId": 2}"#] {
        assert!(matches!(
            read(Provider::Lofty, &cfg, None, bad, None),
            Err(Refused::Malformed(_))
        ));
    }
}

#[test]
fn rex_events_name_the_contacts_and_a_repeated_delivery_has_the_same_receipt() {
    let cfg = config("");
    let event = |id: &str, kind: &str, record: u64, account: u64| {
        json!({"id": id, "type": kind, "created_at": "2026-12-01T10:00:00Z",
            "payload": {"format": "v1_full_change_detail",
                "context": {"account_id": account, "service": "Contacts", "record_id": record,
                            "triggered_by_user": {"id": "1"}},
                "data": {"pre": null, "post": {"id": record}, "changes": {}}}})
    };
    let body = serde_json::to_vec(&json!({"data": [
        event("e-1", "contacts.created", 36685959, 3487),
        event("e-2", "contacts.updated", 36685960, 3487),
        event("e-3", "contacts.updated", 36685959, 3487),
        event("e-4", "listings.updated", 5, 3487),
    ]}))
    .unwrap();
    let hint = read(Provider::Rex, &cfg, None, &body, Some("3487")).unwrap();
    assert_eq!(hint.change, records(&["36685959", "36685960"], &[]));
    let again = read(Provider::Rex, &cfg, None, &body, Some("3487")).unwrap();
    assert_eq!(hint.receipt, again.receipt);
    assert!(hint.receipt.is_some());
    let other =
        serde_json::to_vec(&json!({"data": [event("e-9", "contacts.updated", 1, 3487)]})).unwrap();
    assert_ne!(
        read(Provider::Rex, &cfg, None, &other, None)
            .unwrap()
            .receipt,
        hint.receipt
    );
    assert_eq!(
        read(Provider::Rex, &cfg, None, &body, Some("1000")),
        Err(Refused::OtherAccount)
    );
    assert!(matches!(
        read(Provider::Rex, &cfg, None, b"{}", None),
        Err(Refused::Malformed(_))
    ));
}
