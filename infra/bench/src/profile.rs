//! A CPU profile of the sync's process: `perf record` samples with their call chains (unwound from
//! `.eh_frame`, so stripped dependencies still unwind), each sample put under the first frame, from
//! the leaf up, that says what the code is doing: an allocation made while parsing a phone number
//! counts as phone parsing.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::Error;

/// Where the samples went.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub samples: u64,
    /// (what, share of the samples in %), largest first.
    pub categories: Vec<(String, f64)>,
    /// (share %, function) of the functions the samples were in (self time), largest first.
    pub top: Vec<(f64, String)>,
}

pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `perf record` arguments for a profile of a child process.
pub const RECORD: [&str; 6] = ["record", "-q", "-F", "499", "--call-graph", "dwarf,16384"];

/// What a frame's code does, if the frame says.
fn category(symbol: &str) -> Option<&'static str> {
    let has = |needles: &[&str]| needles.iter().any(|n| symbol.contains(n));
    if has(&["rlibphonenumber::", "phonenumber::", "regex_cache::"]) {
        Some("phone numbers: parsing and validation (`rlibphonenumber`, its regular expressions)")
    } else if has(&["serde_json::", "crmsync_domain::loose"]) {
        Some("JSON: parsing the pages into borrowed `Loose` values (and other JSON), dropping them")
    } else if has(&[
        "tokio_postgres::",
        "postgres_protocol::",
        "postgres_types::",
        "deadpool_postgres::",
        "crmsync_store::",
    ]) {
        Some("Postgres client (`tokio-postgres`: statements, parameters, results)")
    } else if has(&["hyper::", "hyper_util::", "h2::", "reqwest::", "httparse::"]) {
        Some("HTTP client (`reqwest`, `hyper`)")
    } else if has(&["crmsync_domain::", "crmsync_crm::mapping", "::mapping::"]) {
        Some("mapping, other than phones (`crmsync_domain`, each CRM's `mapping`)")
    } else if has(&["crmsync_crm::"]) {
        Some("CRM client (request, copying the page's records out of the response)")
    } else if has(&["crmsync_app::", "crmsync_lambda::"]) {
        Some("the sync loop (cursor, page state, handler)")
    } else if has(&["tokio::", "mio::"]) {
        Some("async runtime (`tokio`: scheduling, I/O readiness)")
    } else {
        None
    }
}

/// Removes `+0x…` offsets and `::h<hash>` suffixes, and shortens long generic names.
fn short(symbol: &str) -> String {
    let mut s = symbol.split("+0x").next().unwrap_or(symbol).to_owned();
    if let Some(i) = s.rfind("::h")
        && s.len() - i == 19
    {
        s.truncate(i);
    }
    if s.len() > 100 {
        let mut cut = 97;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The function of a `perf script` frame line: `\t addr function+0x12 (dso)`.
fn frame(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    let (_addr, rest) = line.split_once(' ')?;
    let (function, dso) = match rest.rfind(" (") {
        Some(i) => (&rest[..i], rest[i + 2..].trim_end_matches(')')),
        None => (rest, ""),
    };
    Some((short(function), dso.to_owned()))
}

/// Sums the samples of `data` (a `perf record --call-graph` file).
pub fn summarize(data: &Path) -> Result<Profile, Error> {
    let out = Command::new("perf")
        .args(["script", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!("perf script failed: {}", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut categories: Vec<(String, u64)> = Vec::new();
    let mut leaves: Vec<(String, u64)> = Vec::new();
    let mut samples = 0u64;
    let bump =
        |list: &mut Vec<(String, u64)>, key: &str| match list.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 += 1,
            None => list.push((key.to_owned(), 1)),
        };
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        if lines.next().is_none() {
            continue;
        }
        let frames: Vec<(String, String)> = lines.filter_map(frame).collect();
        let Some((leaf, leaf_dso)) = frames.first() else {
            continue;
        };
        samples += 1;
        bump(&mut leaves, leaf);
        let what = frames
            .iter()
            .find_map(|(f, _)| category(f))
            .unwrap_or_else(|| {
                if leaf_dso.contains("kernel") {
                    "kernel (system calls: network, memory)"
                } else if frames.iter().any(|(f, _)| f.starts_with("std::thread")) {
                    "other threads"
                } else {
                    "other"
                }
            });
        bump(&mut categories, what);
    }
    let share = |n: u64| 100.0 * n as f64 / samples.max(1) as f64;
    let mut categories: Vec<(String, f64)> =
        categories.into_iter().map(|(k, n)| (k, share(n))).collect();
    categories.sort_by(|a, b| b.1.total_cmp(&a.1));
    leaves.sort_by_key(|l| std::cmp::Reverse(l.1));
    Ok(Profile {
        samples,
        categories,
        top: leaves
            .into_iter()
            .take(12)
            .map(|(k, n)| (share(n), k))
            .collect(),
    })
}
