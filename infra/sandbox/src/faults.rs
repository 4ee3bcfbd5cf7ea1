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
}

impl FaultState {
    pub(crate) fn new(cfg: FaultConfig) -> Self {
        let rng = match cfg.seed {
            Some(s) => SplitMix64::new(s),
            None => SplitMix64::from_entropy(),
        };
        FaultState { cfg, rng }
    }

    pub(crate) fn active(&self) -> bool {
        let c = &self.cfg;
        c.error_rate > 0.0
            || c.rate_429 > 0.0
            || c.drop_rate > 0.0
            || c.truncate_rate > 0.0
            || c.latency_ms > 0
            || c.fail_next > 0
    }

    /// The fault for the next request and the latency to add.
    pub(crate) fn draw(&mut self) -> (Fault, u64) {
        if !self.active() {
            return (Fault::None, 0);
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
