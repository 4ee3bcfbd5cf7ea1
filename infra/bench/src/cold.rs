//! Cold start: from process start until the function asks the Runtime API for its first event.
//!
//! A local fake of the Lambda Runtime API records the instant the first
//! `GET /2018-06-01/runtime/invocation/next` arrives and never answers it (the connection is held, so
//! the runtime does not retry); the process is then killed. Binaries are started one at a time, in
//! rounds (every binary once per round, so that noise spreads over all of them), with the environment
//! Lambda gives a function.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::Error;

const NEXT: &str = "GET /2018-06-01/runtime/invocation/next ";

/// The fake Runtime API: sends the arrival time of every `next` request.
async fn serve(listener: TcpListener, arrivals: mpsc::UnboundedSender<Instant>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let mut reported = false;
            // Reads until the client goes away (it is killed); nothing is ever answered.
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if !reported {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= NEXT.len() {
                        if buf.starts_with(NEXT.as_bytes()) {
                            let _ = arrivals.send(Instant::now());
                        }
                        reported = true;
                    }
                }
            }
        });
    }
}

/// The cold starts of one binary.
#[derive(Debug, Clone)]
pub struct ColdStarts {
    pub name: String,
    pub samples: Vec<Duration>,
}

/// The environment Lambda gives a function (with dummy keys), plus what crmsync's functions read.
pub fn lambda_env(name: &str, runtime_api: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", name),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/21/[$LATEST]bench"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK"),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret-access-key"),
        ("AWS_SESSION_TOKEN", "bench-session-token"),
        ("APP_SECRET_ID", "crmsync/app"),
        ("RATE_LIMIT_TABLE", "crmsync-rate-limits"),
        ("NEXT_PUBLIC_BASE_URL", "https://dashboard.example.com"),
        ("RUST_LOG", "info"),
        ("TZ", ":UTC"),
        ("LANG", "en_US.UTF-8"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Starts each binary `rounds` times (after `warmup` rounds that are not kept).
pub async fn measure(
    binaries: &[(String, PathBuf)],
    warmup: usize,
    rounds: usize,
) -> Result<Vec<ColdStarts>, Error> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let api = listener.local_addr()?.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve(listener, tx));
    let mut results: Vec<ColdStarts> = binaries
        .iter()
        .map(|(name, _)| ColdStarts {
            name: name.clone(),
            samples: Vec::new(),
        })
        .collect();
    for round in 0..warmup + rounds {
        for (i, (name, path)) in binaries.iter().enumerate() {
            while rx.try_recv().is_ok() {}
            let env = lambda_env(name, &api);
            let started = Instant::now();
            let mut child = Command::new(path)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
            let arrived = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
            let _ = child.kill();
            let _ = child.wait();
            let at = match arrived {
                Ok(Some(at)) => at,
                _ => {
                    server.abort();
                    return Err(format!(
                        "{name} did not ask the Runtime API for an event within 20 s"
                    )
                    .into());
                }
            };
            if round >= warmup {
                results[i]
                    .samples
                    .push(at.saturating_duration_since(started));
            }
        }
    }
    server.abort();
    Ok(results)
}
