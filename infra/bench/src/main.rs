//! `crmsync-bench`: measures crmsync on this machine and writes `docs/BENCHMARKS.md` (`make bench`).
//!
//! * `crmsync-bench run [options]`: every benchmark, side by side, then the report. Release binaries
//!   are expected next to this one (`$CARGO_TARGET_DIR/release`): every function, `lambda-hello`
//!   and `crm-sandbox`; the arm64 zips in `$CARGO_TARGET_DIR/lambda/`. `make bench` builds them.
//! * `crmsync-bench sync-once …`: one pull sync through the `contacts-sync` handler, in a process of
//!   its own (started by `run`, which reads its peak memory and timing from the line it prints).
//! * `crmsync-bench scale-worker …`: one consumer of the sync queue for the scale benchmark (started
//!   by `run`, as many as the round has workers; see `scale`).
//!
//! Options of `run` (defaults in brackets): `--out FILE` [docs/BENCHMARKS.md], `--command TEXT` (the
//! command recorded in the report) [the command line], `--only pull,memory,cold,push,scale,size` [all],
//! `--contacts N` [100000], `--runs N` [3], `--memory N,N,…` [10000,100000,1000000],
//! `--cold-rounds N` (at least 5) [15], `--leads N` [150], `--push-limit N` [50], `--push-window SECS` [10],
//! `--integrations N` [1000: at 10,000 the local moto, which serves SQS and DynamoDB from one Python
//! process, stopped answering within a minute and the dispatcher's sends failed; see BENCHMARKS.md
//! section 6], `--workers N,N,…` [1,2,4,8], `--changes N` (webhook changes timed)
//! [200], `--account-size N` (records of the one small CRM account every integration reads) [20],
//! `--account-changes N` (records changed in it before each round) [3], `--capped N` (integrations
//! of one more round with the most workers, under one window of 250 requests per 10 s shared by all;
//! 0: none) [1000], `--capped-secs N` (how long that round may take) [300],
//! `--bin-dir DIR` [the directory of this binary].

mod cold;
mod machine;
mod probe;
mod procstat;
mod profile;
mod pull;
mod push;
mod report;
mod scale;
mod size;
mod stack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What `run` measures, and how much.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub out: PathBuf,
    pub command: String,
    /// Where the release binaries are (default: next to this one).
    pub bin_dir: Option<PathBuf>,
    pub only: Vec<String>,
    pub contacts: usize,
    pub runs: usize,
    pub memory: Vec<usize>,
    pub cold_rounds: usize,
    pub cold_warmup: usize,
    pub leads: usize,
    pub push_limit: u32,
    pub push_window: u32,
    pub integrations: usize,
    pub workers: Vec<usize>,
    pub changes: usize,
    pub account_size: usize,
    pub account_changes: usize,
    pub capped: usize,
    pub capped_secs: u64,
}

