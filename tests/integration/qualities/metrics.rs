//! The metric lines a sync prints: a real sync in a process of its own (`crmsync-sync-once`, the
//! `contacts-sync` handler with the recorder a function installs), its stdout read line by line and
//! each metric document checked against CloudWatch's Embedded Metric Format specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>),
//! then against what the sync answered.

use std::collections::BTreeMap;

use crmsync_domain::Provider;
use serde_json::Value;
use uuid::Uuid;

use super::crash::spawn_sync;
use crate::support::env::{Env, sandbox_provider};

/// The units the specification allows.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one document against the specification; returns its metrics as (namespace, name, unit,
/// dimensions, values).
fn check_emf(doc: &Value) -> Result<Vec<Extracted>, String> {
    let root = doc.as_object().ok_or("the root is not an object")?;
    let aws = root["_aws"].as_object().ok_or("_aws is not an object")?;
    // _aws: Timestamp (milliseconds since the epoch) and CloudWatchMetrics, both required.
    let ts = aws
        .get("Timestamp")
        .and_then(Value::as_u64)
        .ok_or("_aws.Timestamp is not a non-negative integer")?;
    let now = chrono::Utc::now().timestamp_millis() as u64;
    if ts + 3_600_000 < now || ts > now + 60_000 {
        return Err(format!("_aws.Timestamp {ts} is not now in milliseconds"));
    }
    for key in aws.keys() {
        if ![
            "Timestamp",
            "CloudWatchMetrics",
            "LogGroupName",
            "LogStreamName",
        ]
        .contains(&key.as_str())
        {
            return Err(format!(
                "_aws has a member the specification does not define: {key}"
            ));
        }
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics is not an array")?;
    let mut out = Vec::new();
    for d in directives {
        let d = d.as_object().ok_or("a MetricDirective is not an object")?;
        let ns = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or("Namespace is missing")?;
        if ns.is_empty() || ns.len() > 1024 {
            return Err(format!("Namespace {ns:?} is not 1 to 1024 characters"));
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("Dimensions is not an array")?;
        let mut dims = BTreeMap::new();
        for set in sets {
            let set = set.as_array().ok_or("a DimensionSet is not an array")?;
            if set.len() > 30 {
                return Err("a DimensionSet has more than 30 dimensions".into());
            }
            for key in set {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                // Each dimension refers to a member of the root whose value is a string.
                let value = root
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or(format!("dimension {key} has no string member at the root"))?;
                if value.is_empty() || value.len() > 1024 {
                    return Err(format!(
                        "dimension {key}'s value is not 1 to 1024 characters"
                    ));
                }
                dims.insert(key.to_owned(), value.to_owned());
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("Metrics is not an array")?;
        if metrics.len() > 100 {
            return Err("a MetricDirective has more than 100 metrics".into());
        }
        for m in metrics {
            let m = m.as_object().ok_or("a MetricDefinition is not an object")?;
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or("Name is missing")?;
            if name.is_empty() || name.len() > 1024 {
                return Err(format!("Name {name:?} is not 1 to 1024 characters"));
            }
            let unit = match m.get("Unit") {
                None => None,
                Some(u) => {
                    let u = u.as_str().ok_or("Unit is not a string")?;
                    if !UNITS.contains(&u) {
                        return Err(format!("Unit {u} is not one the specification allows"));
                    }
                    Some(u.to_owned())
                }
            };
            if let Some(r) = m.get("StorageResolution")
                && r != 1
                && r != 60
            {
                return Err(format!("StorageResolution {r} is not 1 or 60"));
            }
            // The value: a number, or an array of at most 100 numbers, at the root.
            let values = match root.get(name) {
                Some(Value::Number(n)) => vec![n.as_f64().unwrap()],
                Some(Value::Array(a)) if a.len() <= 100 && a.iter().all(Value::is_number) => {
                    a.iter().map(|v| v.as_f64().unwrap()).collect()
                }
                other => {
                    return Err(format!(
                        "metric {name} has no number (or array of up to 100) at the root: {other:?}"
                    ));
                }
            };
            out.push(Extracted {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                unit,
                dims: dims.clone(),
                values,
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Extracted {
    namespace: String,
    name: String,
    unit: Option<String>,
    dims: BTreeMap<String, String>,
    values: Vec<f64>,
}

/// The specification checks catch what they should (a test that cannot fail proves nothing).
#[test]
fn the_emf_check_refuses_documents_the_specification_refuses() {
    let ok = serde_json::json!({"_aws": {"Timestamp": chrono::Utc::now().timestamp_millis(),
        "CloudWatchMetrics": [{"Namespace": "crmsync", "Dimensions": [["Provider"]],
        "Metrics": [{"Name": "ContactsFetched", "Unit": "Count"}]}]}, "Provider": "rex", "ContactsFetched": 3});
    assert_eq!(check_emf(&ok).unwrap().len(), 1);
    for (path, bad) in [
        ("/_aws/Timestamp", Value::String("now".into())),
        (
            "/_aws/CloudWatchMetrics/0/Metrics/0/Unit",
            Value::String("Contacts".into()),
        ),
        ("/Provider", serde_json::json!(7)),
        ("/ContactsFetched", Value::String("3".into())),
        (
            "/_aws/CloudWatchMetrics/0/Namespace",
            Value::String(String::new()),
        ),
    ] {
        let mut doc = ok.clone();
        *doc.pointer_mut(path).unwrap() = bad;
        assert!(check_emf(&doc).is_err(), "{path} accepted");
    }
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("ContactsFetched");
    assert!(check_emf(&missing).is_err());
}

/// A Follow Up Boss sync of 120 people in its own process: its metric lines follow the specification,
/// sit in the namespace `crmsync` with the dimension `Provider`, and say what the sync answered.
#[tokio::test]
async fn a_sync_prints_metrics_in_embedded_metric_format() {
    let env = Env::start().await;
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 91, 120);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let moto = crmsync_testkit::moto().await.endpoint();
    let out = spawn_sync(&env, &moto, user, provider)
        .wait_with_output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let answer: Value = serde_json::from_str(lines.pop().expect("an answer")).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    let mut metrics = Vec::new();
    for line in &lines {
        let doc: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if doc.get("_aws").is_some() {
            metrics.extend(check_emf(&doc).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    let find = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let body = &answer["body"];
    for (name, field) in [
        ("ContactsFetched", "totalFetched"),
        ("ContactsUpserted", "upserted"),
    ] {
        let m = find(name);
        assert_eq!(m.namespace, "crmsync");
        assert_eq!(m.unit.as_deref(), Some("Count"));
        assert_eq!(
            m.dims.get("Provider").map(String::as_str),
            Some("followupboss")
        );
        assert_eq!(m.values, vec![body[field].as_f64().unwrap()], "{name}");
    }
    assert_eq!(find("ContactsFetched").values, vec![120.0]);
    let duration = find("SyncDuration");
    assert_eq!(duration.unit.as_deref(), Some("Milliseconds"));
    assert_eq!(duration.values, vec![body["durationMs"].as_f64().unwrap()]);
}
