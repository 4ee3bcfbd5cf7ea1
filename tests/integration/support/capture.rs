//! Log capture for the whole test process: every `tracing` event of crmsync (all levels) and of its
//! dependencies (`info` and above, as deployed) is written, as text, to a buffer the tests search for
//! secrets. What `RUST_LOG` asks for (default `warn`) is still printed through the test writer.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What is captured: our crates at every level, the rest at the production default.
const CAPTURE_FILTER: &str = "info,crmsync_lambda=trace,crmsync_app=trace,crmsync_store=trace,crmsync_aws=trace,crmsync_crm=trace,\
                              crmsync_domain=trace";

fn buffer() -> &'static Mutex<Vec<u8>> {
    static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUFFER.get_or_init(Default::default)
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        buffer()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the process's subscriber (once; later calls do nothing).
pub fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let printed =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(printed),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(|| CaptureWriter)
                    .with_filter(tracing_subscriber::EnvFilter::new(CAPTURE_FILTER)),
            )
            .try_init();
    });
}

/// Where the log is now: pass it to [`since`] to read what was logged after.
pub fn mark() -> usize {
    buffer().lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Everything logged (by any test of this process) since `mark`.
pub fn since(mark: usize) -> String {
    let buf = buffer().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buf[mark.min(buf.len())..]).into_owned()
}

/// A secret a test used, and a name to report it by (the value itself is never printed).
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub value: String,
}

impl Secret {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Secret {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The forms a secret can leak in: as is, base64 (HTTP Basic, JSON bytes), hex, URL-encoded.
fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut forms = vec![value.to_owned()];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        forms.push(engine.encode(value));
        forms.push(engine.encode(format!("{value}:")));
    }
    forms.push(value.bytes().map(|b| format!("{b:02x}")).collect());
    forms.push(form_urlencoded::byte_serialize(value.as_bytes()).collect());
    // Short values would match by chance in encodings; they are still searched as they are.
    forms.retain(|f| f.len() >= 12 || f == value);
    forms.sort();
    forms.dedup();
    forms
}

/// The names of the secrets found in `text` (in any of their forms), with the place they were found
/// in, the secret itself masked.
pub fn leaks(text: &str, secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        if secret.value.len() < 8 {
            continue;
        }
        for form in forms(&secret.value) {
            if let Some(at) = text.find(&form) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                let line = text[line_start..line_end].replace(&form, "<SECRET>");
                found.push(format!(
                    "{} in: {}",
                    secret.name,
                    line.chars().take(400).collect::<String>()
                ));
                break;
            }
        }
    }
    found
}

/// Panics if any secret appears in any of `places` (what, text), listing every one found.
#[track_caller]
pub fn assert_no_leak(places: &[(String, String)], secrets: &[Secret]) {
    let found: Vec<String> = places
        .iter()
        .flat_map(|(what, text)| {
            leaks(text, secrets)
                .into_iter()
                .map(move |leak| format!("{what}: {leak}"))
        })
        .collect();
    assert!(found.is_empty(), "secrets found: {found:#?}");
}
