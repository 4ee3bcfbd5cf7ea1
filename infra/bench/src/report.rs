//! `docs/BENCHMARKS.md`: every figure, its target, and what limits the ones that miss.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::Config;
use crate::cold::ColdStarts;
use crate::machine::Machine;
use crate::pull::SyncRun;
use crate::push::{Mode, PushRun};
use crate::size::Size;

#[derive(Debug, Default)]
pub struct PullResults {
    pub contacts: usize,
    pub records: usize,
    /// Distinct phones: the rows every approach leaves in `contacts`.
    pub unique: u64,
    pub pages: usize,
    pub fetch_secs: f64,
    pub map_secs: f64,
    pub fetch_cpu_sandbox: f64,
    pub sync: Vec<SyncRun>,
    pub copy: Vec<f64>,
    pub batched: Vec<f64>,
    pub naive: Vec<f64>,
    /// The seed-shaped peer: each fetched page upserted in one statement.
    pub seed: Vec<crate::pull::SeedRun>,
    /// The 1%-changed re-sync.
    pub resync: Option<crate::pull::Resync>,
    /// CPU profile of one more sync's process.
    pub profile: Option<crate::profile::Profile>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub machine: Machine,
    pub config: Config,
    pub started_at: DateTime<Utc>,
    pub took_secs: f64,
    pub load_after: String,
    pub postgres: String,
    pub sizes: Option<Vec<Size>>,
    pub cold: Option<Vec<ColdStarts>>,
    /// First and second events of each function, on the local stack.
    pub first_events: Option<Vec<crate::cold::FirstEvents>>,
    /// Start-up steps (see `probe`), milliseconds per run.
    pub probes: Vec<(String, Vec<f64>)>,
    pub pull: Option<PullResults>,
    pub memory: Option<Vec<(usize, Vec<SyncRun>)>>,
    pub push: Option<Vec<PushRun>>,
    pub scale: Option<crate::scale::ScaleResults>,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q` quantile (0 to 1) of `xs`, by the nearest rank.
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(rows: f64, secs: f64) -> String {
    if secs > 0.0 && secs.is_finite() {
        thousands((rows / secs).round() as u64)
    } else {
        "–".into()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

fn list(xs: &[f64], digits: usize) -> String {
    xs.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// AWS documents that a function gets one vCPU at 1,769 MB, and CPU in proportion to its memory.
const LAMBDA_MB_PER_VCPU: f64 = 1769.0;
/// The memory the functions are meant to run with (MB).
const LAMBDA_MEMORY_MB: f64 = 128.0;
/// The targets (issue 16).
const TARGET_VS_COPY: f64 = 0.5;
const TARGET_VS_SEED: f64 = 3.0;
const TARGET_CPU_US: f64 = 5.0;
const TARGET_COLD_RATIO: f64 = 1.5;
const TARGET_FIRST_EVENT_MS: f64 = 15.0;
const TARGET_RSS_SPREAD: f64 = 0.2;
const TARGET_RSS_MIB: f64 = 48.0;
/// Follow Up Boss's documented rate limit (requests per window of seconds); not measured here.
const FUB_DOCUMENTED_REQUESTS: f64 = 250.0;
const FUB_DOCUMENTED_WINDOW_SECS: f64 = 10.0;

fn spread(xs: &[f64]) -> (f64, f64) {
    let v = xs.iter().copied().filter(|x| x.is_finite());
    (
        v.clone().fold(f64::INFINITY, f64::min),
        v.fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The figures every section and the summary use.
struct Figures {
    pull: Option<PullFigures>,
    cold: Option<ColdFigures>,
    first: Option<FirstFigures>,
    memory: Option<MemoryFigures>,
    push: Vec<PushFigures>,
}

struct PullFigures {
    sync_secs: f64,
    copy_secs: f64,
    naive_secs: f64,
    batched_secs: f64,
    seed_secs: f64,
    sync_rate: f64,
    copy_rate: f64,
    naive_rate: f64,
    seed_rate: f64,
    vs_copy: f64,
    vs_naive: f64,
    vs_seed: f64,
    /// CPU of the sync's process per record fetched (µs, median of the runs): the whole process,
    /// and the handler alone.
    cpu_us: f64,
    cpu_handler_us: f64,
    /// Seconds of a 128 MB function that a sync of `contacts` needs at `cpu_us`.
    lambda_secs: f64,
}

struct ColdFigures {
    hello_ms: f64,
    /// (function, median ms, ratio to hello), slowest last.
    functions: Vec<(String, f64, f64)>,
    worst_ratio: f64,
    rounds: usize,
    /// The lowest and highest single start of any function (ms).
    range: (f64, f64),
}

struct FirstFigures {
    /// (binary, median CPU of the first event, of the second, median of the rounds' differences),
    /// in ms; the hello world first.
    rows: Vec<(String, f64, f64, f64)>,
    /// The function (not the hello world) whose first event costs the most extra CPU.
    worst: Option<(String, f64)>,
    rounds: usize,
}

struct MemoryFigures {
    /// (contacts, median peak RSS in MiB, runs).
    sizes: Vec<(usize, f64, usize)>,
    spread: f64,
    highest: f64,
}

struct PushFigures {
    mode: Mode,
    rate: f64,
    allowed: f64,
    share: f64,
    lossless: bool,
}

fn figures(r: &Results) -> Figures {
    let pull = r.pull.as_ref().filter(|p| !p.sync.is_empty()).map(|p| {
        let sync_secs = median(&p.sync.iter().map(|s| s.secs).collect::<Vec<_>>());
        let copy_secs = median(&p.copy);
        let naive_secs = median(&p.naive);
        let seed_secs = median(&p.seed.iter().map(|s| s.secs).collect::<Vec<_>>());
        let rows = p.unique as f64;
        let per = |g: fn(&SyncRun) -> f64| {
            median(
                &p.sync
                    .iter()
                    .map(|s| g(s) * 1e6 / s.fetched.max(1) as f64)
                    .collect::<Vec<_>>(),
            )
        };
        let cpu_us = per(|s| s.cpu_child);
        PullFigures {
            sync_secs,
            copy_secs,
            naive_secs,
            batched_secs: median(&p.batched),
            seed_secs,
            sync_rate: rows / sync_secs,
            copy_rate: rows / copy_secs,
            naive_rate: rows / naive_secs,
            seed_rate: rows / seed_secs,
            vs_copy: copy_secs / sync_secs,
            vs_naive: naive_secs / sync_secs,
            vs_seed: seed_secs / sync_secs,
            cpu_us,
            cpu_handler_us: per(|s| s.cpu_handler),
            lambda_secs: cpu_us * p.contacts as f64 / 1e6 * LAMBDA_MB_PER_VCPU / LAMBDA_MEMORY_MB,
        }
    });
    let cold = r.cold.as_ref().and_then(|c| {
        let ms = |s: &ColdStarts| {
            median(
                &s.samples
                    .iter()
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect::<Vec<_>>(),
            )
        };
        let hello = c.iter().find(|s| s.name == "lambda-hello")?;
        let hello_ms = ms(hello);
        let mut functions: Vec<(String, f64, f64)> = c
            .iter()
            .filter(|s| s.name != "lambda-hello")
            .map(|s| (s.name.clone(), ms(s), ms(s) / hello_ms))
            .collect();
        functions.sort_by(|a, b| a.1.total_cmp(&b.1));
        let worst_ratio = functions.iter().map(|f| f.2).fold(0.0, f64::max);
        let all: Vec<f64> = c
            .iter()
            .filter(|s| s.name != "lambda-hello")
            .flat_map(|s| s.samples.iter().map(|d| d.as_secs_f64() * 1000.0))
            .collect();
        Some(ColdFigures {
            hello_ms,
            functions,
            worst_ratio,
            rounds: hello.samples.len(),
            range: spread(&all),
        })
    });
    let first = r.first_events.as_ref().filter(|f| !f.is_empty()).map(|f| {
        let rows: Vec<(String, f64, f64, f64)> = f
            .iter()
            .map(|x| {
                let extra: Vec<f64> = x
                    .first_cpu_ms
                    .iter()
                    .zip(&x.second_cpu_ms)
                    .map(|(a, b)| a - b)
                    .collect();
                (
                    x.name.clone(),
                    median(&x.first_cpu_ms),
                    median(&x.second_cpu_ms),
                    median(&extra),
                )
            })
            .collect();
        let worst = rows
            .iter()
            .filter(|r| r.0 != "lambda-hello")
            .max_by(|a, b| a.3.total_cmp(&b.3))
            .map(|r| (r.0.clone(), r.3));
        FirstFigures {
            rows,
            worst,
            rounds: f.first().map_or(0, |x| x.first_cpu_ms.len()),
        }
    });
    let memory = r.memory.as_ref().filter(|m| !m.is_empty()).map(|m| {
        let sizes: Vec<(usize, f64, usize)> = m
            .iter()
            .map(|(n, runs)| {
                let peaks: Vec<f64> = runs
                    .iter()
                    .map(|s| s.peak_rss_kib as f64 / 1024.0)
                    .collect();
                (*n, median(&peaks), runs.len())
            })
            .collect();
        let highest = sizes.iter().map(|s| s.1).fold(0.0, f64::max);
        let lowest = sizes.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        MemoryFigures {
            spread: highest / lowest - 1.0,
            highest,
            sizes,
        }
    });
    let push = r
        .push
        .iter()
        .flatten()
        .map(|p| {
            // What the limit allows at the requests each lead took in this run (the searches a lookup
            // needs and the create): pacing is judged on the calls it was given, not on an assumed count.
            let per_lead = p.crm_requests as f64 / p.delivered.max(1) as f64;
            let allowed = f64::from(r.config.push_limit)
                / f64::from(r.config.push_window)
                / per_lead.max(1.0);
            let rate = p.delivered as f64 / p.secs;
            PushFigures {
                mode: p.mode,
                rate,
                allowed,
                share: rate / allowed,
                lossless: p.missing == 0 && p.doubled == 0,
            }
        })
        .collect();
    Figures {
        pull,
        cold,
        first,
        memory,
        push,
    }
}

pub fn render(r: &Results) -> String {
    let f = figures(r);
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "# Benchmarks\n\n\
         Measured speed, cold start, memory and size of crmsync on one machine, against the limits the \
         functions run under. Generated by `make bench` (the crate `infra/bench`); every measured figure \
         below comes from the run described here, and the next run of `make bench` replaces this file. \
         The other numbers say what they are: targets, limits that AWS or Follow Up Boss document, or \
         constants of the code this run was built from.\n"
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| command | `{}` |", r.config.command);
    let _ = writeln!(
        s,
        "| date | {} (the run took {:.1} min) |",
        r.started_at.format("%Y-%m-%d %H:%M UTC"),
        r.took_secs / 60.0
    );
    let _ = writeln!(s, "| commit | {} |", m.commit);
    let _ = writeln!(
        s,
        "| machine | {}, {} cores (`nproc`), {:.1} GiB memory, Linux {} |",
        m.cpu, m.cores, m.memory_gib, m.kernel
    );
    let _ = writeln!(
        s,
        "| load average (1, 5, 15 min) | {} before, {} after |",
        m.load_before, r.load_after
    );
    let _ = writeln!(
        s,
        "| toolchain | {}; {}; release profile of the workspace: {} |",
        m.rustc, m.cargo_lambda, m.release_profile
    );
    let pg = if r.postgres.is_empty() {
        "–".to_owned()
    } else {
        format!(
            "PostgreSQL {} with its default durability (`fsync`, `synchronous_commit` and `full_page_writes` on, as on RDS)",
            r.postgres
        )
    };
    let _ = writeln!(
        s,
        "| servers | {pg}; {} (DynamoDB, Secrets Manager); `crm-sandbox` (release build), each in a process of its own |",
        m.moto
    );
    let _ = writeln!(
        s,
        "\nThe machine is shared and small, so the figures are medians of several runs and are compared \
         as ratios of numbers measured in the same run; the load average above says how busy it was.\n"
    );

    summary(&mut s, r, &f);
    pull_section(&mut s, r, &f);
    cold_section(&mut s, r, &f);
    memory_section(&mut s, r, &f);
    push_section(&mut s, r, &f);
    size_section(&mut s, r);
    scale_section(&mut s, r);
    s
}

fn summary(s: &mut String, r: &Results, f: &Figures) {
    let _ = writeln!(
        s,
        "## Summary\n\n| # | figure | measured | target | |\n|---|---|---|---|---|"
    );
    if let (Some(p), Some(pr)) = (&f.pull, &r.pull) {
        let _ = writeln!(
            s,
            "| 1 | pull sync of {} contacts (rows/s) | {} rows/s; COPY {} rows/s, seed-shaped page upserts {} rows/s, naive {} rows/s | ≥ {TARGET_VS_COPY} × COPY: {:.2} × COPY | {} |",
            thousands(pr.contacts as u64),
            rate(1.0, 1.0 / p.sync_rate),
            rate(1.0, 1.0 / p.copy_rate),
            rate(1.0, 1.0 / p.seed_rate),
            rate(1.0, 1.0 / p.naive_rate),
            p.vs_copy,
            met(p.vs_copy >= TARGET_VS_COPY)
        );
        let _ = writeln!(
            s,
            "| | | | ≥ {TARGET_VS_SEED} × the seed-shaped page upserts: {:.2} × | {} |",
            p.vs_seed,
            met(p.vs_seed >= TARGET_VS_SEED)
        );
        let _ = writeln!(
            s,
            "| 2 | CPU of the sync's process per contact | {:.2} µs (the handler alone {:.2} µs): a {}-contact sync needs {:.1} s of a {LAMBDA_MEMORY_MB:.0} MB function | ≤ {TARGET_CPU_US} µs per contact | {} |",
            p.cpu_us,
            p.cpu_handler_us,
            thousands(pr.contacts as u64),
            p.lambda_secs,
            met(p.cpu_us <= TARGET_CPU_US)
        );
        if let Some(rs) = &pr.resync {
            let _ = writeln!(
                s,
                "| 3 | re-sync after {} of {} records changed | {:.2} s; {} contacts and {} sources written, {} and {} changed | writes only the changed rows | {} |",
                thousands(rs.touched),
                thousands(pr.records as u64),
                rs.incremental.secs,
                thousands(rs.contacts_written),
                rs.sources_written.map_or_else(|| "–".to_owned(), thousands),
                thousands(rs.expected_contacts),
                thousands(rs.expected_sources),
                met(rs.only_changed())
            );
        }
    }
    if let Some(c) = &f.cold {
        let worst = c.functions.last();
        let _ = writeln!(
            s,
            "| 4 | cold start (median of {} rounds) | hello world {:.1} ms; functions' medians {:.1}–{:.1} ms, single starts {:.1}–{:.1} ms | ≤ {TARGET_COLD_RATIO} × hello world for every function: worst {:.2} × ({}) | {} |",
            c.rounds,
            c.hello_ms,
            c.functions.first().map_or(f64::NAN, |x| x.1),
            worst.map_or(f64::NAN, |x| x.1),
            c.range.0,
            c.range.1,
            c.worst_ratio,
            worst.map_or("–", |x| x.0.as_str()),
            met(c.worst_ratio <= TARGET_COLD_RATIO)
        );
    }
    if let Some(fe) = &f.first {
        let hello = fe.rows.iter().find(|x| x.0 == "lambda-hello");
        let _ = writeln!(
            s,
            "| | first event's extra CPU (median of {} rounds) | worst {} ({:.1} ms); hello world {:.1} ms | ≤ {TARGET_FIRST_EVENT_MS} ms | {} |",
            fe.rounds,
            fe.worst.as_ref().map_or("–", |w| w.0.as_str()),
            fe.worst.as_ref().map_or(f64::NAN, |w| w.1),
            hello.map_or(f64::NAN, |h| h.3),
            met(fe
                .worst
                .as_ref()
                .is_some_and(|w| w.1 <= TARGET_FIRST_EVENT_MS))
        );
    }
    if let Some(mem) = &f.memory {
        let sizes = mem
            .sizes
            .iter()
            .map(|(n, mb, _)| format!("{}: {mb:.1} MiB", thousands(*n as u64)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "| 5 | peak RSS of a sync | {sizes} | flat within {:.0} %: {:.0} % apart | {} |",
            TARGET_RSS_SPREAD * 100.0,
            mem.spread * 100.0,
            met(mem.spread <= TARGET_RSS_SPREAD)
        );
        let _ = writeln!(
            s,
            "| | | | under {TARGET_RSS_MIB} MiB: highest {:.1} MiB | {} |",
            mem.highest,
            met(mem.highest < TARGET_RSS_MIB)
        );
    }
    for p in &f.push {
        let _ = writeln!(
            s,
            "| 6 | push pacing, {} | {:.2} leads/s of {:.2} allowed at the requests each lead took | ≥ 90 % of the allowed rate, none lost: {:.1} %, {} | {} |",
            p.mode.label(),
            p.rate,
            p.allowed,
            p.share * 100.0,
            if p.lossless {
                "none lost or doubled"
            } else {
                "leads lost or doubled"
            },
            met(p.share >= 0.9 && p.lossless)
        );
    }
    if let Some(sc) = &r.scale {
        if let (Some(first), Some(best)) = (
            sc.rounds.first(),
            sc.rounds
                .iter()
                .max_by(|a, b| a.rate().total_cmp(&b.rate())),
        ) {
            let all = sc
                .rounds
                .iter()
                .map(|x| format!("{}: {:.1}", x.workers, x.rate()))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "| 8 | {} integrations dispatched and synced through the queue (integrations/s by workers) | {all}; best {:.1} with {} ({:.2} × {} worker{}) | (reported) | |",
                thousands(sc.integrations as u64),
                best.rate(),
                best.workers,
                best.rate() / first.rate(),
                first.workers,
                if first.workers == 1 { "" } else { "s" }
            );
        }
        if let Some(c) = &sc.capped {
            let _ = writeln!(
                s,
                "| | the same under one window of {} requests per {} s shared by {} integrations ({}) | {:.1} integrations/s, {} of {} synced{} | (reported) | |",
                c.limit,
                c.window_secs,
                thousands(c.integrations as u64),
                workers(c.round.workers),
                c.round.rate(),
                thousands(c.round.synced),
                thousands(c.integrations as u64),
                if c.round.finished {
                    ""
                } else {
                    " when the round's time ran out"
                }
            );
        }
        if let Some(l) = &sc.latency {
            let _ = writeln!(
                s,
                "| 9 | a change in the CRM to its row in `contacts`, through the webhook ({} changes) | median {:.0} ms, p99 {:.0} ms | (reported) | |",
                l.to_row_ms.len(),
                median(&l.to_row_ms),
                percentile(&l.to_row_ms, 0.99)
            );
        }
    }
    if let Some(sizes) = &r.sizes {
        let zips: Vec<u64> = sizes.iter().filter_map(|x| x.zip).collect();
        let boots: Vec<u64> = sizes.iter().filter_map(|x| x.bootstrap).collect();
        if !zips.is_empty() {
            let _ = writeln!(
                s,
                "| 7 | arm64 size | bootstrap {}–{}, zip {}–{} | (reported) | |",
                mib(*boots.iter().min().unwrap_or(&0)),
                mib(*boots.iter().max().unwrap_or(&0)),
                mib(*zips.iter().min().unwrap_or(&0)),
                mib(*zips.iter().max().unwrap_or(&0)),
            );
        } else {
            let _ = writeln!(
                s,
                "| 7 | arm64 size | not built (`cargo lambda build --release --arm64 --output-format zip`) | (reported) | |"
            );
        }
    }
    let _ = writeln!(s);
}

fn pull_section(s: &mut String, r: &Results, f: &Figures) {
    let (Some(p), Some(pf)) = (&r.pull, &f.pull) else {
        return;
    };
    let rows = p.unique as f64;
    let _ = writeln!(
        s,
        "## 1. Pull sync throughput\n\n\
         The sandbox's Follow Up Boss (its own process, the release build of `crm-sandbox`) holds {} \
         generated contacts; its rate limit is lifted for this benchmark (the real Follow Up Boss \
         documents {FUB_DOCUMENTED_REQUESTS:.0} requests per {FUB_DOCUMENTED_WINDOW_SECS:.0} s, which \
         caps a client reading pages of {} at {} contacts/s), so that the figures are crmsync's. The sync \
         reads them in {} pages of up to {} (`crmsync_app::pull::PAGE_SIZE`; `sort=updated`, following \
         `next`); {} have a usable phone, and {} distinct phones end in `contacts`. Each approach writes \
         those same {} rows into a fresh, migrated database on the same server, and the row count is \
         checked after every run. Rates are those rows divided by the median wall time of {} runs.\n",
        thousands(p.contacts as u64),
        crmsync_app::pull::PAGE_SIZE,
        rate(
            FUB_DOCUMENTED_REQUESTS * f64::from(crmsync_app::pull::PAGE_SIZE),
            FUB_DOCUMENTED_WINDOW_SECS
        ),
        thousands(p.pages as u64),
        crmsync_app::pull::PAGE_SIZE,
        thousands(p.sync.first().map_or(0, |x| x.fetched - x.skipped)),
        thousands(p.unique),
        thousands(p.unique),
        p.sync.len()
    );
    if let Some(first) = p.sync.first() {
        let _ = writeln!(
            s,
            "The handler answered `totalFetched` {}, `skipped` {} and `upserted` {}.\n",
            thousands(first.fetched),
            thousands(first.skipped),
            thousands(first.upserted)
        );
    }
    let _ = writeln!(
        s,
        "| approach | what is timed | runs (s) | median (s) | rows/s | sync ÷ it |\n|---|---|---|---|---|---|"
    );
    let sync_runs: Vec<f64> = p.sync.iter().map(|x| x.secs).collect();
    let _ = writeln!(
        s,
        "| **sync** (`contacts-sync` handler) | the handler, in a child process: every page from the sandbox over HTTP, mapped, upserted with its cursor | {} | {:.2} | **{}** | 1 |",
        list(&sync_runs, 2),
        pf.sync_secs,
        rate(rows, pf.sync_secs)
    );
    let _ = writeln!(
        s,
        "| COPY (physical limit) | one binary `COPY … FROM STDIN` of the rows | {} | {:.2} | {} | {:.2} |",
        list(&p.copy, 2),
        pf.copy_secs,
        rate(rows, pf.copy_secs),
        pf.vs_copy
    );
    let _ = writeln!(
        s,
        "| naive | one prepared single-row upsert per contact, each its own transaction | {} | {:.2} | {} | {:.1} |",
        list(&p.naive, 2),
        pf.naive_secs,
        rate(rows, pf.naive_secs),
        pf.vs_naive
    );
    let seed_runs: Vec<f64> = p.seed.iter().map(|x| x.secs).collect();
    let (statements, sent, deduped) = p
        .seed
        .first()
        .map_or((0, 0, 0), |x| (x.statements, x.sent, x.deduped));
    let _ = writeln!(
        s,
        "| seed-shaped page upserts | what the seed did (a Supabase `upsert` of each fetched page, `onConflict: 'phone_number'`), as PostgREST runs it: each page's rows as one JSON body, `INSERT … SELECT … FROM json_populate_recordset(…) ON CONFLICT (owner_id, phone_number) DO UPDATE`, one statement and transaction per page ({} statements, {} rows; the {} rows whose phone came again later in the same page dropped first, keeping the last, as one such statement cannot update a row twice) | {} | {:.2} | {} | {:.2} |",
        thousands(statements),
        thousands(sent),
        thousands(deduped),
        list(&seed_runs, 2),
        pf.seed_secs,
        rate(rows, pf.seed_secs),
        pf.vs_seed
    );
    let _ = writeln!(
        s,
        "| the sync's writes alone | the store's upsert in the sync's batches of up to {} contacts (`crmsync_app::pull::WRITE_BATCH`; one statement and transaction each), no CRM | {} | {:.2} | {} | {:.2} |",
        thousands(crmsync_app::pull::WRITE_BATCH as u64),
        list(&p.batched, 2),
        pf.batched_secs,
        rate(rows, pf.batched_secs),
        pf.batched_secs / pf.sync_secs
    );
    let cpu = |g: fn(&SyncRun) -> f64| median(&p.sync.iter().map(g).collect::<Vec<_>>());
    let (cpu_child, cpu_sandbox, cpu_pg) = (
        cpu(|x| x.cpu_child),
        cpu(|x| x.cpu_sandbox),
        cpu(|x| x.cpu_postgres),
    );
    let reading = p.fetch_secs + p.map_secs;
    let stages = reading + pf.batched_secs;
    let floor = reading.max(pf.batched_secs);
    let _ = writeln!(
        s,
        "\nCOPY, the seed-shaped page upserts, the naive upserts and the sync's writes alone time only the \
         writes of rows read and mapped beforehand; the sync's time also holds reading the CRM and \
         mapping.\n"
    );
    let _ = writeln!(
        s,
        "**Where the sync's time goes.** The sync reads while it writes: a reader requests each page, \
         parses its JSON and maps it, a bounded number of pages ahead of a writer that upserts whatever \
         has arrived (up to {} contacts) and saves the cursor in one transaction. Timed apart, on the same \
         data:\n\n\
         | stage | time (s) | share of the sum |\n|---|---|---|\n\
         | reading the {} pages from the sandbox and mapping their {} records as each page is parsed \
         (the sandbox's work, HTTP, JSON, mapping) | {:.2} | {:.0} % |\n\
         | writing the rows in batches of up to {} (the sync's writes alone, above) | {:.2} | {:.0} % |\n\
         | sum | {:.2} | the sync took {:.2}; the longer of reading + mapping and writing is {:.2} |\n",
        thousands(crmsync_app::pull::WRITE_BATCH as u64),
        thousands(p.pages as u64),
        thousands(p.records as u64),
        reading,
        100.0 * reading / stages,
        thousands(crmsync_app::pull::WRITE_BATCH as u64),
        pf.batched_secs,
        100.0 * pf.batched_secs / stages,
        stages,
        pf.sync_secs,
        floor
    );
    let _ = writeln!(
        s,
        "CPU time during a sync (medians): the sync's process {cpu_child:.2} s, the sandbox {cpu_sandbox:.2} s \
         (of which {:.2} s serving the pages when they were read alone), Postgres {cpu_pg:.2} s; wall time \
         {:.2} s on {} cores.\n",
        p.fetch_cpu_sandbox, pf.sync_secs, r.machine.cores
    );
    let fetched = median(&p.sync.iter().map(|x| x.fetched as f64).collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "**CPU per contact.** The sync's process (user and system time, `getrusage`, at its end) used \
         {cpu_child:.2} s for {} records: {:.2} µs per record, of which the handler call alone {:.2} µs \
         (the rest is the process's start, the runtime, the secret and the pool). A function gets CPU \
         in proportion to its memory, one vCPU at {LAMBDA_MB_PER_VCPU:.0} MB as AWS documents, so a \
         {LAMBDA_MEMORY_MB:.0} MB function gets {:.1} % of one; at this machine's speed a sync of {} \
         contacts needs {:.1} s of such a function. Target ≤ {TARGET_CPU_US} µs per contact: {}.\n",
        thousands(fetched as u64),
        pf.cpu_us,
        pf.cpu_handler_us,
        100.0 * LAMBDA_MEMORY_MB / LAMBDA_MB_PER_VCPU,
        thousands(p.contacts as u64),
        pf.lambda_secs,
        met(pf.cpu_us <= TARGET_CPU_US)
    );
    if let Some(rs) = &p.resync {
        let _ = writeln!(
            s,
            "**Re-sync after a few changes.** A fresh deployment synced all {} records ({:.2} s); then \
             the sandbox changed {} of them (`POST /_sandbox/fub/touch`: a new `background`, which is the \
             contact's notes, and a new update time); {} of those have a usable phone, {} distinct \
             phones. The same handler then read the changes since its cursor:\n\n\
             | | |\n|---|---|\n\
             | wall time of the re-sync | {:.2} s |\n\
             | records read (`totalFetched`), `upserted`, a complete read (`fullRead`) | {}, {}, {} |\n\
             | CPU of the re-sync's process | {:.2} s (the handler alone {:.3} s) |\n\
             | `contacts` rows whose `updated_at` moved | {} (changed: {}) |\n\
             | `contact_sources` rows whose `changed_at` moved | {} (changed: {}) |\n\n\
             Target: the re-sync writes only the changed rows: {}.\n",
            thousands(rs.full.fetched),
            rs.full.secs,
            thousands(rs.touched),
            thousands(rs.expected_sources),
            thousands(rs.expected_contacts),
            rs.incremental.secs,
            thousands(rs.incremental.fetched),
            thousands(rs.incremental.upserted),
            if rs.incremental.full_read {
                "yes"
            } else {
                "no"
            },
            rs.incremental.cpu_child,
            rs.incremental.cpu_handler,
            thousands(rs.contacts_written),
            thousands(rs.expected_contacts),
            rs.sources_written
                .map_or_else(|| "not counted (no such column)".to_owned(), thousands),
            thousands(rs.expected_sources),
            met(rs.only_changed())
        );
    }
    if let Some(prof) = &p.profile {
        let _ = writeln!(
            s,
            "**Profile of the sync's process** (`perf {}`, of one more sync; {} samples). This process is the function: handler, CRM client, mapping, Postgres \
             client. Each sample counts under the first frame, from the leaf up, that says what the code \
             is doing (an allocation made while parsing a phone number counts as phone parsing):\n\n\
             | what the CPU did | share of the samples |\n|---|---|",
            crate::profile::RECORD.join(" "),
            thousands(prof.samples)
        );
        for (what, pct) in &prof.categories {
            let _ = writeln!(s, "| {what} | {pct:.1} % |");
        }
        let _ = writeln!(
            s,
            "\nThe functions the samples fell in most often (self time): {}.\n",
            prof.top
                .iter()
                .take(8)
                .map(|(pct, sym)| format!("`{sym}` {pct:.1} %"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let share = |needle: &str| {
        p.profile.as_ref().and_then(|prof| {
            prof.categories
                .iter()
                .find(|(c, _)| c.starts_with(needle))
                .map(|(_, pct)| *pct)
        })
    };
    let pct = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} %"));
    let cpu_total = cpu_child + cpu_sandbox + cpu_pg;
    let cpu_floor = cpu_total / r.machine.cores.max(1) as f64;
    let largest = p.profile.as_ref().and_then(|prof| prof.categories.first());
    let _ = writeln!(
        s,
        "**What limits it.** The sandbox used {cpu_sandbox:.2} s of CPU in a {:.2} s sync{}. Measured \
         here:\n\n\
         1. *The writes.* Writing the rows in the sync's batches takes {:.1} × as long as COPY ({:.2} s \
         against {:.2} s). COPY only appends, and cannot upsert.\n\
         2. *Reading and mapping* overlap the writes ({reading:.2} s together, timed apart). {}\n\
         3. *This machine has {} cores for everything.* The sync's process, the sandbox and Postgres used \
         {cpu_total:.2} s of CPU together, so no sync could take less than {cpu_floor:.2} s here \
         ({:.2} × COPY's rate) without also using less CPU.\n\
         4. *In production the CRM sets the pace.* At the {FUB_DOCUMENTED_REQUESTS:.0} requests per \
         {FUB_DOCUMENTED_WINDOW_SECS:.0} s Follow Up Boss documents, a sync of pages of {} reads at most \
         {} contacts/s from it; the sync managed {:.2} × that here.\n",
        pf.sync_secs,
        share("JSON").map_or_else(String::new, |v| format!(
            ", and JSON is {} of the sync process's samples",
            pct(Some(v))
        )),
        pf.batched_secs / pf.copy_secs,
        pf.batched_secs,
        pf.copy_secs,
        largest.map_or_else(
            || "No profile was taken (`perf` is missing).".to_owned(),
            |(what, share)| format!(
                "The largest CPU cost of the sync's process is {what}: {share:.0} % of its samples."
            )
        ),
        r.machine.cores,
        pf.copy_secs / cpu_floor,
        crmsync_app::pull::PAGE_SIZE,
        rate(
            FUB_DOCUMENTED_REQUESTS * f64::from(crmsync_app::pull::PAGE_SIZE),
            FUB_DOCUMENTED_WINDOW_SECS
        ),
        pf.sync_rate
            / (FUB_DOCUMENTED_REQUESTS * f64::from(crmsync_app::pull::PAGE_SIZE)
                / FUB_DOCUMENTED_WINDOW_SECS),
    );
}

fn cold_section(s: &mut String, r: &Results, f: &Figures) {
    let (Some(c), Some(cf)) = (&r.cold, &f.cold) else {
        return;
    };
    let rounds = c.first().map_or(0, |x| x.samples.len());
    let _ = writeln!(
        s,
        "## 2. Cold start\n\n\
         Time from starting the process until it asks a local fake of the Lambda Runtime API for its first \
         event (`GET /2018-06-01/runtime/invocation/next`), for every function's x86_64 release binary \
         (`cargo build --release -p <function>`; arm64 binaries cannot run here) and for `lambda-hello`, \
         the hello-world `lambda_runtime` function of the cargo-lambda template built with the same \
         profile. The processes get the environment Lambda gives a function (`AWS_LAMBDA_*`, region, \
         keys, `APP_SECRET_ID`, …) and nothing else. {} rounds, each starting every binary once (after {} \
         rounds not kept), so that noise spreads over all of them.\n",
        rounds, r.config.cold_warmup
    );
    let _ = writeln!(
        s,
        "| binary | median (ms) | min (ms) | max (ms) | ÷ hello world |\n|---|---|---|---|---|"
    );
    let ms = |d: &std::time::Duration| d.as_secs_f64() * 1000.0;
    let row = |name: &str| c.iter().find(|x| x.name == name);
    if let Some(h) = row("lambda-hello") {
        let v: Vec<f64> = h.samples.iter().map(ms).collect();
        let _ = writeln!(
            s,
            "| lambda-hello | {:.2} | {:.2} | {:.2} | 1 |",
            cf.hello_ms,
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max)
        );
    }
    for (name, med, ratio) in &cf.functions {
        if let Some(x) = row(name) {
            let v: Vec<f64> = x.samples.iter().map(ms).collect();
            let _ = writeln!(
                s,
                "| {name} | {med:.2} | {:.2} | {:.2} | {ratio:.2} |",
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max)
            );
        }
    }
    let probe = |step: &str| {
        r.probes
            .iter()
            .find(|(s, _)| s == step)
            .map_or(f64::NAN, |(_, v)| median(v))
    };
    let (now, before, eager, clients, crm_http) = (
        probe("from-env"),
        probe("from-env-before"),
        probe("aws-eager"),
        probe("sdk-clients"),
        probe("crm-http"),
    );
    if !r.probes.is_empty() {
        let runs = r.probes.first().map_or(0, |(_, v)| v.len());
        let _ = writeln!(
            s,
            "\n**What a function does before its first event.** `main` builds the `App` \
             (`App::from_env`), then starts the runtime. Each step below is timed alone, in a fresh \
             process with the same environment (the root certificates are read once per process), \
             medians of {runs}:\n\n\
             | step | median (ms) |\n|---|---|\n\
             | `App::from_env()` now: settings and the SDK configuration; every client made on first use | {now:.2} |\n\
             | `App::from_env()` as it was: the same, plus the credentials chain, both SDK clients and the CRM HTTP client made at once | {before:.2} |\n\
             | the SDK configuration with its credentials chain built at once (`crmsync_aws::sdk::default_config`) | {eager:.2} |\n\
             | a Secrets Manager and a DynamoDB client | {clients:.2} |\n\
             | the CRM HTTP client made at once (`CrmHttp::build_client`: `reqwest` and its TLS roots) | {crm_http:.2} |\n"
        );
        let _ = writeln!(
            s,
            "Nearly all of each of these costs is reading and parsing the system's root certificates \
             (here `/etc/ssl/certs/ca-certificates.crt` and the {} entries of `/etc/ssl/certs`): the \
             credentials chain builds its web identity provider's STS client, whose configuration check \
             builds an HTTPS connector; each SDK client checks its connector the same way; and \
             `reqwest`'s platform verifier loads the roots when the client is built. None of it is needed \
             before an event, so `App::from_env` now makes the credentials chain on the first AWS call, \
             the SDK clients on first use (`shared/service/src/app.rs`: `LazyCredentialsChain`, \
             `Deferred`) and the CRM HTTP client on the first CRM call (`shared/crm/src/http.rs`), which \
             took {:.1} ms off every cold start here. The secret, the database pool, the credential vault \
             and the JWT verifier were already made on the first event that needs them; the first event \
             pays for what it uses.\n",
            cert_files(),
            before - now
        );
    }
    let _ = writeln!(
        s,
        "Target: within {TARGET_COLD_RATIO} × hello world for every function (medians of {} rounds; \
         single starts of the functions ranged over {:.2}–{:.2} ms): {} (worst {:.2} ×).\n",
        cf.rounds,
        cf.range.0,
        cf.range.1,
        met(cf.worst_ratio <= TARGET_COLD_RATIO),
        cf.worst_ratio
    );
    first_event_section(s, r, f);
}

fn first_event_section(s: &mut String, r: &Results, f: &Figures) {
    let (Some(fe), Some(ff)) = (&r.first_events, &f.first) else {
        return;
    };
    let precise = fe.iter().all(|x| x.precise);
    let _ = writeln!(
        s,
        "**The first event.** What a function's first event costs beyond a warm one: each binary again, \
         now with the environment of a deployment on the local stack (`AWS_ENDPOINT_URL` at moto, the \
         deployment's secret, the CRM sandbox), and a fake Runtime API that answers its first two \
         `next` polls with the same event and holds the third. The CPU time of an event runs from the \
         `next` poll that received it to the following one ({}, user and system time of all threads); \
         the wall time from handing the event out to its response. {} rounds (after {} not kept); \
         medians, and the extra CPU is the median of each round's first minus second:\n\n\
         | binary | event | first: CPU (ms) | second: CPU (ms) | extra CPU of the first (ms) | first: wall (ms) | second: wall (ms) | errors |\n\
         |---|---|---|---|---|---|---|---|",
        if precise {
            "`/proc/<pid>/task/*/schedstat`, nanoseconds"
        } else {
            "`/proc/<pid>/stat`, in clock ticks"
        },
        ff.rounds,
        r.config.cold_warmup
    );
    for (x, (name, first, second, extra)) in fe.iter().zip(&ff.rows) {
        let _ = writeln!(
            s,
            "| {name} | {} | {first:.2} | {second:.2} | {extra:.2} | {:.2} | {:.2} | {} |",
            x.event,
            median(&x.first_wall_ms),
            median(&x.second_wall_ms),
            x.errors
        );
    }
    let _ = writeln!(
        s,
        "\nTarget: the first event costs at most {TARGET_FIRST_EVENT_MS} ms of CPU more than a warm one, \
         for every function: {} (worst {} {:.2} ms). An event answered with an error counts as handled; \
         the events are the files of `events/` with a JWT of a user who has no integration.\n",
        met(ff
            .worst
            .as_ref()
            .is_some_and(|w| w.1 <= TARGET_FIRST_EVENT_MS)),
        ff.worst.as_ref().map_or("–", |w| w.0.as_str()),
        ff.worst.as_ref().map_or(f64::NAN, |w| w.1)
    );
}

/// How many entries `/etc/ssl/certs` has (the roots `rustls-native-certs` reads on Debian).
fn cert_files() -> usize {
    std::fs::read_dir("/etc/ssl/certs").map_or(0, |d| d.count())
}

fn memory_section(s: &mut String, r: &Results, f: &Figures) {
    let (Some(m), Some(mf)) = (&r.memory, &f.memory) else {
        return;
    };
    let _ = writeln!(
        s,
        "## 3. Memory\n\n\
         Peak resident set (`VmHWM`, read by the process itself at the end) of the process that runs one \
         whole sync through the `contacts-sync` handler, as in section 1, for {} sizes of the CRM. The \
         process holds what a function holds (tokio runtime, AWS SDK clients, CRM HTTP client, database \
         pool) plus the sync, which streams pages: a bounded number of pages read ahead and at most {} \
         contacts (`WRITE_BATCH`) being written are held at once, whatever the size of the CRM. During the \
         handler a thread of the process sampled its `RssAnon` and `RssFile` every 100 ms.\n",
        m.len(),
        thousands(crmsync_app::pull::WRITE_BATCH as u64)
    );
    let _ = writeln!(
        s,
        "| contacts | runs | peak RSS per run (MiB) | median (MiB) | file-backed, highest (MiB) | anonymous at the start → highest (MiB) | sync time (s) |\n|---|---|---|---|---|---|---|"
    );
    let kib = |runs: &[crate::pull::SyncRun], g: fn(&crate::pull::SyncRun) -> u64| {
        median(
            &runs
                .iter()
                .map(|x| g(x) as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )
    };
    for (n, runs) in m {
        let peaks: Vec<f64> = runs
            .iter()
            .map(|x| x.peak_rss_kib as f64 / 1024.0)
            .collect();
        let secs: Vec<f64> = runs.iter().map(|x| x.secs).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} → {:.1} | {} |",
            thousands(*n as u64),
            runs.len(),
            list(&peaks, 1),
            median(&peaks),
            kib(runs, |x| x.file_peak_kib),
            kib(runs, |x| x.anon_start_kib),
            kib(runs, |x| x.anon_peak_kib),
            list(&secs, 1)
        );
    }
    let _ = writeln!(
        s,
        "\nFlat within {:.0} %: {} ({:.0} % between the lowest and the highest median). Under \
         {TARGET_RSS_MIB} MiB, so that the functions run at {LAMBDA_MEMORY_MB:.0} MB: {} (highest \
         {:.1} MiB).\n",
        TARGET_RSS_SPREAD * 100.0,
        met(mf.spread <= TARGET_RSS_SPREAD),
        mf.spread * 100.0,
        met(mf.highest < TARGET_RSS_MIB),
        mf.highest
    );
    if let Some((n, runs)) = m.iter().max_by_key(|(n, _)| *n) {
        let file = kib(runs, |x| x.file_peak_kib);
        let (a0, a1) = (
            kib(runs, |x| x.anon_start_kib),
            kib(runs, |x| x.anon_peak_kib),
        );
        let _ = writeln!(
            s,
            "In the sync of {} contacts (medians of its runs), file-backed pages (the executable and its \
             libraries) were at most {file:.1} MiB; anonymous memory (heap, stacks) was {a0:.1} MiB when \
             the handler started and at most {a1:.1} MiB during the sync, {:.1} MiB more.\n",
            thousands(*n as u64),
            a1 - a0
        );
    }
}

fn push_section(s: &mut String, r: &Results, f: &Figures) {
    let Some(runs) = &r.push else {
        return;
    };
    let (limit, window) = (r.config.push_limit, r.config.push_window);
    let _ = writeln!(
        s,
        "## 4. Push pacing\n\n\
         The sandbox's Follow Up Boss is reset (no people) and limited to {limit} requests per {window} s \
         (its sliding window, for both its contexts): {:.2} requests/s. A new lead takes the searches of its \
         lookup by phone (one per written form of the number the CRM may hold, until one finds the person) \
         and the create; the limit allows that many requests per lead as measured below, so the allowed \
         rate of each run is the limit over its requests per lead. crmsync paces every call through the account's shared \
         bucket in DynamoDB (moto), sized from the limit the sandbox's headers advertise (a burst and a \
         refill that add up to the limit: `account_rate` in `shared/app/src/push.rs`). {} leads with \
         distinct phones go to one Follow Up Boss integration connected by OAuth; the time runs from the \
         first push to the last delivery, and afterwards every lead must be in the CRM exactly once.\n",
        f64::from(limit) / f64::from(window),
        runs.first().map_or(0, |p| p.leads)
    );
    let _ = writeln!(
        s,
        "| path | leads | time (s) | delivered | lost | doubled | CRM requests | requests per lead | 429s | leads/s | allowed leads/s | of the allowed rate |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (p, pf) in runs.iter().zip(&f.push) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.1} % |",
            p.mode.label(),
            p.leads,
            p.secs,
            p.delivered,
            p.missing,
            p.doubled,
            p.crm_requests,
            p.crm_requests as f64 / p.delivered.max(1) as f64,
            p.served_429,
            pf.rate,
            pf.allowed,
            pf.share * 100.0
        );
    }
    let all_met = f.push.iter().all(|p| p.share >= 0.9 && p.lossless);
    let used = runs
        .iter()
        .map(|p| {
            format!(
                "{} {:.1} requests per lead, {:.1} % of the limit",
                p.mode.label(),
                p.crm_requests as f64 / p.delivered.max(1) as f64,
                100.0 * p.crm_requests as f64 / p.secs / (f64::from(limit) / f64::from(window))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(
        s,
        "\nTarget: at least 90 % of the allowed rate with no lead lost: {}. The CRM requests the sandbox \
         counted, over each run's time: {used}.\n",
        met(all_met)
    );
}

fn size_section(s: &mut String, r: &Results) {
    let Some(sizes) = &r.sizes else {
        return;
    };
    let _ = writeln!(
        s,
        "## 5. Size\n\n\
         What is deployed: `cargo lambda build --release --arm64 --output-format zip` (cross-compiled with \
         zig; cargo-lambda adds `panic = \"abort\"` and `-C target-cpu=neoverse-n1` to the workspace's \
         release profile), from `$CARGO_TARGET_DIR/lambda/<function>/bootstrap.zip`; the `bootstrap` size \
         is the file inside the zip. The x86_64 binary is the one the cold starts ran.\n"
    );
    let _ = writeln!(
        s,
        "| function | arm64 bootstrap | arm64 zip | x86_64 binary |\n|---|---|---|---|"
    );
    let show = |b: Option<u64>| b.map_or_else(|| "not built".to_owned(), mib);
    for x in sizes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            x.name,
            show(x.bootstrap),
            show(x.zip),
            show(x.native)
        );
    }
    let _ = writeln!(
        s,
        "\nThe functions share one library (`crmsync-service` with the AWS SDK, tokio-postgres, rustls, \
         reqwest and the three CRM clients). No target is set for size; AWS documents a limit of \
         50 MB for a zipped deployment package.\n"
    );
}

/// The `Default:` of parameter `name` in the repository's `template.yaml`.
fn template_default(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(crate::root().join("template.yaml")).ok()?;
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim_end() != format!("  {name}:"));
    lines.next()?;
    lines.take_while(|l| l.starts_with("    ")).find_map(|l| {
        l.trim()
            .strip_prefix("Default:")
            .map(|v| v.trim().to_owned())
    })
}

/// Functions of `template.yaml` whose reserved concurrency is `DatabaseFunctionConcurrency`.
fn template_reserved_functions() -> usize {
    std::fs::read_to_string(crate::root().join("template.yaml"))
        .map(|t| {
            t.lines()
                .filter(|l| {
                    l.contains("ReservedConcurrentExecutions")
                        && l.contains("DatabaseFunctionConcurrency")
                })
                .count()
        })
        .unwrap_or(0)
}

/// "1 worker", "8 workers".
fn workers(n: usize) -> String {
    format!("{n} worker{}", if n == 1 { "" } else { "s" })
}

/// AWS Lambda quotas: concurrent executions per region, by default.
const LAMBDA_REGION_CONCURRENCY: f64 = 1000.0;
/// AWS, "Configuring scaling behavior for SQS event source mappings": a standard queue's event source
/// starts with 5 concurrent invocations, adds up to 300 a minute, and processes at most 1,000 batches at
/// once (`MaximumConcurrency` 2 to 1,000).
const SQS_START: f64 = 5.0;
const SQS_STEP_PER_MIN: f64 = 300.0;
const SQS_MAX: f64 = 1000.0;
/// Postgres connections a sync-worker invocation may hold (template.yaml, `SyncWorkerConcurrency`).
const WORKER_CONNECTIONS: f64 = 3.0;

fn scale_section(s: &mut String, r: &Results) {
    let Some(sc) = &r.scale else {
        return;
    };
    let cores = r.machine.cores.max(1) as f64;
    let _ = writeln!(
        s,
        "## 6. Scale: the sync queue and CRM webhooks\n\n\
         **Integrations through the queue.** One deployment holds {} Follow Up Boss integrations: one \
         connected by API key (`credentials::connect_api_key`) and synced in full once by the use case \
         (`pull::sync`), the others copies of its row written with SQL, each with a user of its own and its \
         credentials sealed for its own id by the store's vault (`Vault::seal`), so that every one is an \
         active, polled integration with a saved cursor. They all read the sandbox's one Follow Up Boss \
         account: {} generated records, {} of them with usable distinct phones. Before each round {} of its \
         records are changed (`POST /_sandbox/fub/touch`: a new last name and update time), so every \
         integration's incremental sync reads those changes. A round starts N worker processes \
         (`crmsync-bench scale-worker`), each with an `App` of its own (its own Postgres pool, secret and \
         SDK clients, as a Lambda instance) and the loop of Lambda's event source: `ReceiveMessage` (up to \
         10) from moto's SQS, each message as an SQS event of one record (the template's `BatchSize: 1`) to \
         the real `sync_worker::handle`, then `DeleteMessage` unless it was reported in \
         `batchItemFailures`. Then the real `scheduled-sync` handler runs as the dispatcher: it claims \
         every due integration and sends one message each (`SendMessageBatch`). The round's time runs from \
         the dispatcher's start until no integration is claimed any more; an integration counts as synced \
         when the round logged a successful pull of it. The sandbox's rate limit is lifted (as in section 1; \
         {} requests per {} s during the rounds): in production every integration is an account of its own with its own limit, while the sandbox \
         has one account, whose one window would stand for all {} accounts' (see the rate limits below).\n",
        thousands(sc.integrations as u64),
        thousands(sc.account_records),
        thousands(sc.account_contacts),
        sc.changes_per_round,
        thousands(sc.fub_limit.0),
        sc.fub_limit.1,
        thousands(sc.integrations as u64),
    );
    let _ = writeln!(
        s,
        "Seeding took {:.1} s.\n\n\
         | workers | records changed | time (s) | dispatcher (s), messages queued | synced | integrations/s | per worker | × 1st row | messages handled (failed) | records read | contacts upserted | CRM requests | 429s | CPU (s): workers, moto, Postgres, sandbox, bench | CPU ÷ (time × {cores:.0} cores) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        sc.seed_secs
    );
    let base = sc.rounds.first().map_or(f64::NAN, |x| x.rate());
    for x in &sc.rounds {
        let cpu = x.cpu_workers + x.cpu_moto + x.cpu_postgres + x.cpu_sandbox + x.cpu_bench;
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2}, {} | {} | {:.1} | {:.1} | {:.2} | {} ({}) | {} | {} | {} | {} | {:.1}, {:.1}, {:.1}, {:.1}, {:.1} | {:.0} % |",
            x.workers,
            x.changed,
            x.secs,
            x.dispatch_secs,
            x.dispatched["queued"]
                .as_u64()
                .map_or_else(|| "?".to_owned(), thousands),
            thousands(x.synced),
            x.rate(),
            x.rate() / x.workers as f64,
            x.rate() / base,
            thousands(x.messages),
            x.failed_messages,
            thousands(x.fetched),
            thousands(x.upserted),
            thousands(x.crm_requests),
            x.served_429,
            x.cpu_workers,
            x.cpu_moto,
            x.cpu_postgres,
            x.cpu_sandbox,
            x.cpu_bench,
            100.0 * cpu / (x.secs * cores)
        );
    }
    let Some(first) = sc.rounds.first() else {
        return;
    };
    let best = sc
        .rounds
        .iter()
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        .unwrap_or(first);
    let not_all: Vec<String> = sc
        .rounds
        .iter()
        .filter(|x| x.synced != sc.integrations as u64 || x.not_ok > 0 || x.failed_messages > 0)
        .map(|x| {
            format!(
                "{} workers: {} synced, {} pulls not successful, {} messages failed",
                x.workers, x.synced, x.not_ok, x.failed_messages
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "\n{}",
        if not_all.is_empty() {
            format!(
                "Every round synced all {} integrations, with no failed pull or message.",
                thousands(sc.integrations as u64)
            )
        } else {
            format!("Not every integration synced: {}.", not_all.join("; "))
        }
    );
    // What limits it here.
    let moto_share = best.cpu_moto / best.secs;
    let busy =
        (best.cpu_workers + best.cpu_moto + best.cpu_postgres + best.cpu_sandbox + best.cpu_bench)
            / (best.secs * cores);
    let _ = writeln!(
        s,
        "\n**What limits it here.** With {} workers the processes used {:.0} % of the machine's {cores:.0} \
         cores over the round (CPU seconds of the workers, moto, Postgres, the sandbox and the bench, over \
         the round's time times the cores); moto, which serves SQS and DynamoDB one request at a time, was \
         busy {:.0} % of the round's time (its CPU seconds over the round's). In the round with {}, each \
         integration cost the workers {:.1} ms of CPU ({:.2} s for {} integrations), Postgres {:.1} ms and \
         moto {:.1} ms (the workers' CPU includes their `ReceiveMessage` and `DeleteMessage` calls, which \
         Lambda's event source makes outside the function, and their polling of an empty queue). \
         `records read` is the pulls' `totalFetched`: every record of the pages read, here the account's \
         one page. On this machine the workers share {cores:.0} cores with everything else, so \
         adding workers stops paying once those cores are busy; in Lambda each worker is a machine share of \
         its own, and SQS and DynamoDB are not one process.\n",
        best.workers,
        100.0 * busy,
        100.0 * moto_share,
        workers(first.workers),
        1000.0 * first.cpu_workers / first.synced.max(1) as f64,
        first.cpu_workers,
        thousands(first.synced),
        1000.0 * first.cpu_postgres / first.synced.max(1) as f64,
        1000.0 * first.cpu_moto / first.synced.max(1) as f64,
    );
    // The CRM's rate limits.
    let per_sync = first.crm_requests as f64 / first.synced.max(1) as f64;
    let _ = writeln!(
        s,
        "**How a CRM's rate limit caps it.** A small account's incremental sync took {per_sync:.2} requests \
         to Follow Up Boss here ({} requests for {} integrations in the first round). Follow Up Boss limits \
         each account to 250 requests per 10 s with a registered system (`docs/crm-apis.md`, its rate-limits \
         notes): one account's limit allows {:.1} such syncs a second of that account, far more than the one \
         sync per run an account needs, so per-account limits do not cap the fleet: crmsync paces each \
         account in its own DynamoDB bucket (`crm:<provider>:<integration>`). What does cap it is a limit \
         shared by every account of one client: `docs/crm-apis.md` notes per-*system* ceilings in Follow Up \
         Boss shared by every account using that system (its example: `GET.people: 100`, the window not \
         given), and Lofty's limits are per *app* (Development 100 requests a minute, Production 500, \
         `docs/crm-apis.md` §2.3). At Lofty's Production 500 a minute and one request per sync (an account \
         of at most one page; Lofty always reads in full), {} Lofty integrations would take {:.1} minutes \
         whatever the workers, against a schedule of `{}` (template.yaml's `ScheduleExpression`); at \
         {per_sync:.2} requests a sync, a shared ceiling of 100 requests per 10 s would cap Follow Up Boss at \
         {:.1} integrations/s. The sandbox models one account per CRM, so this run cannot measure a shared \
         ceiling with distinct accounts; it lifts the limit and counts the requests ({} answers 429 in all \
         rounds).\n",
        thousands(first.crm_requests),
        thousands(first.synced),
        25.0 / per_sync.max(f64::MIN_POSITIVE),
        thousands(sc.integrations as u64),
        sc.integrations as f64 / 500.0,
        template_default("ScheduleExpression").unwrap_or_else(|| "?".to_owned()),
        10.0 / per_sync.max(f64::MIN_POSITIVE),
        sc.rounds.iter().map(|x| x.served_429).sum::<u64>(),
    );
    if let Some(c) = &sc.capped {
        let x = &c.round;
        let allowed = c.limit as f64 / c.window_secs as f64;
        let _ = writeln!(
            s,
            "**Under one shared limit, measured.** One more round with {}, where {} of the integrations \
             are active (the others paused) and the sandbox's account is limited to {} requests per {} s \
             (the per-account limit Follow Up Boss documents, `docs/crm-apis.md`), one window that every \
             integration's requests share, as a ceiling shared by many accounts would be. {} \
             {} of {} integrations synced in {:.1} s: {:.1} integrations/s, against {:.1} requests/s \
             allowed ({:.1} integrations/s at the {per_sync:.2} requests a sync measured above); the \
             sandbox served {} requests, {} of them 429s, and the round logged {} pulls that were not \
             successful. {}crmsync paces each integration in its own bucket, so integrations sharing one \
             CRM window each believe they have all of it: the CRM's 429s and `Retry-After` hold them back, \
             and a sync refused that way is put off (sent again after at least {} s, \
             `crmsync_app::queue::BUSY_DELAY`).\n",
            workers(x.workers),
            thousands(c.integrations as u64),
            c.limit,
            c.window_secs,
            if x.finished {
                "Every claim was released within the round.".to_owned()
            } else {
                format!(
                    "The round stopped waiting after {} s (`--capped-secs`) with integrations still queued.",
                    c.time_limit_secs
                )
            },
            thousands(x.synced),
            thousands(c.integrations as u64),
            x.secs,
            x.rate(),
            allowed,
            allowed / per_sync.max(f64::MIN_POSITIVE),
            thousands(x.crm_requests),
            thousands(x.served_429),
            thousands(x.not_ok),
            if x.served_429 == 0 {
                "The window was not reached: this machine synced fewer integrations a second than it \
                 allows, so here the limit did not cap the round. "
            } else {
                ""
            },
            crmsync_app::queue::BUSY_DELAY.as_secs(),
        );
    }
    // Lambda's concurrency in a real account.
    let cpu_ms = 1000.0 * first.cpu_workers / first.synced.max(1) as f64;
    let lambda_ms = cpu_ms * LAMBDA_MB_PER_VCPU / LAMBDA_MEMORY_MB;
    let per_worker = 1000.0 / lambda_ms;
    let cap: f64 = template_default("SyncWorkerConcurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let reserved_each: f64 = template_default("DatabaseFunctionConcurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let reserved_fns = template_reserved_functions() as f64;
    let n = sc.integrations as f64;
    let within = (n / (900.0 * per_worker)).ceil();
    let _ = writeln!(
        s,
        "**Lambda's concurrency in a real account.** A worker here spent {cpu_ms:.1} ms of CPU per \
         integration. A {LAMBDA_MEMORY_MB:.0} MB function gets {:.1} % of a vCPU (one vCPU at \
         {LAMBDA_MB_PER_VCPU:.0} MB, as AWS documents), so at this machine's speed one integration needs \
         {lambda_ms:.0} ms of a worker, and one worker syncs at most {per_worker:.1} integrations/s when its \
         time is CPU (in AWS each request to the CRM, Postgres, SQS and DynamoDB also waits on the network, \
         which this run does not measure, so these are upper bounds). The template caps the workers at \
         `SyncWorkerConcurrency` (default {cap:.0}, the event source's `MaximumConcurrency`): {cap:.0} \
         workers sync at most {:.1} integrations/s, {} integrations in {:.0} s. Syncing {} integrations \
         within a 900 s run needs at least {}, {:.0} Postgres connections at {WORKER_CONNECTIONS:.0} each \
         (template.yaml). AWS documents for a standard queue that the event source starts with \
         {SQS_START:.0} concurrent invocations and adds up to {SQS_STEP_PER_MIN:.0} a minute, to at most \
         {} (`MaximumConcurrency` 2 to 1,000), so that many are reached within {:.1} minutes. An \
         account has {} concurrent executions per region by default (AWS Lambda quotas), shared by every function of the account; the template \
         reserves `DatabaseFunctionConcurrency` ({reserved_each:.0}, default) for each of its \
         {reserved_fns:.0} other Postgres functions ({:.0} in all), which leaves {} for the workers and \
         everything else.\n",
        100.0 * LAMBDA_MEMORY_MB / LAMBDA_MB_PER_VCPU,
        cap * per_worker,
        thousands(sc.integrations as u64),
        n / (cap * per_worker),
        thousands(sc.integrations as u64),
        workers(within as usize),
        within * WORKER_CONNECTIONS,
        thousands(SQS_MAX as u64),
        ((within - SQS_START).max(0.0) / SQS_STEP_PER_MIN),
        thousands(LAMBDA_REGION_CONCURRENCY as u64),
        reserved_each * reserved_fns,
        thousands((LAMBDA_REGION_CONCURRENCY - reserved_each * reserved_fns) as u64),
    );
    if let Some(l) = &sc.latency {
        let row = |name: &str, xs: &[f64]| {
            format!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
                median(xs),
                percentile(xs, 0.99),
                xs.iter().copied().fold(f64::INFINITY, f64::min),
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            )
        };
        let _ = writeln!(
            s,
            "**A change in the CRM to its row, through the webhook.** Another deployment has a public \
             address (`CRM_WEBHOOK_BASE_URL`) at a local HTTP listener of the bench; one Follow Up Boss \
             integration connected by API key subscribed to the sandbox's webhooks on connect. {} times, one \
             after the other, one record of the account (one per distinct usable phone, in turn) is changed \
             with `POST /_sandbox/fub/touch` (a new last name); the sandbox sends its signed `peopleUpdated` \
             delivery to the listener, which hands it to the real `crm-webhook` handler as API Gateway would \
             (path, `FUB-Signature`, body) and answers with the handler's status. The time runs from the \
             change to the row of `contacts` holding the new name (the handler writes before it answers; a \
             query confirms the row). The sandbox gathers changes for {} ms before it sends them (its \
             `webhooks.batch_ms`), so the delivery waits up to that long by design; the listener got {} \
             deliveries.\n\n\
             | ms | median | p99 | min | max |\n|---|---|---|---|---|\n{}\n{}\n{}\n",
            l.to_row_ms.len(),
            l.batch_ms,
            l.deliveries,
            row("change to its row in `contacts`", &l.to_row_ms),
            row("change to the delivery at the listener", &l.to_delivery_ms),
            row("the `crm-webhook` handler", &l.handler_ms),
        );
    }
}
