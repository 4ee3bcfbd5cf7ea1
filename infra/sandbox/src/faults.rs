//! Fault injection: one uniform draw per API request picks at most one fault.

use axum::http::StatusCode;

use crate::config::FaultConfig;
use crate::util::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Drop,
    Error(StatusCode),
    TooMany,
    Truncate,
}

impl Fault {
    pub(crate) fn name(self) -> Option<&'static str> {
        match self {
            Fault::None => None,
            Fault::Drop => Some("drop"),
            Fault::Error(_) => Some("error"),
            Fault::TooMany => Some("rate_429"),
            Fault::Truncate => Some("truncate"),
        }
    }
}

pub(crate) struct FaultState {
    pub cfg: FaultConfig,
    rng: SplitMix64,
    /// The fault just drawn happens after processing whatever `after_processing` says.
    forced_after: bool,
}

impl FaultState {
    pub(crate) fn new(cfg: FaultConfig) -> Self {
        let rng = match cfg.seed {
            Some(s) => SplitMix64::new(s),
            None => SplitMix64::from_entropy(),
        };
        FaultState {
            cfg,
            rng,
            forced_after: false,
        }
    }

    pub(crate) fn active(&self) -> bool {
        let c = &self.cfg;
        c.error_rate > 0.0
            || c.rate_429 > 0.0
            || c.drop_rate > 0.0
            || c.truncate_rate > 0.0
            || c.latency_ms > 0
            || c.fail_next > 0
            || c.drop_next_after_processing > 0
    }

    /// The fault for the next request, the latency to add, and whether the fault strikes
    /// after the request was processed. `is_write`: the request changes CRM data.
    pub(crate) fn draw(&mut self, is_write: bool) -> (Fault, u64, bool) {
        let (fault, latency) = self.draw_fault(is_write);
        let after = match fault {
            _ if self.forced_after => true,
            Fault::Drop | Fault::Error(_) => self.cfg.after_processing,
            _ => false,
        };
        self.forced_after = false;
        (fault, latency, after)
    }

    fn draw_fault(&mut self, is_write: bool) -> (Fault, u64) {
        if !self.active() {
            return (Fault::None, 0);
        }
        if is_write && self.cfg.drop_next_after_processing > 0 {
            self.cfg.drop_next_after_processing -= 1;
            self.forced_after = true;
            return (Fault::Drop, self.cfg.latency_ms);
        }
        if self.cfg.fail_next > 0 {
            self.cfg.fail_next -= 1;
            return (
                Fault::Error(StatusCode::SERVICE_UNAVAILABLE),
                self.cfg.latency_ms,
            );
        }
        let c = &self.cfg;
        let (latency, bands) = (
            c.latency_ms,
            [c.drop_rate, c.error_rate, c.rate_429, c.truncate_rate],
        );
        let u = self.rng.unit();
        let mut acc = 0.0;
        let mut which = bands.len();
        for (i, b) in bands.iter().enumerate() {
            acc += b;
            if u < acc {
                which = i;
                break;
            }
        }
        let fault = match which {
            0 => Fault::Drop,
            1 => Fault::Error(match self.rng.below(4) {
                0 | 1 => StatusCode::INTERNAL_SERVER_ERROR,
                2 => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            }),
            2 => Fault::TooMany,
            3 => Fault::Truncate,
            _ => Fault::None,
        };
        (fault, latency)
    }
}
