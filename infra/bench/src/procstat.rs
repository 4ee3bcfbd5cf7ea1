//! CPU time and memory of processes, from `/proc` and `getrusage`.

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) used by process `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / ticks_per_second())
}

/// CPU seconds of `pid`, of its children that have exited (and were waited for), and of its live
/// children.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let own: u64 = f.iter().skip(11).take(4).sum();
    let mut live = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(cf) = stat_fields(child)
                && cf.get(1).copied() == Some(u64::from(pid))
            {
                live += cf.iter().skip(11).take(2).sum::<u64>();
            }
        }
    }
    (own + live) as f64 / ticks_per_second()
}

/// `VmHWM` (peak resident set) of this process, in KiB.
pub fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// CPU seconds (user, system) of this process so far.
pub fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if !ok {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// `RssAnon` and `RssFile` of this process now, in KiB.
pub fn own_rss_parts_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// What [`RssSampler`] saw, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct RssSamples {
    pub anon_start_kib: u64,
    pub anon_peak_kib: u64,
    pub file_peak_kib: u64,
}

/// Samples this process's anonymous and file-backed resident memory on a thread of its own.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<RssSamples>,
}

impl RssSampler {
    pub fn start(every: std::time::Duration) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let (anon0, _) = own_rss_parts_kib().unwrap_or_default();
        let thread = std::thread::spawn(move || {
            let mut seen = RssSamples {
                anon_start_kib: anon0,
                ..RssSamples::default()
            };
            loop {
                let done = flag.load(Ordering::Relaxed);
                if let Some((anon, file)) = own_rss_parts_kib() {
                    seen.anon_peak_kib = seen.anon_peak_kib.max(anon);
                    seen.file_peak_kib = seen.file_peak_kib.max(file);
                }
                if done {
                    return seen;
                }
                std::thread::sleep(every);
            }
        });
        RssSampler { stop, thread }
    }

    pub fn stop(self) -> RssSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// CPU time (user and system) of process `pid` in seconds, with nanosecond resolution: the sum of
/// `/proc/<pid>/task/*/schedstat` (time on a CPU, of the threads alive now); `None` without
/// schedstat.
pub fn precise_cpu_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    let mut any = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
            && let Some(v) = text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
        {
            ns += v;
            any = true;
        }
    }
    any.then_some(ns as f64 / 1e9)
}
