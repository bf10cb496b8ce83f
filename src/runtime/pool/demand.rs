//! How many containers a pool should hold (`--warm N --warm-max M`): at
//! least N, and towards M as demand asks, by Little's law: while one
//! container is being replaced, the connections that arrive need one each
//! (rate × start time), so a one-shot pool that keeps as many ready as
//! arrived within two start times (the most seen, with headroom) never
//! runs dry between refills; for a steady rate that is twice rate × start
//! time, for bursts the burst. A pool whose containers serve many connections
//! (reuse, a `--fork` zygote) holds as many as were busy at once, and one
//! more. A grown target stays until nothing has asked for it for
//! `--pool-idle`. The arithmetic only: the refiller (`runtime::refill`)
//! feeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Ready containers beyond Little's law, for arrivals that bunch up.
const HEADROOM: f64 = 1.5;
/// Arrivals are counted over this many start times: a replacement also
/// waits for a free start (a few run at once) and the CPU, and a burst
/// slower than one start still empties the pool.
const STARTS_PER_WINDOW: f64 = 2.0;
/// How quickly the rate follows a change (an exponential average).
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Shorter intervals say too little about a rate.
const MIN_TICK: Duration = Duration::from_millis(100);
/// Start times are averaged over about this many starts.
const START_SAMPLES: f64 = 8.0;
/// Arrival counts kept (a few per refiller wake-up; the window is one
/// start time).
const MAX_SAMPLES: usize = 4096;

/// A pool's demand and the target it implies.
#[derive(Debug)]
pub struct Demand {
    floor: u32,
    ceiling: u32,
    /// Containers serve many connections each (reuse, `--fork`).
    many: bool,
    last_tick: Option<(Instant, u64)>,
    /// The arrival count as the refiller saw it, oldest first: one sample
    /// older than a start time, then every one since.
    seen: VecDeque<(Instant, u64)>,
    /// Arrivals per second (exponential average over `RATE_WINDOW`).
    rate: f64,
    /// Seconds from a refill's start until its container waits (average).
    start: Option<f64>,
    /// Containers busy at once since the last tick (`many`).
    busy_peak: u32,
    target: u32,
    /// When the current target was last asked for.
    held: Instant,
    why: String,
}

