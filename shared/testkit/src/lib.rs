//! Test harness of crmsync: real servers for tests, started once per test process.
//!
//! * [`postgres`] starts a throwaway PostgreSQL cluster (through the `postgres` OS user when the tests run
//!   as root, since `initdb` refuses root) and hands out one fresh database per test.
//! * [`moto`] starts a `moto_server` that emulates DynamoDB and Secrets Manager.
//! * [`pgbouncer`] starts PgBouncer in transaction pooling mode in front of that cluster; with
//!   `CRMSYNC_TEST_POOLER=pgbouncer`, every [`PgCluster::fresh_database`] URL goes through it.
//! * [`start_tls_postgres`] starts a cluster of its own that serves TLS with a given certificate.
//!
//! Both listen on free loopback ports. A watchdog process stops them and removes their files when the
//! test process exits, however it exits (even `SIGKILL`). A test that needs a server that cannot be
//! started panics with a sentence that says what to install.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

const INSTALL_POSTGRES: &str = "PostgreSQL server binaries (initdb, pg_ctl) are needed by this test: \
     install them with `apt-get install -y postgresql`, or run `make test`, which does";
const INSTALL_MOTO: &str = "moto_server is needed by this test: install it with \
     `pip install 'moto[server]'`, or run `make test`, which does";

/// A PostgreSQL cluster that lives as long as the test process.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
}

/// A database of its own for one test, with migrations not yet applied.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// A `postgres://` URL for the cluster's superuser, connected to this database (through PgBouncer
    /// when `CRMSYNC_TEST_POOLER=pgbouncer`).
    pub url: String,
    /// The same, always straight to Postgres: for migrations, which need a session.
    pub direct_url: String,
}

impl PgCluster {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The server's data directory (it also holds the Unix socket and `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty database with a unique name.
    pub async fn fresh_database(&self) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let client = connect(&self.url("postgres")).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        let url = if pooled_suite() {
            pgbouncer().await.url(&name)
        } else {
            self.url(&name)
        };
        TestDb {
            url,
            direct_url: self.url(&name),
            name,
        }
    }
}

/// Whether `CRMSYNC_TEST_POOLER=pgbouncer` asks for the suite to run through PgBouncer.
pub fn pooled_suite() -> bool {
    match std::env::var("CRMSYNC_TEST_POOLER").ok().as_deref() {
        None | Some("") | Some("none") => false,
        Some("pgbouncer") => true,
        Some(other) => {
            panic!("CRMSYNC_TEST_POOLER is `{other}`: use `pgbouncer` or leave it unset")
        }
    }
}

/// Connects with no TLS (the cluster is local) and drives the connection in the background. A URL of
/// [`pgbouncer`] is taken straight to Postgres: tests' own SQL is not what runs through the pooler.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let direct = match PGBOUNCER.get() {
        Some(b) => b.direct(url),
        None => url.to_owned(),
    };
    let (client, connection) = tokio_postgres::connect(&direct, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test Postgres at {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

static POSTGRES: OnceCell<PgCluster> = OnceCell::const_new();

/// The process-wide PostgreSQL cluster, started on first use.
pub async fn postgres() -> &'static PgCluster {
    POSTGRES
        .get_or_init(|| async {
            tokio::task::spawn_blocking(start_postgres)
                .await
                .unwrap_or_else(|e| panic!("starting Postgres panicked: {e}"))
        })
        .await
}

/// A `moto_server` that lives as long as the test process.
#[derive(Debug)]
pub struct Moto {
    port: u16,
}

impl Moto {
    /// The endpoint to give the AWS SDK (`endpoint_url`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

static MOTO: OnceCell<Moto> = OnceCell::const_new();

/// The process-wide moto server, started on first use.
pub async fn moto() -> &'static Moto {
    MOTO.get_or_init(|| async {
        tokio::task::spawn_blocking(start_moto)
            .await
            .unwrap_or_else(|e| panic!("starting moto panicked: {e}"))
    })
    .await
}

/// A free TCP port on 127.0.0.1 (the OS picks it; the listener is closed before returning).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Waits until something listens on 127.0.0.1:`port`; `false` after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds a Postgres server binary: on PATH, or in Debian's versioned directory.
fn pg_binary(name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// Runs a Postgres tool, as the `postgres` OS user when we are root.
fn pg_command(root: bool, binary: &Path) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(binary);
        cmd
    } else {
        Command::new(binary)
    }
}

/// A Postgres server started from a data directory (see [`start_postgres_at`]).
#[derive(Debug)]
pub struct PgServer {
    pub port: u16,
    data: PathBuf,
    socket_dir: PathBuf,
    pg_ctl: PathBuf,
    root: bool,
}

