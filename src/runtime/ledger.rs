//! One ledger per function: every connection's outcome is recorded here
//! with one call, which updates both what `faas inspect` shows (counters
//! and latency percentiles kept across redeploys) and the Prometheus
//! handles behind `/metrics`, so the two never drift apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::forkstats::Delta;
use crate::api::FunctionStats;
use crate::metrics::{FunctionMetrics, Outcome, Phase};

/// Sub-buckets per power of two: quantiles within 12.5% of the truth.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two of microseconds covered (up to 2^35 µs, about 9.5 h).
const OCTAVES: usize = 35;
const BUCKETS: usize = (OCTAVES - SUB_BITS as usize + 1) * SUB;

/// Counters of one function, kept across redeploys.
#[derive(Debug, Default)]
pub struct Stats {
    /// Accept → hand-over times, for `faas inspect`'s percentiles.
    latency: LatencyHist,
    requests: AtomicU64,
    handed_over: AtomicU64,
    failed: AtomicU64,
    cold_starts: AtomicU64,
    warm_starts: AtomicU64,
    rejected: AtomicU64,
    /// `--fork` children started and ended (every version's).
    fork_started: AtomicU64,
    fork_ended: AtomicU64,
}

/// What a function version records through: its `Stats` (shared with the
/// versions before it) and its metric handles.
#[derive(Debug)]
pub struct Ledger {
    stats: Arc<Stats>,
    metrics: FunctionMetrics,
    /// The version serves through `--fork` children.
    fork: bool,
}

impl Ledger {
    pub fn new(function: &str, stats: Arc<Stats>, fork: bool) -> Self {
        Self {
            stats,
            metrics: FunctionMetrics::new(function),
            fork,
        }
    }

    /// What a zygote's counters said since their last reading.
    pub fn forked(&self, delta: &Delta) {
        self.stats
            .fork_started
            .fetch_add(delta.started, Ordering::Relaxed);
        self.stats
            .fork_ended
            .fetch_add(delta.ended, Ordering::Relaxed);
        self.metrics.forked(delta.started, &delta.latencies);
    }

    /// One of its containers failed (the pool counts it too).
    pub fn container_failed(&self) {
        self.metrics.container_failed();
    }

    /// A connection was accepted for the function.
    pub fn accepted(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// It reached a handler `took` after its accept, in a container that
    /// was waiting (`warm`) or started for it.
    pub fn handed_over(&self, took: Duration, warm: bool) {
        let s = &self.stats;
        s.handed_over.fetch_add(1, Ordering::Relaxed);
        if warm { &s.warm_starts } else { &s.cold_starts }.fetch_add(1, Ordering::Relaxed);
        s.latency.record(took);
        self.metrics.handed_over(took, warm);
    }

    /// It never reached a handler: faasd answered it (`outcome` says why).
    pub fn failed(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Rejected => &self.stats.rejected,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metrics.outcome(outcome);
    }

    pub fn phase(&self, phase: Phase, took: Duration) {
        self.metrics.phase(phase, took);
    }

    pub fn usage(&self, cpu_seconds: f64, peak_bytes: u64) {
        self.metrics.usage(cpu_seconds, peak_bytes);
    }

    pub fn snapshot(&self, warm_ready: u64, inflight: u64) -> FunctionStats {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FunctionStats {
            warm_ready,
            rejected: get(&s.rejected),
            requests: get(&s.requests),
            handed_over: get(&s.handed_over),
            failed: get(&s.failed),
            cold_starts: get(&s.cold_starts),
            warm_starts: get(&s.warm_starts),
            inflight,
            latency_p50_ms: s.latency.quantile_ms(0.5),
            latency_p90_ms: s.latency.quantile_ms(0.9),
            latency_p99_ms: s.latency.quantile_ms(0.99),
            fork_children_alive: self
                .fork
                .then(|| get(&s.fork_started).saturating_sub(get(&s.fork_ended))),
            fork_children_served: self.fork.then(|| get(&s.fork_ended)),
        }
    }
}

/// Log-linear buckets of microseconds: each power of two split in eight,
/// so a percentile is off by at most an eighth (a 25 ms cold start reads
/// 26.6 ms, not the 32.8 ms or 65.5 ms of plain powers of two). One
/// relaxed atomic add per request.
#[derive(Debug)]
struct LatencyHist {
    buckets: Box<[AtomicU64; BUCKETS]>,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl LatencyHist {
    fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of the bucket below which `q` of the samples lie, in ms.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(upper_bound_us(i) as f64 / 1000.0);
            }
        }
        None
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let octave = 63 - us.leading_zeros();
    if octave < SUB_BITS {
        return us as usize;
    }
    let sub = ((us >> (octave - SUB_BITS)) as usize) & (SUB - 1);
    ((octave - SUB_BITS + 1) as usize * SUB + sub).min(BUCKETS - 1)
}

/// The first microsecond value past bucket `i`.
fn upper_bound_us(i: usize) -> u64 {
    if i < SUB {
        return i as u64 + 1;
    }
    let shift = (i / SUB - 1) as u32;
    let lower = ((SUB + i % SUB) as u64) << shift;
    lower + (1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_an_eighth() {
        for us in [
            1u64,
            7,
            8,
            15,
            16,
            100,
            999,
            25_000,
            1_000_000,
            3_600_000_000,
        ] {
            let i = bucket(us);
            let upper = upper_bound_us(i);
            assert!(upper > us, "{us} µs in bucket {i} with upper bound {upper}");
            assert!(
                (upper - us) as f64 <= us as f64 / 8.0 + 1.0,
                "{us} µs: bound {upper} is too coarse"
            );
            if i > 0 {
                assert!(
                    upper_bound_us(i - 1) <= us,
                    "{us} µs belongs lower than {i}"
                );
            }
        }
    }

    #[test]
    fn a_cold_start_reads_close_to_itself() {
        let h = LatencyHist::default();
        for _ in 0..10 {
            h.record(Duration::from_millis(25));
        }
        let p50 = h.quantile_ms(0.5).expect("samples");
        assert!((25.0..=28.2).contains(&p50), "{p50}");
        assert_eq!(LatencyHist::default().quantile_ms(0.5), None);
    }

    #[test]
    fn outcomes_land_in_their_counters() {
        let ledger = Ledger::new("f", Arc::default(), false);
        ledger.accepted();
        ledger.accepted();
        ledger.accepted();
        ledger.handed_over(Duration::from_micros(40), true);
        ledger.failed(Outcome::Timeout);
        ledger.failed(Outcome::Rejected);
        let s = ledger.snapshot(1, 0);
        assert_eq!(
            (
                s.requests,
                s.handed_over,
                s.warm_starts,
                s.failed,
                s.rejected
            ),
            (3, 1, 1, 1, 1)
        );
    }
}
