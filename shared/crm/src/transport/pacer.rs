//! Pacing by the CRM's own rate-limit headers.
//!
//! * Follow Up Boss: `X-RateLimit-Remaining`, `X-RateLimit-Window` (seconds of a sliding window)
//!   and `X-RateLimit-Context` (each endpoint belongs to one context; contexts are independent).
//! * Lofty: `X-RateLimit-Remaining` and `X-RateLimit-Reset` (UTC epoch seconds).
//!
//! When a response says `Remaining: 0`, calls of that context wait until the window has passed
//! (FUB) or until the reset time (Lofty). A 429 blocks every context for its `Retry-After`
//! ("wait before *any* request"). The numbers are read from every response, never assumed.
//!
//! One [`Pacer`] exists per provider and account (see `CrmHttp`), shared by all clients of that
//! account in the process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// The context of a route whose responses did not name one.
const DEFAULT_CONTEXT: &str = "default";
/// FUB's documented window, when a response names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Lofty's documented window, when a response has neither a window nor a reset time.
const DEFAULT_RESET: Duration = Duration::from_secs(60);
/// No header can make us wait longer than this.
const MAX_PACE: Duration = Duration::from_secs(15 * 60);

/// Rate-limit state of one provider account.
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The context each route was last seen in (FUB `X-RateLimit-Context`).
    route_context: HashMap<&'static str, String>,
    /// Context → no call before this instant.
    blocked: HashMap<String, Instant>,
    /// No call of any context before this instant (429 `Retry-After`).
    all: Option<Instant>,
    /// Context → the limit the CRM advertises: requests per window.
    advertised: HashMap<String, (u32, Duration)>,
}