impl PgServer {
    /// The superuser URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&self) {
        let _ = pg_command(self.root, &self.pg_ctl)
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The directory of the server's Unix socket and `server.log`.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }
}

/// Starts a Postgres server on `port` with its cluster in `dir/data` (made by `initdb` the first
/// time; superuser `postgres`, trust auth, loopback only). Works as root through the `postgres` OS
/// user. `durable: false` turns fsync off (tests). Errors are sentences that say what to do.
pub fn start_postgres_at(dir: &Path, port: u16, durable: bool) -> Result<PgServer, String> {
    start_postgres_with(dir, port, durable, "")
}

/// As [`start_postgres_at`], with more server options (`-c name=value ...`).
pub fn start_postgres_with(
    dir: &Path,
    port: u16,
    durable: bool,
    extra: &str,
) -> Result<PgServer, String> {
    let initdb = pg_binary("initdb").ok_or(INSTALL_POSTGRES)?;
    let pg_ctl = pg_binary("pg_ctl").ok_or(INSTALL_POSTGRES)?;
    let root = is_root();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status();
        if !matches!(chown, Ok(s) if s.success()) {
            return Err(format!(
                "cannot hand {} to the `postgres` OS user (initdb refuses to run as root); {INSTALL_POSTGRES}",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    if !data.join("PG_VERSION").is_file() {
        let out = pg_command(root, &initdb)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}; {INSTALL_POSTGRES}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let fast = if durable {
        ""
    } else {
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB{fast} {extra}",
        dir.display()
    );
    let status = pg_command(root, &pg_ctl)
        .args(["-w", "-t", "30", "-D"])
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(dir.join("server.log"))
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run pg_ctl: {e}; {INSTALL_POSTGRES}"))?;
    if !status.success() || !wait_for_port(port, Duration::from_secs(10)) {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(format!(
            "Postgres did not start on port {port}; the end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(PgServer {
        port,
        data,
        socket_dir: dir.to_owned(),
        pg_ctl,
        root,
    })
}

fn start_postgres() -> PgCluster {
    let dir = std::env::temp_dir().join(format!(
        "crmsync-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    // A port can be taken between choosing and binding: try a few.
    let mut last_error = String::new();
    for _ in 0..5 {
        match start_postgres_at(&dir, free_port(), false) {
            Ok(server) => {
                stop_at_exit(&server, &dir);
                return PgCluster {
                    port: server.port,
                    dir,
                };
            }
            Err(e) => last_error = e,
        }
    }
    panic!("{last_error}");
}

/// Stops `server` and removes `dir` when this process exits.
fn stop_at_exit(server: &PgServer, dir: &Path) {
    let stop = format!(
        "{} -D '{}' stop -m immediate >/dev/null 2>&1",
        server.pg_ctl.display(),
        server.data.display()
    );
    let stop = if server.root {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    };
    watchdog(&format!("{stop}; rm -rf '{}'", dir.display()));
}

/// Starts a Postgres cluster of its own (for the life of the process) that serves TLS with this
/// certificate chain and key (PEM), on 127.0.0.1 and a free port: `ssl=on`, plain connections still
/// allowed, trust authentication.
pub fn start_tls_postgres(cert_chain_pem: &str, key_pem: &str) -> Result<PgServer, String> {
    let dir = std::env::temp_dir().join(format!(
        "crmsync-pg-tls-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, cert_chain_pem)
        .map_err(|e| format!("cannot write the certificate: {e}"))?;
    std::fs::write(&key, key_pem).map_err(|e| format!("cannot write the key: {e}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Postgres refuses a key that others can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict the key: {e}"))?;
    }
    let extra = format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    );
    let mut last_error = String::new();
    for _ in 0..5 {
        match start_postgres_with(&dir, free_port(), false, &extra) {
            Ok(server) => {
                stop_at_exit(&server, &dir);
                return Ok(server);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

const INSTALL_PGBOUNCER: &str = "pgbouncer is needed by this test: install it with \
     `apt-get install -y pgbouncer`, or run `make test`, which does";

/// PgBouncer in transaction pooling mode in front of the process's [`postgres`] cluster.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    pg_port: u16,
}

impl PgBouncer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser URL of database `db` through PgBouncer (`pgbouncer=true` tells the store).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable&pgbouncer=true",
            self.port
        )
    }

    /// `url` with PgBouncer's address replaced by Postgres's own.
    pub fn direct(&self, url: &str) -> String {
        url.replace(
            &format!("@127.0.0.1:{}/", self.port),
            &format!("@127.0.0.1:{}/", self.pg_port),
        )
        .replace("&pgbouncer=true", "")
    }
}

/// Server connections PgBouncer keeps per database: fewer than the tests' clients (8), so that their
/// transactions take turns on shared server connections, as behind Supabase's pooler or RDS Proxy;
/// more than the scheduled run's 4 pulls, each of which holds one for its sync lease while it runs
/// (with 3, the writes of 3 pulls at once wait for ever: see the README's "Database connections").
pub const PGBOUNCER_POOL_SIZE: usize = 6;

static PGBOUNCER: OnceCell<PgBouncer> = OnceCell::const_new();

/// The process-wide PgBouncer (transaction pooling, [`PGBOUNCER_POOL_SIZE`] server connections per
/// database, any database of the cluster, any role), started on first use.
pub async fn pgbouncer() -> &'static PgBouncer {
    let pg_port = postgres().await.port();
    PGBOUNCER
        .get_or_init(|| async move {
            tokio::task::spawn_blocking(move || start_pgbouncer(pg_port))
                .await
                .unwrap_or_else(|e| panic!("starting PgBouncer panicked: {e}"))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await
}

fn pgbouncer_binary() -> Option<PathBuf> {
    let on_path = std::env::var("PATH").ok().and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

fn start_pgbouncer(pg_port: u16) -> Result<PgBouncer, String> {
    let binary = pgbouncer_binary().ok_or(INSTALL_PGBOUNCER)?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!(
        "crmsync-pgbouncer-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n")
        .map_err(|e| format!("cannot write PgBouncer's auth file: {e}"))?;
    if root {
        // PgBouncer refuses to run as root.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
    }
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        // Any role the cluster knows (looked up by `auth_query` as `postgres`), trust authentication.
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\nauth_user = postgres\n\
             pool_mode = transaction\ndefault_pool_size = {PGBOUNCER_POOL_SIZE}\n\
             max_client_conn = 2000\nquery_wait_timeout = 60\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.display()
        );
        let config = dir.join("pgbouncer.ini");
        std::fs::write(&config, ini).map_err(|e| format!("cannot write pgbouncer.ini: {e}"))?;
        let mut cmd = if root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&binary);
            cmd
        } else {
            Command::new(&binary)
        };
        let mut child = cmd
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run pgbouncer: {e}; {INSTALL_PGBOUNCER}"))?;
        // runuser passes signals on to PgBouncer.
        watchdog(&format!(
            "kill {} 2>/dev/null; sleep 1; rm -rf '{}'",
            child.id(),
            dir.display()
        ));
        if wait_for_port(port, Duration::from_secs(10)) {
            std::mem::forget(child);
            return Ok(PgBouncer { port, pg_port });
        }
        let _ = child.kill();
        let _ = child.wait();
        last_error = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
    }
    Err(format!("PgBouncer did not start; its log:\n{last_error}"))
}

/// Runs moto serving one request at a time. moto's DynamoDB checks a `ConditionExpression` and then
/// writes without a lock, so under `moto_server`'s threaded server two concurrent conditional writes
/// can both pass (and concurrent `ADD`s can be lost); DynamoDB itself is atomic per item. Serving
/// requests one after the other gives the emulator the same atomicity. (HTTP/1.0: one request per
/// connection, so no client holds the server.)
const MOTO_LAUNCHER: &str = r#"
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False)
"#;

/// The command that starts moto on `host:port`, serving one request at a time (see above).
pub fn moto_command(host: &str, port: u16) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", MOTO_LAUNCHER, host, &port.to_string()]);
    cmd
}

fn start_moto() -> Moto {
    for _ in 0..5 {
        let port = free_port();
        let child = moto_command("127.0.0.1", port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot run python3 ({e}); {INSTALL_MOTO}"),
        };
        watchdog(&format!("kill {} 2>/dev/null", child.id()));
        if wait_for_port(port, Duration::from_secs(30)) {
            // The watchdog owns the child from here on.
            std::mem::forget(child);
            return Moto { port };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("moto did not start listening (is it installed for python3?); {INSTALL_MOTO}");
}

/// Runs `cleanup` (a shell command) once this process has exited. The watchdog is its own process group,
/// so a Ctrl-C to the test run does not take it down before it has cleaned up.
fn watchdog(cleanup: &str) {
    use std::os::unix::process::CommandExt;
    static SPAWN_LOCK: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _guard = SPAWN_LOCK.get_or_init(Default::default).lock();
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        pid = std::process::id()
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        panic!("cannot start the clean-up watchdog (sh): {e}");
    }
}
