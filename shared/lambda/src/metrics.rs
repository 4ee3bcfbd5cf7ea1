//! The metrics recorder of a function: the [`crmsync_app::metrics`] are printed to stdout in CloudWatch
//! Embedded Metric Format (by `metrics_cloudwatch_embedded`), at the end of each invocation and every
//! few seconds during a long one (the scheduled run), so CloudWatch Logs turns them into metrics without
//! an API call.

use std::io::Write;
use std::time::Duration;

use metrics_cloudwatch_embedded::{Builder, Collector};

/// How often a long invocation prints what it has recorded so far.
const AUTO_FLUSH: Duration = Duration::from_secs(10);

static COLLECTOR: std::sync::OnceLock<Option<&'static Collector>> = std::sync::OnceLock::new();

/// Installs the recorder, once per process (later calls do nothing). Must run inside the Tokio
/// runtime. A process that already has a recorder keeps it.
pub fn init() {
    COLLECTOR.get_or_init(|| {
        match Builder::new()
            .cloudwatch_namespace(crmsync_app::metrics::NAMESPACE)
            .with_auto_flush_writer(AUTO_FLUSH, || Line(Vec::new()))
            .init()
        {
            Ok(collector) => {
                crmsync_app::metrics::describe();
                Some(collector)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics are off: no recorder");
                None
            }
        }
    });
}

/// Prints what was recorded since the last flush (nothing when nothing was).
pub fn flush() {
    if let Some(Some(collector)) = COLLECTOR.get() {
        let mut out = Line(Vec::new());
        if let Err(e) = collector.flush(&mut out) {
            tracing::warn!(error = %e, "cannot print metrics");
        }
    }
}

/// Collects a flush and prints it with one write, so a log line from another task never lands in the
/// middle of a metric document.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&self.0);
            let _ = out.flush();
        }
    }
}
