//! From the recorded calls and body runs to the figures of each fault:
//! calls, failures, latency quantiles, hit-ratio recovery and surplus body
//! runs, per phase (before, during, after the fault).

use std::collections::HashSet;

use super::workload::{Call, Kind, Outcome, Run};
use super::Fault;
use crate::hist::Hist;

/// Width of the buckets the hit ratio is followed in.
pub const BUCKET_US: u64 = 250_000;
/// Longest window in which a key needs at most one body run (shorter than
/// the TTL, so an entry expires at most once in it).
pub const WINDOW_US: u64 = 1_000_000;

/// When one fault was injected and lifted, in µs since the start.
#[derive(Debug, Clone)]
pub struct FaultTimes {
    pub fault: Fault,
    /// Start of the "before" phase.
    pub before_us: u64,
    /// The fault's injection (end of "before", start of "during").
    pub start_us: u64,
    /// Every action that may have lost entries or broken connections:
    /// the injection, its repetitions, the lifting.
    pub actions_us: Vec<u64>,
    /// The fault's lifting (start of "after").
    pub end_us: u64,
    /// End of the "after" phase.
    pub after_us: u64,
    /// What the injector checked at each step.
    pub notes: Vec<String>,
}

/// The figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub calls: u64,
    pub wrong: u64,
    pub panics: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub runs: u64,
    /// Body runs beyond one per key and window (see [`surplus_runs`]).
    pub surplus: u64,
    /// Share of calls that did not run a body.
    pub hit_ratio: f64,
}

/// The figures of one fault.
#[derive(Debug, Clone)]
pub struct FaultFigures {
    pub times: FaultTimes,
    pub before: Phase,
    pub during: Phase,
    pub after: Phase,
    /// Lowest hit ratio of a bucket from the injection to the end.
    pub min_hit_ratio: f64,
    pub recovery: Recovery,
}

/// When the hit ratio was back above 90% of its level before the fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recovery {
    /// It never fell below.
    NeverBelow,
    /// This many seconds after the lifting (two buckets in a row).
    After(f64),
    /// Not within the after phase.
    NotWithin,
}

fn phase(calls: &[Call], runs: &[Run], from: u64, to: u64, cuts: &[u64]) -> Phase {
    let mut hist = Hist::new();
    let mut p = Phase::default();
    for c in calls.iter().filter(|c| (from..to).contains(&c.t_us)) {
        p.calls += 1;
        match c.outcome {
            Outcome::Ok => {}
            Outcome::Wrong => p.wrong += 1,
            Outcome::Panic => p.panics += 1,
        }
        hist.record_ns(u64::from(c.latency_us) * 1000);
    }
    let in_phase: Vec<Run> = runs
        .iter()
        .filter(|r| (from..to).contains(&r.t_us))
        .copied()
        .collect();
    p.runs = in_phase.len() as u64;
    p.surplus = surplus_runs(&in_phase, from, to, cuts);
    p.p50_us = hist.quantile(0.5) / 1000;
    p.p99_us = hist.quantile(0.99) / 1000;
    p.max_us = hist.max() / 1000;
    p.hit_ratio = hit_ratio(p.calls, p.runs);
    fn hit_ratio(calls: u64, runs: u64) -> f64 {
        if calls == 0 {
            return 0.0;
        }
        1.0 - (runs.min(calls) as f64 / calls as f64)
    }
    p
}

/// Body runs beyond the number needed in `[from, to)`: the phase is cut
/// into windows at every whole `WINDOW_US` and at every fault action
/// (`cuts`); within one window a key needs at most one run (its entry
/// can expire, or be lost to the fault, at most once there), so every run
/// of a (function, key) after its first in a window is surplus.
pub fn surplus_runs(runs: &[Run], from: u64, to: u64, cuts: &[u64]) -> u64 {
    let mut edges: Vec<u64> = (from / WINDOW_US + 1..)
        .map(|w| w * WINDOW_US)
        .take_while(|&e| e < to)
        .chain(cuts.iter().copied().filter(|&c| c > from && c < to))
        .collect();
    edges.sort_unstable();
    let window_of = |t: u64| edges.partition_point(|&e| e <= t);
    let mut seen = HashSet::new();
    let mut surplus = 0;
    for r in runs {
        if !seen.insert((window_of(r.t_us), r.kind as u8, r.key)) {
            surplus += 1;
        }
    }
    surplus
}

/// Hit ratio of each bucket in `[from, to)`.
fn buckets(calls: &[Call], runs: &[Run], from: u64, to: u64) -> Vec<f64> {
    let n = to.saturating_sub(from).div_ceil(BUCKET_US) as usize;
    let mut c = vec![0u64; n];
    let mut r = vec![0u64; n];
    for call in calls.iter().filter(|x| (from..to).contains(&x.t_us)) {
        c[((call.t_us - from) / BUCKET_US) as usize] += 1;
    }
    for run in runs.iter().filter(|x| (from..to).contains(&x.t_us)) {
        r[((run.t_us - from) / BUCKET_US) as usize] += 1;
    }
    c.iter()
        .zip(&r)
        .map(|(&c, &r)| {
            if c == 0 {
                0.0
            } else {
                1.0 - r.min(c) as f64 / c as f64
            }
        })
        .collect()
}

pub fn figures(calls: &[Call], runs: &[Run], times: FaultTimes) -> FaultFigures {
    let t = &times;
    let before = phase(calls, runs, t.before_us, t.start_us, &t.actions_us);
    let during = phase(calls, runs, t.start_us, t.end_us, &t.actions_us);
    let after = phase(calls, runs, t.end_us, t.after_us, &t.actions_us);
    let target = 0.9 * before.hit_ratio;
    let from_start = buckets(calls, runs, t.start_us, t.after_us);
    let min_hit_ratio = from_start.iter().copied().fold(1.0, f64::min);
    let after_buckets = buckets(calls, runs, t.end_us, t.after_us);
    let recovery = if min_hit_ratio >= target {
        Recovery::NeverBelow
    } else {
        after_buckets
            .windows(2)
            .position(|w| w[0] >= target && w[1] >= target)
            .map_or(Recovery::NotWithin, |i| {
                Recovery::After(i as f64 * BUCKET_US as f64 / 1e6)
            })
    };
    FaultFigures {
        times,
        before,
        during,
        after,
        min_hit_ratio,
        recovery,
    }
}

/// Calls per function kind over the whole run, and their failures.
pub fn per_kind(calls: &[Call]) -> Vec<(Kind, u64, u64)> {
    Kind::ALL
        .iter()
        .map(|&k| {
            let mine = calls.iter().filter(|c| c.kind == k);
            let (n, bad) = mine.fold((0, 0), |(n, bad), c| {
                (n + 1, bad + u64::from(c.outcome != Outcome::Ok))
            });
            (k, n, bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t_us: u64, key: u32) -> Run {
        Run {
            t_us,
            kind: Kind::Async,
            key,
        }
    }

    #[test]
    fn one_run_per_key_and_window_is_needed() {
        // Key 1 twice in the first second: one surplus. Key 1 again in the
        // next second: needed. Key 2 twice around a fault action: needed.
        let runs = [
            run(100, 1),
            run(200, 1),
            run(1_100_000, 1),
            run(1_200_000, 2),
            run(1_600_000, 2),
        ];
        assert_eq!(surplus_runs(&runs, 0, 3_000_000, &[1_500_000]), 1);
        assert_eq!(surplus_runs(&runs, 0, 3_000_000, &[]), 2);
    }
}
