//! Phone parsing cost: the first parse in a fresh process, then microseconds per parse over
//! 200,000 generated mixed inputs (US, AU, GB, NZ and international numbers in the forms CRMs
//! hold, with invalid and junk entries), each read in a default region as a sync reads it.
//!
//! `cargo run --release -p crmsync-domain --example phone_bench [-- --dump FILE]`
//!
//! `--only N` generates inputs of class N only; `--classes` prints the time per class of input; `--dump FILE` writes each input, region and result, one a line, to compare two parsers.

use std::io::Write;
use std::time::Instant;

use crmsync_domain::{PhoneNumber, Region};

const INPUTS: usize = 200_000;

fn inputs(only: Option<usize>) -> Vec<(String, Region, usize)> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = Vec::with_capacity(INPUTS);
    while out.len() < INPUTS {
        let r = next();
        let d = |n: u64, width: usize| format!("{:0width$}", n % 10u64.pow(width as u32));
        let a = next();
        let class = only.unwrap_or((r % 16) as usize);
        let (raw, region) = match class {
            0 => (
                format!("({}) {}-{}", 200 + a % 800, d(a >> 10, 3), d(a >> 20, 4)),
                Region::US,
            ),
            1 => (
                format!("{}-{}-{}", 200 + a % 800, d(a >> 10, 3), d(a >> 20, 4)),
                Region::US,
            ),
            2 => (
                format!("+1 {} {} {}", 200 + a % 800, d(a >> 10, 3), d(a >> 20, 4)),
                Region::US,
            ),
            3 => (format!("{}", 2_000_000_000 + a % 8_000_000_000), Region::US),
            4 => (
                format!("04{} {} {}", d(a, 2), d(a >> 10, 3), d(a >> 20, 3)),
                Region::AU,
            ),
            5 => (
                format!("+61 4{} {} {}", d(a, 2), d(a >> 10, 3), d(a >> 20, 3)),
                Region::AU,
            ),
            6 => (
                format!("(0{}) {} {}", 2 + a % 4, d(a >> 10, 4), d(a >> 20, 4)),
                Region::AU,
            ),
            7 => (format!("+614{}", d(a, 8)), Region::AU),
            8 => (format!("07{} {}", d(a, 3), d(a >> 12, 6)), Region::GB),
            9 => (format!("+44 20 {} {}", d(a, 4), d(a >> 14, 4)), Region::US),
            10 => (
                format!("02{} {} {}", a % 10, d(a >> 4, 3), d(a >> 14, 4)),
                Region::NZ,
            ),
            11 => (
                format!("+49 15{} {} {}", a % 10, d(a >> 4, 4), d(a >> 18, 4)),
                Region::US,
            ),
            12 => (
                format!("{}-{} x{}", 200 + a % 800, d(a >> 10, 7), a % 1000),
                Region::US,
            ),
            13 => (d(a, 5 + (a % 7) as usize), Region::AU),
            14 => (format!("call {}", d(a, 6)), Region::US),
            _ => (format!("+{}", d(a, 6 + (a % 10) as usize)), Region::US),
        };
        out.push((raw, region, class));
    }
    out
}

fn main() {
    let dump = std::env::args()
        .skip_while(|a| a != "--dump")
        .nth(1)
        .map(std::path::PathBuf::from);

    let started = Instant::now();
    let first = PhoneNumber::parse("(415) 555-0123", Region::US);
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(first.is_ok());
    let started = Instant::now();
    let _ = PhoneNumber::parse("0412 345 678", Region::AU);
    let second_ms = started.elapsed().as_secs_f64() * 1e3;

    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .map(|c| c.parse().expect("--only takes a class, 0 to 15"));
    let inputs = inputs(only);
    let started = Instant::now();
    let mut per_class = [(0u32, 0f64); 16];
    let results: Vec<_> = inputs
        .iter()
        .map(|(raw, region, class)| {
            let t = Instant::now();
            let r = PhoneNumber::parse(raw, *region);
            per_class[*class].0 += 1;
            per_class[*class].1 += t.elapsed().as_secs_f64();
            r
        })
        .collect();
    let elapsed = started.elapsed();
    let valid = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "first parse {first_ms:.2} ms, second {second_ms:.3} ms; {} inputs: {:.3} µs per parse, {valid} valid",
        inputs.len(),
        elapsed.as_secs_f64() * 1e6 / inputs.len() as f64
    );

    if std::env::args().any(|a| a == "--classes") {
        for (class, (n, secs)) in per_class.iter().enumerate() {
            println!("  class {class:2}: {:.3} µs", secs * 1e6 / f64::from(*n));
        }
    }

    if let Some(path) = dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("dump file"));
        for ((raw, region, _), result) in inputs.iter().zip(&results) {
            let shown = match result {
                Ok(p) => p.as_str().to_owned(),
                Err(_) => "invalid".to_owned(),
            };
            writeln!(f, "{raw}\t{region}\t{shown}").expect("write dump");
        }
    }
}
