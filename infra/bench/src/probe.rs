//! What a function does before its first event, timed step by step, each in a fresh process (the
//! caches that matter, such as the system's root certificates, are per process).
//!
//! `crmsync-bench startup-probe --step S` times one step and prints `{"ms": …}`:
//! * `from-env`: `App::from_env()`, all that a function's `main` does before the runtime starts;
//! * `from-env-before`: what `App::from_env()` did before its credentials chain and SDK clients were
//!   made lazy: the SDK configuration with its credentials chain built at once, both SDK clients and
//!   the CRM HTTP client;
//! * `aws-eager`: the SDK configuration with its credentials chain built at once,
//!   `crmsync_aws::sdk::default_config()`;
//! * `sdk-clients`: a Secrets Manager and a DynamoDB client, from a configuration without a chain;
//! * `crm-http`: the CRM HTTP client made at once (`CrmHttp::build_client`: the reqwest client and
//!   its TLS roots), as `App::from_env()` did before it was made on the first CRM call.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use crate::Error;

pub const STEPS: [&str; 5] = [
    "from-env",
    "from-env-before",
    "aws-eager",
    "sdk-clients",
    "crm-http",
];

pub async fn run(args: &HashMap<String, String>) -> Result<(), Error> {
    let step = args.get("step").map_or("from-env", String::as_str);
    let started = Instant::now();
    match step {
        "from-env" => drop(crmsync_lambda::App::from_env().await?),
        "from-env-before" => {
            let settings = crmsync_lambda::config::Settings::from_env()?;
            let aws = crmsync_aws::sdk::default_config().await;
            drop(aws_sdk_secretsmanager::Client::new(&aws));
            drop(aws_sdk_dynamodb::Client::new(&aws));
            crmsync_crm::CrmHttp::new()?.build_client()?;
            drop(settings);
        }
        "aws-eager" => drop(crmsync_aws::sdk::default_config().await),
        "sdk-clients" => {
            let aws = static_aws().await;
            let started = Instant::now();
            drop(aws_sdk_secretsmanager::Client::new(&aws));
            drop(aws_sdk_dynamodb::Client::new(&aws));
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            println!("{}", json!({ "step": step, "ms": ms }));
            return Ok(());
        }
        "crm-http" => crmsync_crm::CrmHttp::new()?.build_client()?,
        other => return Err(format!("unknown step `{other}` (known: {STEPS:?})").into()),
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", json!({ "step": step, "ms": ms }));
    Ok(())
}

/// The SDK configuration with fixed credentials: no credentials chain at all.
async fn static_aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "probe", "probe", None, None, "static",
        ))
        .load()
        .await
}

/// Runs `exe startup-probe --step <step>` `runs` times with `env`; the milliseconds of each.
pub fn measure(
    exe: &Path,
    step: &str,
    env: &[(String, String)],
    runs: usize,
) -> Result<Vec<f64>, Error> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let o = Command::new(exe)
            .args(["startup-probe", "--step", step])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        if !o.status.success() {
            return Err(format!("startup-probe --step {step} failed: {}", o.status).into());
        }
        let v: Value = serde_json::from_slice(&o.stdout)?;
        out.push(v["ms"].as_f64().ok_or("startup-probe printed no time")?);
    }
    Ok(out)
}
