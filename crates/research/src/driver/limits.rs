//! When the loop stops: the limits of the settings (experiments, hours, cost, the stop file,
//! invalid answers in a row) and a signal.

use std::path::Path;
use std::time::Instant;

use crate::results::Record;
use crate::settings::Settings;

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `max_experiments` reached.
    MaxExperiments,
    /// `hours` reached.
    Hours,
    /// Cost ceiling reached.
    Cost,
    /// The stop file appeared.
    StopFile,
    /// SIGINT or SIGTERM.
    Signal,
    /// Too many invalid answers in a row.
    InvalidStreak(u32),
    /// The builtin search has nothing left to try.
    Exhausted(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::MaxExperiments => write!(f, "reached the experiment limit"),
            StopReason::Hours => write!(f, "reached the wall-clock limit"),
            StopReason::Cost => write!(f, "reached the cost ceiling"),
            StopReason::StopFile => write!(f, "found the stop file"),
            StopReason::Signal => write!(f, "stopped by a signal"),
            StopReason::InvalidStreak(n) => {
                write!(f, "{n} invalid answers in a row; check the proposer's model and the prompts")
            }
            StopReason::Exhausted(m) => write!(f, "{m}"),
        }
    }
}

/// The first stop condition that holds before the next experiment, if any; `in_flight`
/// experiments count toward the experiment limit.
pub(super) fn check(
    ws: &Path,
    s: &Settings,
    records: &[Record],
    in_flight: usize,
    started: Instant,
    invalid_streak: u32,
) -> Option<StopReason> {
    if super::signals::requested() {
        return Some(StopReason::Signal);
    }
    if ws.join(&s.run.stop_file).exists() {
        return Some(StopReason::StopFile);
    }
    if let Some(n) = s.run.max_experiments {
        if (records.len() + in_flight) as u64 >= n as u64 {
            return Some(StopReason::MaxExperiments);
        }
    }
    if let Some(h) = s.run.hours {
        if started.elapsed().as_secs_f64() >= h * 3600.0 {
            return Some(StopReason::Hours);
        }
    }
    if let Some(c) = s.run.max_cost_usd {
        if records.iter().map(|r| r.cost_usd).sum::<f64>() >= c {
            return Some(StopReason::Cost);
        }
    }
    if invalid_streak >= s.run.max_invalid_streak.max(1) {
        return Some(StopReason::InvalidStreak(invalid_streak));
    }
    None
}
