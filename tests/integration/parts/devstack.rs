//! The local stack stays up: `crmsync-dev dev` (what `make dev` runs) started on ports of its own with
//! `cargo lambda watch`'s timeout at 4 s, called, left idle well past that timeout twice, and called
//! again each time. Before the fix a function process panicked inside lambda_runtime when idle for the
//! timeout (`missing lambda-runtime-aws-request-id header`) and every later request to it hung.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WATCH_TIMEOUT_S: u64 = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct DevStack(Child);

impl Drop for DevStack {
    fn drop(&mut self) {
        // As Ctrl-C: the stack stops what it started.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str, jwt: &str) -> Result<reqwest::StatusCode, String> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(jwt)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| format!("{url}: {e}"))
}

#[tokio::test]
async fn make_dev_answers_after_idling_past_the_watch_timeout() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("crmsync-devstack-{}", uuid::Uuid::new_v4()));
    let api = free_port();
    let pg_bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin"));
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(bin) = pg_bin {
        path = format!("{path}:{}", bin.display());
    }
    // Built first, then run itself (not under `cargo run`, which would not pass Ctrl-C on to it).
    let built = Command::new(env!("CARGO"))
        .args(["build", "--locked", "-q", "-p", "crmsync-devstack"])
        .current_dir(&root)
        .status()
        .expect("cargo builds crmsync-dev");
    assert!(built.success());
    // This test binary is <target>/debug/deps/integration-…; crmsync-dev is <target>/debug/crmsync-dev.
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("crmsync-dev");
    let mut child = Command::new(&binary)
        .arg("dev")
        .current_dir(&root)
        .env("PATH", path)
        .env("DEV_DIR", &dir)
        .env("DEV_PG_PORT", free_port().to_string())
        .env("DEV_MOTO_PORT", free_port().to_string())
        .env("DEV_SANDBOX_PORT", free_port().to_string())
        .env("DEV_API_PORT", api.to_string())
        .env("DEV_WATCH_TIMEOUT", WATCH_TIMEOUT_S.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("crmsync-dev starts");
    let stdout = child.stdout.take().unwrap();
    let stack = DevStack(child);
    // The banner ends with a curl line that carries the dev JWT. The stack's output is read to its end
    // (a closed pipe would make its goodbye lines fail).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if let Some(rest) = line.split("Authorization: Bearer ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(rest.split('\'').next().unwrap_or_default().to_owned()));
            }
            printed.push(line);
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(printed.join("\n")));
        }
    });
    let jwt = tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|printed| panic!("crmsync-dev stopped before it was ready:\n{printed}"));
    let url = format!("http://127.0.0.1:{api}/api/integrations");

    // The first calls may time out while cargo lambda watch builds and starts the function.
    let warm_until = Instant::now() + Duration::from_secs(600);
    loop {
        let status = get(&url, &jwt).await;
        if status == Ok(reqwest::StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < warm_until,
            "the first call never succeeded: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for round in 1..=2 {
        tokio::time::sleep(Duration::from_secs(WATCH_TIMEOUT_S * 3)).await;
        let started = Instant::now();
        assert_eq!(
            get(&url, &jwt).await,
            Ok(reqwest::StatusCode::OK),
            "after idle period {round}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "after idle period {round} the answer took {:?}",
            started.elapsed()
        );
    }
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}
