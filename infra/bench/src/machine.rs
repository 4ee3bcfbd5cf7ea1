//! What the benchmarks ran on.

use std::process::Command;

#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub cargo_lambda: String,
    pub moto: String,
    pub commit: String,
    pub load_before: String,
    /// The `[profile.release]` settings of the workspace's Cargo.toml, as `key = value` pairs.
    pub release_profile: String,
}

/// The `[profile.release]` section of `root/Cargo.toml`, its settings joined by commas.
fn release_profile(root: &std::path::Path) -> String {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let settings: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "[profile.release]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if settings.is_empty() {
        "Cargo's defaults".to_owned()
    } else {
        settings
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

pub fn describe(root: &std::path::Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0.0);
    let root = root.to_string_lossy();
    let mut commit = output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    if output("git", &["-C", &root, "status", "--porcelain"])
        .lines()
        .count()
        > 0
    {
        commit.push_str(" (with uncommitted changes)");
    }
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        rustc: output("rustc", &["--version"]),
        cargo_lambda: output("cargo", &["lambda", "--version"]),
        moto: output(
            "python3",
            &["-c", "import moto; print('moto ' + moto.__version__)"],
        ),
        commit,
        load_before: load_average(),
        release_profile: release_profile(std::path::Path::new(root.as_ref())),
    }
}