impl Config {
    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// `--key value` pairs.
fn options(args: &[String]) -> Result<HashMap<String, String>, Error> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let key = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{arg}`"))?;
        let (key, value) = match key.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (
                key.to_owned(),
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("--{key} needs a value"))?,
            ),
        };
        map.insert(key, value);
    }
    Ok(map)
}

fn number<T: std::str::FromStr>(
    opts: &HashMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, Error> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .replace('_', "")
            .parse()
            .map_err(|_| format!("--{key} must be a number, not `{v}`").into()),
    }
}

fn config(args: &[String]) -> Result<Config, Error> {
    let opts = options(args)?;
    let list = |key: &str| -> Vec<String> {
        opts.get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let memory = match opts.get("memory") {
        None => vec![10_000, 100_000, 1_000_000],
        Some(_) => list("memory")
            .iter()
            .map(|s| s.replace('_', "").parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| "--memory takes numbers separated by commas")?,
    };
    let workers = match opts.get("workers") {
        None => vec![1, 2, 4, 8],
        Some(_) => list("workers")
            .iter()
            .map(|s| s.parse::<usize>().map(|n| n.max(1)))
            .collect::<Result<_, _>>()
            .map_err(|_| "--workers takes numbers separated by commas")?,
    };
    let known = ["pull", "memory", "cold", "push", "scale", "size"];
    let only = list("only");
    if let Some(bad) = only.iter().find(|o| !known.contains(&o.as_str())) {
        return Err(format!("--only: unknown benchmark `{bad}` (known: {known:?})").into());
    }
    let out = opts
        .get("out")
        .map_or_else(|| root().join("docs/BENCHMARKS.md"), PathBuf::from);
    let command = opts.get("command").cloned().unwrap_or_else(|| {
        std::iter::once("crmsync-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    Ok(Config {
        out,
        command,
        bin_dir: opts.get("bin-dir").map(PathBuf::from),
        only,
        contacts: number(&opts, "contacts", 100_000)?,
        runs: number(&opts, "runs", 3usize)?.max(1),
        memory,
        // Medians of at least 5 rounds.
        cold_rounds: number(&opts, "cold-rounds", 15usize)?.max(5),
        cold_warmup: 2,
        leads: number(&opts, "leads", 150usize)?.max(1),
        push_limit: number(&opts, "push-limit", 50u32)?.max(2),
        push_window: number(&opts, "push-window", 10u32)?.max(1),
        integrations: number(&opts, "integrations", 1_000usize)?.max(1),
        workers,
        changes: number(&opts, "changes", 200usize)?,
        account_size: number(&opts, "account-size", 20usize)?.max(1),
        account_changes: number(&opts, "account-changes", 3usize)?.max(1),
        capped: number(&opts, "capped", 1000usize)?,
        capped_secs: number(&opts, "capped-secs", 300u64)?.max(1),
    })
}

/// Progress on stderr, with the time since the start.
pub fn say(started: Instant, what: &str) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// The function crates: every directory of `functions/` with a Cargo.toml.
fn functions(root: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("functions"))? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

async fn run(cfg: Config) -> Result<(), Error> {
    let started = Instant::now();
    let root = root();
    let exe = std::env::current_exe()?;
    let bin_dir = match &cfg.bin_dir {
        Some(dir) => dir.clone(),
        None => exe
            .parent()
            .ok_or("cannot tell where this binary lives")?
            .to_owned(),
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| bin_dir.parent().map(Path::to_owned))
        .ok_or("cannot tell the cargo target directory")?;
    let functions = functions(&root)?;
    let mut results = report::Results {
        machine: machine::describe(&root),
        config: cfg.clone(),
        started_at: chrono::Utc::now(),
        ..Default::default()
    };
    say(
        started,
        &format!(
            "crmsync-bench on {} ({} cores), load {}",
            results.machine.cpu, results.machine.cores, results.machine.load_before
        ),
    );

    if cfg.wants("size") {
        say(started, "sizes of the arm64 bootstraps and zips");
        results.sizes = Some(size::measure(&functions, &target_dir));
    }

    if cfg.wants("cold") {
        let mut binaries = vec![("lambda-hello".to_owned(), bin_dir.join("lambda-hello"))];
        binaries.extend(functions.iter().map(|f| (f.clone(), bin_dir.join(f))));
        if let Some((name, path)) = binaries.iter().find(|(_, p)| !p.is_file()) {
            return Err(format!(
                "{} ({name}) is missing: build it with `cargo build --release -p {name}`",
                path.display()
            )
            .into());
        }
        say(
            started,
            &format!(
                "cold starts: {} binaries × {} rounds",
                binaries.len(),
                cfg.cold_rounds
            ),
        );
        results.cold = Some(cold::measure(&binaries, cfg.cold_warmup, cfg.cold_rounds).await?);
        say(started, "start-up steps of the functions, one per process");
        let env = cold::lambda_env("startup-probe", "127.0.0.1:9");
        let mut probes = Vec::new();
        for step in probe::STEPS {
            probes.push((
                step.to_owned(),
                probe::measure(&exe, step, &env, cfg.cold_rounds)?,
            ));
        }
        results.probes = probes;
    }

    if cfg.wants("pull")
        || cfg.wants("memory")
        || cfg.wants("push")
        || cfg.wants("cold")
        || cfg.wants("scale")
    {
        say(started, "starting Postgres, moto and the CRM sandbox");
        let stack = stack::Stack::start(&bin_dir).await?;
        results.postgres = format!(
            "{} (cluster in `{}`, a directory of this run, removed at its end)",
            stack.pg_version,
            stack.pg_dir.display()
        );

        if cfg.wants("cold") {
            let d = stack.deploy().await?;
            let targets = first_event_targets(&root, &bin_dir, &functions, &stack, &d)?;
            say(
                started,
                &format!(
                    "first events: {} binaries × {} rounds, two events each, against the local stack",
                    targets.len(),
                    cfg.cold_rounds
                ),
            );
            results.first_events =
                Some(cold::first_events(&targets, cfg.cold_warmup, cfg.cold_rounds).await?);
            stack.drop_deployment(&d).await?;
        }
        if cfg.wants("pull") {
            results.pull = Some(pull_benchmark(&stack, &cfg, started).await?);
        }
        if cfg.wants("memory") {
            let mut memory = Vec::new();
            for &n in &cfg.memory {
                // The throughput runs already synced this many.
                if let Some(p) = results.pull.as_ref().filter(|p| p.contacts == n) {
                    memory.push((n, p.sync.clone()));
                    continue;
                }
                let seeded = stack.seed_fub(n).await?;
                let runs = if n <= 100_000 { cfg.runs } else { 1 };
                say(
                    started,
                    &format!(
                        "memory: {n} contacts seeded in {} ms; {runs} sync(s)",
                        seeded["took_ms"]
                    ),
                );
                let mut syncs = Vec::new();
                for _ in 0..runs {
                    let run = pull::sync_run(&stack, None).await?;
                    say(
                        started,
                        &format!(
                            "  sync of {n}: {:.2} s, peak RSS {:.1} MiB",
                            run.secs,
                            run.peak_rss_kib as f64 / 1024.0
                        ),
                    );
                    syncs.push(run);
                }
                memory.push((n, syncs));
            }
            results.memory = Some(memory);
        }
        if cfg.wants("push") {
            let mut runs = Vec::new();
            for mode in [push::Mode::Webhook, push::Mode::Drain] {
                say(
                    started,
                    &format!(
                        "push pacing ({}): {} leads, limit {} per {} s",
                        mode.label(),
                        cfg.leads,
                        cfg.push_limit,
                        cfg.push_window
                    ),
                );
                let run =
                    push::run(&stack, mode, cfg.leads, cfg.push_limit, cfg.push_window).await?;
                say(
                    started,
                    &format!(
                        "  {} delivered in {:.1} s, {} missing, {} doubled, {} × 429",
                        run.delivered, run.secs, run.missing, run.doubled, run.served_429
                    ),
                );
                runs.push(run);
            }
            results.push = Some(runs);
        }
        if cfg.wants("scale") {
            say(
                started,
                &format!(
                    "scale: {} integrations, workers {:?}; webhook latency over {} changes",
                    cfg.integrations, cfg.workers, cfg.changes
                ),
            );
            let plan = scale::Plan {
                integrations: cfg.integrations,
                workers: cfg.workers.clone(),
                account_size: cfg.account_size,
                changes_per_round: cfg.account_changes,
                capped: cfg.capped,
                capped_secs: cfg.capped_secs,
                latency_changes: cfg.changes,
            };
            results.scale = Some(scale::run(&stack, &plan, started).await?);
        }
        drop(stack);
    }

    results.took_secs = started.elapsed().as_secs_f64();
    results.load_after = machine::load_average();
    let text = report::render(&results);
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cfg.out, text)?;
    say(started, &format!("wrote {}", cfg.out.display()));
    Ok(())
}

/// Each binary of the cold starts, with the event of `events/` it serves (the first of its files,
/// the caller's JWT filled in) and the environment of a deployment on the local stack, so that its
/// first event does what it does in the cloud: the secret from Secrets Manager (moto), the database
/// pool, the CRM client.
fn first_event_targets(
    root: &Path,
    bin_dir: &Path,
    functions: &[String],
    stack: &stack::Stack,
    d: &stack::Deployment,
) -> Result<Vec<cold::EventTarget>, Error> {
    let jwt = stack::token(uuid::Uuid::new_v4())?;
    let env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), stack.moto_endpoint.clone()),
        ("APP_SECRET_ID".to_owned(), d.wiring.secret_id.clone()),
        ("RATE_LIMIT_TABLE".to_owned(), stack.table.clone()),
        ("CRM_SANDBOX_URL".to_owned(), stack.sandbox_url.clone()),
    ];
    let mut targets = vec![cold::EventTarget {
        name: "lambda-hello".to_owned(),
        path: bin_dir.join("lambda-hello"),
        env: Vec::new(),
        source: "`{\"name\":\"bench\"}`".to_owned(),
        event: r#"{"name":"bench"}"#.to_owned(),
    }];
    let mut files: Vec<String> = std::fs::read_dir(root.join("events"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    for f in functions {
        let file = files
            .iter()
            .find(|x| x.as_str() == format!("{f}.json"))
            .or_else(|| files.iter().find(|x| x.starts_with(&format!("{f}-"))))
            .ok_or_else(|| format!("no event for {f} in events/"))?;
        let event = std::fs::read_to_string(root.join("events").join(file))?
            .replace("REPLACE_WITH_A_DEV_JWT", &jwt);
        targets.push(cold::EventTarget {
            name: f.clone(),
            path: bin_dir.join(f),
            env: env.clone(),
            source: format!("`events/{file}`"),
            event,
        });
    }
    Ok(targets)
}

/// The share of the records the re-sync benchmark changes.
const RESYNC_SHARE: f64 = 0.01;

async fn pull_benchmark(
    stack: &stack::Stack,
    cfg: &Config,
    started: Instant,
) -> Result<report::PullResults, Error> {
    let n = cfg.contacts;
    let seeded = stack.seed_fub(n).await?;
    say(
        started,
        &format!(
            "pull: {n} Follow Up Boss contacts seeded in {} ms; reading them once",
            seeded["took_ms"]
        ),
    );
    let rows = pull::read_rows(stack).await?;
    say(
        started,
        &format!(
            "  {} records, {} distinct phones; pages {:.2} s, mapping {:.2} s",
            rows.records,
            rows.unique.len(),
            rows.fetch_secs,
            rows.map_secs
        ),
    );
    let mut out = report::PullResults {
        contacts: n,
        records: rows.records,
        unique: rows.unique.len() as u64,
        pages: rows.pages.len(),
        fetch_secs: rows.fetch_secs,
        map_secs: rows.map_secs,
        fetch_cpu_sandbox: rows.fetch_cpu_sandbox,
        ..Default::default()
    };
    let check = |what: &str, got: u64| -> Result<(), Error> {
        if got != out.unique {
            return Err(format!(
                "{what} left {got} rows in contacts, expected {}",
                out.unique
            )
            .into());
        }
        Ok(())
    };
    for round in 1..=cfg.runs {
        let sync = pull::sync_run(stack, None).await?;
        check("the sync", sync.rows)?;
        let (copy, copied) = pull::copy_run(stack, &rows.unique).await?;
        check("COPY", copied)?;
        let (batched, written) = pull::batched_run(stack, &rows.pages).await?;
        check("the batched writes", written)?;
        let seed = pull::seed_batch_run(stack, &rows.pages).await?;
        check("the seed-shaped page upserts", seed.rows)?;
        let (naive, upserted) = pull::naive_run(stack, &rows.unique).await?;
        check("the naive upserts", upserted)?;
        say(
            started,
            &format!(
                "  round {round}: sync {:.2} s (peak RSS {:.1} MiB, CPU {:.2} s), COPY {copy:.2} s, \
                 batched writes {batched:.2} s, seed-shaped page upserts {:.2} s, naive {naive:.2} s",
                sync.secs,
                sync.peak_rss_kib as f64 / 1024.0,
                sync.cpu_child,
                seed.secs
            ),
        );
        out.sync.push(sync);
        out.copy.push(copy);
        out.batched.push(batched);
        out.seed.push(seed);
        out.naive.push(naive);
    }
    say(
        started,
        &format!(
            "  re-sync: a complete sync, {:.0} % of the records changed in the sandbox, a sync again",
            RESYNC_SHARE * 100.0
        ),
    );
    let resync = pull::resync_run(stack, &rows, RESYNC_SHARE).await?;
    say(
        started,
        &format!(
            "  re-sync: {} records changed ({} contacts); {:.2} s, {} fetched, {} contacts and {} sources written",
            resync.touched,
            resync.expected_contacts,
            resync.incremental.secs,
            resync.incremental.fetched,
            resync.contacts_written,
            resync
                .sources_written
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        ),
    );
    out.resync = Some(resync);
    if profile::available() {
        let data = stack::bench_dir().join("sync.perf");
        say(
            started,
            &format!(
                "  one more sync, under `perf record` (kept in {})",
                data.display()
            ),
        );
        let run = pull::sync_run(stack, Some(&data)).await?;
        check("the profiled sync", run.rows)?;
        out.profile = Some(profile::summarize(&data)?);
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) if !c.starts_with("--") || c == "--help" => (c.as_str(), rest),
        _ => ("run", args.as_slice()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = match command {
        "run" => config(rest).and_then(|cfg| runtime.block_on(run(cfg))),
        "sync-once" => options(rest).and_then(|o| runtime.block_on(pull::sync_once(&o))),
        "scale-worker" => options(rest).and_then(|o| runtime.block_on(scale::worker(&o))),
        "startup-probe" => options(rest).and_then(|o| runtime.block_on(probe::run(&o))),
        "profile-summary" => match rest.first() {
            Some(file) => profile::summarize(Path::new(file)).map(|p| {
                for (what, pct) in &p.categories {
                    println!("{pct:5.1} %  {what}");
                }
                println!("{} samples; self time:", p.samples);
                for (pct, f) in &p.top {
                    println!("{pct:5.1} %  {f}");
                }
            }),
            None => Err("profile-summary needs a perf.data file".into()),
        },
        "-h" | "--help" | "help" => {
            println!(
                "crmsync-bench run [--out FILE] [--command TEXT] [--only pull,memory,cold,push,scale,size] \
                 [--contacts N] [--runs N] [--memory N,N,...] [--cold-rounds N] [--leads N] \
                 [--push-limit N] [--push-window SECS] [--integrations N] [--workers N,N,...] \
                 [--changes N] [--account-size N] [--account-changes N] [--capped N] \
                 [--capped-secs N] [--bin-dir DIR]\n\
                 crmsync-bench profile-summary PERF_DATA"
            );
            Ok(())
        }
        other => Err(format!("unknown command `{other}`: use `run` or `sync-once`").into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