impl Demand {
    /// A pool between `floor` and `ceiling` (equal: a fixed `--warm`).
    pub fn new(floor: u32, ceiling: u32, many: bool, now: Instant) -> Self {
        let ceiling = ceiling.max(floor);
        Self {
            floor,
            ceiling,
            many,
            last_tick: None,
            seen: VecDeque::new(),
            rate: 0.0,
            start: None,
            busy_peak: 0,
            target: floor,
            held: now,
            why: fixed(floor, ceiling),
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    pub fn follows(&self) -> bool {
        self.ceiling > self.floor
    }

    pub fn bounds(&self) -> (u32, u32) {
        (self.floor, self.ceiling)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The rate as of `now`: without a tick since, arrivals have stopped
    /// (the refiller ticks while traffic flows), so it has decayed.
    pub fn rate_at(&self, now: Instant) -> f64 {
        let Some((at, _)) = self.last_tick else {
            return 0.0;
        };
        let since = now.saturating_duration_since(at).as_secs_f64();
        self.rate * (-since / RATE_WINDOW.as_secs_f64()).exp()
    }

    /// Why the target is what it is, for `faas inspect`.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// A refill took `took` from its start until its container waited.
    pub fn started(&mut self, took: Duration) {
        let s = took.as_secs_f64();
        self.start = Some(match self.start {
            None => s,
            Some(avg) => avg + (s - avg) / START_SAMPLES,
        });
    }

    /// `busy` containers serve connections right now (`many` pools).
    pub fn busy(&mut self, busy: u32) {
        self.busy_peak = self.busy_peak.max(busy);
    }

    /// Takes `arrivals` (connections so far, a running count) at `now`
    /// and returns the target, a grown one shrinking after `idle` without
    /// demand for it. Called by the refiller whenever it wakes.
    pub fn tick(&mut self, now: Instant, arrivals: u64, idle: Duration) -> u32 {
        match self.last_tick {
            None => self.last_tick = Some((now, arrivals)),
            Some((at, before)) => {
                let dt = now.saturating_duration_since(at);
                if dt >= MIN_TICK {
                    let seen = arrivals.saturating_sub(before) as f64 / dt.as_secs_f64();
                    let weight = 1.0 - (-dt.as_secs_f64() / RATE_WINDOW.as_secs_f64()).exp();
                    self.rate += (seen - self.rate) * weight;
                    self.last_tick = Some((now, arrivals));
                }
            }
        }
        if !self.follows() {
            return self.target;
        }
        self.record(now, arrivals);
        let (want, why) = self.wanted(now, arrivals);
        self.busy_peak = 0;
        if want >= self.target {
            self.target = want;
            self.held = now;
            self.why = why;
        } else if now.saturating_duration_since(self.held) >= idle {
            self.target = want;
            self.held = now;
            self.why = format!("{why}; shrunk after {} s of less demand", idle.as_secs());
        }
        self.target
    }

    /// When the target may shrink next, if it is above what demand asks.
    pub fn shrink_due(&self, now: Instant, idle: Duration) -> Option<Duration> {
        if self.target <= self.floor {
            return None;
        }
        let at = self.held.checked_add(idle)?;
        Some(at.saturating_duration_since(now))
    }

    /// Keeps `arrivals` at `now`, and what is needed to know how many
    /// arrived within one start time.
    fn record(&mut self, now: Instant, arrivals: u64) {
        if self.seen.back().is_some_and(|&(_, n)| n == arrivals) {
            return;
        }
        self.seen.push_back((now, arrivals));
        let window = Duration::from_secs_f64(self.start.unwrap_or(0.0) * STARTS_PER_WINDOW);
        let Some(cutoff) = now.checked_sub(window) else {
            return;
        };
        // The newest sample at or before the cutoff is the baseline.
        while self.seen.len() > 1 && self.seen[1].0 <= cutoff || self.seen.len() > MAX_SAMPLES {
            self.seen.pop_front();
        }
    }

    /// Connections that arrived within the last `window`.
    fn within(&self, now: Instant, arrivals: u64, window: Duration) -> u64 {
        let cutoff = now.checked_sub(window);
        let base = self
            .seen
            .iter()
            .rev()
            .find(|(at, _)| cutoff.is_some_and(|c| *at <= c))
            .or(self.seen.front())
            .map_or(0, |&(_, n)| n);
        arrivals.saturating_sub(base)
    }

    fn wanted(&self, now: Instant, arrivals: u64) -> (u32, String) {
        let (raw, why) = if self.many {
            let want = self.busy_peak + 1;
            (
                f64::from(want),
                format!("{} busy at once + 1", self.busy_peak),
            )
        } else {
            match self.start {
                None => (0.0, "no start measured yet".to_string()),
                Some(start) => {
                    let window = start * STARTS_PER_WINDOW;
                    let came = self.within(now, arrivals, Duration::from_secs_f64(window));
                    let want = (came as f64 * HEADROOM).ceil();
                    (
                        want,
                        format!(
                            "{came} arrived within two starts ({:.0} ms) × {HEADROOM} = {want}",
                            window * 1000.0
                        ),
                    )
                }
            }
        };
        let clamped = (raw as u32).clamp(self.floor, self.ceiling);
        let bound = if clamped == self.floor && (raw as u32) < self.floor {
            format!(" (--warm {})", self.floor)
        } else if clamped == self.ceiling && (raw as u32) > self.ceiling {
            format!(" (--warm-max {})", self.ceiling)
        } else {
            String::new()
        };
        (clamped, format!("{why}{bound}"))
    }
}

fn fixed(floor: u32, ceiling: u32) -> String {
    if ceiling > floor {
        format!("--warm {floor} until demand is measured")
    } else {
        format!("--warm {floor}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_fixed_pool_keeps_its_warm() {
        let t0 = Instant::now();
        let mut d = Demand::new(2, 2, false, t0);
        d.started(Duration::from_millis(400));
        d.tick(t0, 0, IDLE);
        assert_eq!(d.tick(at(t0, 1000), 500, IDLE), 2);
        assert_eq!(d.why(), "--warm 2");
    }

    #[test]
    fn a_one_shot_pool_grows_by_littles_law_and_shrinks_after_idle() {
        let t0 = Instant::now();
        let mut d = Demand::new(2, 16, false, t0);
        d.started(Duration::from_millis(400));
        d.tick(t0, 0, IDLE);
        // 10 arrivals a second for 4 s: the rate approaches 10/s, the
        // target 10 × (2 × 0.4) × 1.5 = 12.
        let mut n = 0;
        for step in 1..=40 {
            n += 1;
            d.tick(at(t0, step * 100), n, IDLE);
        }
        assert!((8.0..10.5).contains(&d.rate()), "{}", d.rate());
        assert_eq!(d.target(), 12, "{}", d.why());
        assert!(
            d.why().contains("8 arrived within two starts (800 ms)"),
            "{}",
            d.why()
        );
        // Demand gone: the target holds for the idle time, then falls back.
        let quiet = 4000;
        assert_eq!(d.tick(at(t0, quiet + 4000), n, IDLE), 12);
        assert!(d.shrink_due(at(t0, quiet + 4000), IDLE).is_some());
        assert_eq!(d.tick(at(t0, quiet + 9100), n, IDLE), 2, "{}", d.why());
        assert!(d.why().contains("shrunk"), "{}", d.why());
        assert_eq!(d.shrink_due(at(t0, quiet + 9100), IDLE), None);
    }

    #[test]
    fn a_burst_asks_for_its_size_whatever_the_average_rate() {
        let t0 = Instant::now();
        let mut d = Demand::new(2, 16, false, t0);
        d.started(Duration::from_millis(400));
        d.tick(t0, 0, IDLE);
        // Eight back to back within 30 ms, once every 2 s: 4/s on
        // average (which alone would ask for 4 × 0.4 × 1.5 = 3).
        let mut n = 0;
        for burst in 0..3 {
            for i in 0..8 {
                n += 1;
                d.tick(at(t0, 1000 + burst * 2000 + i * 4), n, IDLE);
            }
        }
        assert_eq!(d.target(), 12, "{}", d.why());
        // Between bursts it holds (less than the idle time has passed).
        assert_eq!(d.tick(at(t0, 6500), n, IDLE), 12);
    }

    #[test]
    fn the_ceiling_bounds_and_says_so() {
        let t0 = Instant::now();
        let mut d = Demand::new(1, 4, false, t0);
        d.started(Duration::from_secs(1));
        d.tick(t0, 0, IDLE);
        for step in 1..=40 {
            d.tick(at(t0, step * 100), step * 10, IDLE);
        }
        assert_eq!(d.target(), 4);
        assert!(d.why().contains("--warm-max 4"), "{}", d.why());
    }

    #[test]
    fn a_many_pool_holds_its_busy_peak_and_one_more() {
        let t0 = Instant::now();
        let mut d = Demand::new(1, 8, true, t0);
        d.busy(3);
        assert_eq!(d.tick(t0, 0, IDLE), 4);
        d.busy(1);
        assert_eq!(d.tick(at(t0, 1000), 0, IDLE), 4);
        assert_eq!(d.tick(at(t0, 6100), 0, IDLE), 1);
    }
}
