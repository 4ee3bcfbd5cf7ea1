//! `crm-sandbox` CLI: serves the REX / Follow Up Boss / Lofty simulator on one port.

use crm_sandbox::SandboxConfig;

const USAGE: &str = "\
crm-sandbox: local simulator of the REX, Follow Up Boss and Lofty APIs

USAGE:
    crm-sandbox [--host 127.0.0.1] [--port 8787] [--auto-approve] [--seed N --count M]
                [--config FILE.json]

OPTIONS:
    --host H         address to bind (default 127.0.0.1)
    --port P         port to bind (default 8787; 0 = any free port)
    --auto-approve   OAuth authorize endpoints redirect back approved, no consent page
    --seed N         seed every provider with --count contacts generated from N
    --count M        number of contacts to seed per provider (default 1000 with --seed)
    --config FILE    SandboxConfig as JSON (partial; defaults fill the rest)
    -h, --help       this text
";

struct Args {
    host: String,
    port: u16,
    auto_approve: bool,
    seed: Option<u64>,
    count: Option<usize>,
    config: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 8787,
        auto_approve: false,
        seed: None,
        count: None,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--host" => a.host = value("--host")?,
            "--port" => {
                a.port = value("--port")?
                    .parse()
                    .map_err(|_| "--port must be a number 0..65535".to_string())?
            }
            "--auto-approve" => a.auto_approve = true,
            "--seed" => {
                a.seed = Some(
                    value("--seed")?
                        .parse()
                        .map_err(|_| "--seed must be an unsigned integer".to_string())?,
                )
            }
            "--count" => {
                a.count = Some(
                    value("--count")?
                        .parse()
                        .map_err(|_| "--count must be an unsigned integer".to_string())?,
                )
            }
            "--config" => a.config = Some(value("--config")?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut cfg = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {path}: {e}");
                    std::process::exit(2);
                }
            };
            match serde_json::from_str::<SandboxConfig>(&text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: invalid config {path}: {e}");
                    std::process::exit(2);
                }
            }
        }
        None => SandboxConfig::default(),
    };
    if args.auto_approve {
        cfg.auto_approve = true;
    }
    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot bind {}:{}: {e}", args.host, args.port);
            std::process::exit(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let seed = match (args.seed, args.count) {
        (Some(s), c) => Some((s, c.unwrap_or(1000))),
        (None, Some(c)) => Some((0, c)),
        (None, None) => None,
    };
    let base = format!("http://{addr}");
    println!("crm-sandbox listening on {base}");
    println!("  REX_AUTH_URL={base}/rex/oauth/authorize");
    println!("  REX_TOKEN_URL={base}/rex/oauth/token");
    println!("  REX_CONTACTS_ENDPOINT={base}/rex/v1/rex/contacts/list");
    println!("  FOLLOWUPBOSS_AUTH_URL={base}/fub/oauth/authorize");
    println!("  FOLLOWUPBOSS_TOKEN_URL={base}/fub/oauth/token");
    println!("  FOLLOWUPBOSS_API_BASE={base}/fub/v1");
    println!("  LOFTY_API_BASE={base}/lofty");
    println!("  control API: {base}/_sandbox");
    if let Some((s, c)) = seed {
        println!("  seeding every provider with {c} contacts from seed {s}");
    }
    if cfg.auto_approve {
        println!("  OAuth consent: auto-approve");
    }
    tokio::select! {
        r = crm_sandbox::serve_seeded(listener, cfg, seed) => {
            if let Err(e) = r {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        _ = tokio::signal::ctrl_c() => {
            println!("crm-sandbox: stopping");
        }
    }
}
