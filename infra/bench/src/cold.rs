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

/// What a function's first event costs beyond a warm one: per round, the CPU time (user and system,
/// of every thread, from `/proc/<pid>/task/*/schedstat`) from each `next` poll to the following one,
/// and the wall time from handing out each event to its response.
#[derive(Debug, Clone, Default)]
pub struct FirstEvents {
    pub name: String,
    /// What was sent (an event file, or a literal event).
    pub event: String,
    pub first_cpu_ms: Vec<f64>,
    pub second_cpu_ms: Vec<f64>,
    pub first_wall_ms: Vec<f64>,
    pub second_wall_ms: Vec<f64>,
    /// Events answered with an error (`/invocation/<id>/error`) rather than a response.
    pub errors: u64,
    /// Whether the CPU times came from schedstat (nanoseconds) or only from clock ticks.
    pub precise: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Next,
    Response,
    Error,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    kind: Kind,
    at: Instant,
    cpu: Option<f64>,
}

/// The state the serving fake Runtime API shares with the measuring loop.
struct Shared {
    pid: std::sync::atomic::AtomicU32,
    /// Events to hand out, one per `next`; with none left, a `next` is held unanswered.
    events: std::sync::Mutex<std::collections::VecDeque<String>>,
    name: std::sync::Mutex<String>,
    hits: mpsc::UnboundedSender<Hit>,
}

/// CPU seconds of `pid`, as precisely as this kernel says.
fn cpu_of(pid: u32) -> (Option<f64>, bool) {
    match crate::procstat::precise_cpu_seconds(pid) {
        Some(s) => (Some(s), true),
        None => (crate::procstat::cpu_seconds(pid), false),
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from `buf` and `stream`: its
/// request line, or `None` when the client went away.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + length);
            return head.lines().next().map(str::to_owned);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A fake Runtime API that hands out events: one connection.
async fn serve_events_conn(mut stream: tokio::net::TcpStream, shared: std::sync::Arc<Shared>) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::new();
    while let Some(line) = read_request(&mut stream, &mut buf).await {
        let (cpu, _) = cpu_of(shared.pid.load(Ordering::SeqCst));
        let at = Instant::now();
        if line.starts_with(NEXT) {
            // Taken before the hit is told: once the bench has seen a process's last `next` it kills
            // it and queues the next process's events, which a `next` still on its way here would
            // otherwise take (the next process then waits for an event that never comes).
            let event = shared.events.lock().ok().and_then(|mut e| e.pop_front());
            let _ = shared.hits.send(Hit {
                kind: Kind::Next,
                at,
                cpu,
            });
            let Some(event) = event else {
                // Held: read until the client goes away.
                let mut chunk = [0u8; 1024];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            };
            let name = shared.name.lock().map(|n| n.clone()).unwrap_or_default();
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
                + 60_000;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 lambda-runtime-aws-request-id: {}\r\n\
                 lambda-runtime-deadline-ms: {deadline}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:{name}\r\n\
                 lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1\r\n\
                 content-length: {}\r\n\r\n",
                uuid::Uuid::new_v4(),
                event.len()
            );
            // One write: a second small one would wait for the client's delayed ACK (Nagle).
            let mut answer = head.into_bytes();
            answer.extend_from_slice(event.as_bytes());
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        } else {
            let kind = if line.contains("/error ") {
                Kind::Error
            } else {
                Kind::Response
            };
            let _ = shared.hits.send(Hit { kind, at, cpu });
            let body = "{\"status\":\"OK\"}";
            let answer = format!(
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

async fn serve_events(listener: TcpListener, shared: std::sync::Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_events_conn(stream, shared.clone()));
    }
}

/// One function to give two events: its name, binary, environment and event.
pub struct EventTarget {
    pub name: String,
    pub path: PathBuf,
    pub env: Vec<(String, String)>,
    /// Where the event comes from, for the report.
    pub source: String,
    pub event: String,
}

/// Starts each target `rounds` times (after `warmup` rounds not kept); each time hands it the same
/// event twice and measures both, then kills it at its third `next`.
pub async fn first_events(
    targets: &[EventTarget],
    warmup: usize,
    rounds: usize,
) -> Result<Vec<FirstEvents>, Error> {
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let api = listener.local_addr()?.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = std::sync::Arc::new(Shared {
        pid: std::sync::atomic::AtomicU32::new(0),
        events: std::sync::Mutex::new(Default::default()),
        name: std::sync::Mutex::new(String::new()),
        hits: tx,
    });
    let server = tokio::spawn(serve_events(listener, shared.clone()));
    let mut results: Vec<FirstEvents> = targets
        .iter()
        .map(|t| FirstEvents {
            name: t.name.clone(),
            event: t.source.clone(),
            precise: true,
            ..FirstEvents::default()
        })
        .collect();
    let ms = |a: f64, b: f64| (b - a) * 1000.0;
    for round in 0..warmup + rounds {
        for (i, t) in targets.iter().enumerate() {
            while rx.try_recv().is_ok() {}
            if let Ok(mut e) = shared.events.lock() {
                e.clear();
                e.push_back(t.event.clone());
                e.push_back(t.event.clone());
            }
            if let Ok(mut n) = shared.name.lock() {
                n.clone_from(&t.name);
            }
            let mut env = lambda_env(&t.name, &api);
            env.retain(|(k, _)| !t.env.iter().any(|(k2, _)| k2 == k));
            env.extend(t.env.iter().cloned());
            let mut child = Command::new(&t.path)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", t.path.display()))?;
            shared.pid.store(child.id(), Ordering::SeqCst);
            let mut hits: Vec<Hit> = Vec::new();
            let wanted = [
                Kind::Next,
                Kind::Response,
                Kind::Next,
                Kind::Response,
                Kind::Next,
            ];
            let deadline = Instant::now() + Duration::from_secs(60);
            while hits.len() < wanted.len() {
                match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    Ok(Some(h)) => hits.push(h),
                    _ => break,
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            let kinds: Vec<Kind> = hits
                .iter()
                .map(|h| {
                    if h.kind == Kind::Error {
                        Kind::Response
                    } else {
                        h.kind
                    }
                })
                .collect();
            if kinds != wanted {
                server.abort();
                return Err(format!(
                    "{}: the fake Runtime API saw {:?} instead of next, response, next, response, next",
                    t.name,
                    hits.iter().map(|h| h.kind).collect::<Vec<_>>()
                )
                .into());
            }
            if round < warmup {
                continue;
            }
            let r = &mut results[i];
            r.errors += hits.iter().filter(|h| h.kind == Kind::Error).count() as u64;
            let (_, precise) = cpu_of(std::process::id());
            r.precise &= precise;
            let cpu = |k: usize| hits[k].cpu.unwrap_or(f64::NAN);
            r.first_cpu_ms.push(ms(cpu(0), cpu(2)));
            r.second_cpu_ms.push(ms(cpu(2), cpu(4)));
            let wall = |a: usize, b: usize| hits[b].at.saturating_duration_since(hits[a].at);
            r.first_wall_ms.push(wall(0, 1).as_secs_f64() * 1000.0);
            r.second_wall_ms.push(wall(2, 3).as_secs_f64() * 1000.0);
        }
    }
    server.abort();
    Ok(results)
}