impl Pacer {
    pub fn new() -> Self {
        Pacer::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a set of deadlines: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a call on `route` has to wait at `now` (zero when it may go).
    pub fn delay(&self, route: &str, now: Instant) -> Duration {
        let st = self.state();
        let context = st
            .route_context
            .get(route)
            .map_or(DEFAULT_CONTEXT, String::as_str);
        let until = [st.blocked.get(context).copied(), st.all]
            .into_iter()
            .flatten()
            .max();
        until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// Reads the rate-limit headers of a response to a call on `route`, received at `now`
    /// (`wall` is the same moment on the wall clock, to read epoch reset times).
    pub fn observe(
        &self,
        route: &'static str,
        headers: &HeaderMap,
        now: Instant,
        wall: SystemTime,
    ) {
        let context = header(headers, "x-ratelimit-context")
            .map_or_else(|| DEFAULT_CONTEXT.to_owned(), str::to_owned);
        let mut st = self.state();
        st.route_context.insert(route, context.clone());
        if let Some(limit) = header(headers, "x-ratelimit-limit").and_then(number) {
            // FUB names its window; Lofty's is a minute (its headers give a reset time instead).
            let window = header(headers, "x-ratelimit-window")
                .and_then(number)
                .map_or(DEFAULT_RESET, seconds)
                .max(Duration::from_millis(1));
            st.advertised.insert(
                context.clone(),
                (limit.min(f64::from(u32::MAX)) as u32, window),
            );
        }
        let Some(remaining) = header(headers, "x-ratelimit-remaining").and_then(number) else {
            return;
        };
        if remaining > 0.0 {
            st.blocked.remove(&context);
            return;
        }
        let wait = match (
            header(headers, "x-ratelimit-window").and_then(number),
            header(headers, "x-ratelimit-reset").and_then(number),
        ) {
            (Some(window), _) => seconds(window),
            (None, Some(reset)) => until_reset(reset, wall),
            (None, None) if context == DEFAULT_CONTEXT => DEFAULT_RESET,
            (None, None) => DEFAULT_WINDOW,
        };
        let until = now + wait.min(MAX_PACE);
        let slot = st.blocked.entry(context).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// The most restrictive limit the CRM has advertised for this account (requests per window),
    /// if any response carried `X-RateLimit-Limit`.
    pub fn advertised_rate(&self) -> Option<(u32, Duration)> {
        self.state().advertised.values().copied().min_by(|a, b| {
            (f64::from(a.0) / a.1.as_secs_f64()).total_cmp(&(f64::from(b.0) / b.1.as_secs_f64()))
        })
    }

    /// Blocks every route until `until` (a 429 with `Retry-After`).
    pub fn block_all(&self, until: Instant) {
        let mut st = self.state();
        st.all = Some(st.all.map_or(until, |a| a.max(until)));
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s)
        .unwrap_or(MAX_PACE)
        .min(MAX_PACE)
}

/// The wait until a reset given as epoch seconds (or epoch milliseconds), or as seconds from
/// now when the number is too small to be a date.
fn until_reset(reset: f64, wall: SystemTime) -> Duration {
    let now = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let at = if reset > 1e12 {
        reset / 1000.0
    } else if reset > 1e9 {
        reset
    } else {
        return seconds(reset);
    };
    seconds((at - now).max(0.0))
}

/// The `Retry-After` of a response: delay-seconds or an HTTP-date (RFC 9110, 10.2.3), the wait capped
/// as every other; a date already past means now.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, wall: SystemTime) -> Option<Duration> {
    let raw = header(headers, "retry-after")?;
    if let Some(secs) = number(raw) {
        return Some(seconds(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(
        at.duration_since(wall)
            .unwrap_or(Duration::ZERO)
            .min(MAX_PACE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn fub_exhausted_context_waits_for_its_window_only() {
        let p = Pacer::new();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        p.observe(
            "people.list",
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-window", "10"),
                ("x-ratelimit-context", "global"),
            ]),
            t0,
            wall,
        );
        p.observe(
            "events.create",
            &headers(&[
                ("x-ratelimit-remaining", "12"),
                ("x-ratelimit-window", "10"),
                ("x-ratelimit-context", "events"),
            ]),
            t0,
            wall,
        );
        assert_eq!(p.delay("people.list", t0), Duration::from_secs(10));
        assert_eq!(
            p.delay("people.list", t0 + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        // Another context is independent.
        assert_eq!(p.delay("events.create", t0), Duration::ZERO);
        assert_eq!(
            p.delay("people.list", t0 + Duration::from_secs(11)),
            Duration::ZERO
        );

        // A later response with room again lifts the block.
        p.observe(
            "people.list",
            &headers(&[
                ("x-ratelimit-remaining", "5"),
                ("x-ratelimit-context", "global"),
            ]),
            t0,
            wall,
        );
        assert_eq!(p.delay("people.list", t0), Duration::ZERO);
    }

    #[test]
    fn lofty_waits_until_the_epoch_reset() {
        let p = Pacer::new();
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        p.observe(
            "leads.list",
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000042"),
            ]),
            t0,
            wall,
        );
        assert_eq!(p.delay("leads.list", t0), Duration::from_secs(42));
        assert_eq!(p.delay("leads.create", t0), Duration::from_secs(42));
        // A reset in the past does not block; absurd values are capped.
        let q = Pacer::new();
        q.observe(
            "leads.list",
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1600000000"),
            ]),
            t0,
            wall,
        );
        assert_eq!(q.delay("leads.list", t0), Duration::ZERO);
        q.observe(
            "leads.list",
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-window", "1e12"),
            ]),
            t0,
            wall,
        );
        assert_eq!(q.delay("leads.list", t0), MAX_PACE);
    }

    #[test]
    fn retry_after_blocks_everything_and_junk_headers_are_ignored() {
        let p = Pacer::new();
        let t0 = Instant::now();
        p.observe(
            "x",
            &headers(&[("x-ratelimit-remaining", "lots")]),
            t0,
            SystemTime::now(),
        );
        assert_eq!(p.delay("x", t0), Duration::ZERO);
        p.block_all(t0 + Duration::from_secs(3));
        p.block_all(t0 + Duration::from_secs(1));
        assert_eq!(p.delay("anything", t0), Duration::from_secs(3));
        assert_eq!(
            retry_after(&headers(&[("retry-after", " 7 ")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn retry_after_takes_an_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
        let wall = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let at = |v: &str| retry_after_at(&headers(&[("retry-after", v)]), wall);
        assert_eq!(
            at("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(
            at("Sunday, 06-Nov-94 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at("Sun Nov  6 08:50:07 1994"),
            Some(Duration::from_secs(30))
        );
        // A date past (or now) means retry now.
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(at("Sat, 05 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        // Capped as delay-seconds are.
        assert_eq!(at("Mon, 07 Nov 1994 08:49:37 GMT"), Some(MAX_PACE));
        assert_eq!(at("86400"), Some(MAX_PACE));
        assert_eq!(at("Sun, 06 Nov 1994 25:00:00 GMT"), None);
        assert_eq!(at("-5"), None);
    }

    #[test]
    fn the_most_restrictive_advertised_limit_wins() {
        let p = Pacer::new();
        assert_eq!(p.advertised_rate(), None);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "250".parse().unwrap());
        h.insert("x-ratelimit-remaining", "249".parse().unwrap());
        h.insert("x-ratelimit-window", "10".parse().unwrap());
        h.insert("x-ratelimit-context", "global".parse().unwrap());
        p.observe("people.list", &h, Instant::now(), SystemTime::now());
        assert_eq!(p.advertised_rate(), Some((250, Duration::from_secs(10))));
        h.insert("x-ratelimit-limit", "50".parse().unwrap());
        h.insert("x-ratelimit-context", "events".parse().unwrap());
        p.observe("events.create", &h, Instant::now(), SystemTime::now());
        assert_eq!(p.advertised_rate(), Some((50, Duration::from_secs(10))));
        // Lofty: no window header, a minute.
        let lofty = Pacer::new();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "100".parse().unwrap());
        lofty.observe("leads.list", &h, Instant::now(), SystemTime::now());
        assert_eq!(
            lofty.advertised_rate(),
            Some((100, Duration::from_secs(60)))
        );
    }
}
