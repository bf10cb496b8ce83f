//! The node's bound on all warm pools together (`faasd --pool-memory`):
//! twice a second the pools are ranked by how busy they are (arrivals per
//! second now, then the most recently used), and each in turn gets as
//! many containers as it wants while the memory lasts (a container's
//! memory as its pool last measured it). The busiest keep theirs; the idle
//! ones shrink first, below their `--warm` if need be, and grow again
//! when traffic ranks them up. Connections to a pool left with nothing
//! are served by cold starts, as with `--warm 0`.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Function;

/// How often the shares are recomputed.
const EVERY: Duration = Duration::from_millis(500);
/// What an unmeasured container is assumed to take.
const UNMEASURED: u64 = 4 << 20;

/// All pools' memory bound (`bytes`; 0: none).
pub struct Budget {
    bytes: u64,
    pools: Mutex<Vec<Weak<Function>>>,
}

impl Budget {
    pub fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            bytes,
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Counts `func`'s pool in (its refiller does, once).
    pub fn register(&self, func: &Arc<Function>) {
        if self.bytes == 0 {
            return;
        }
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(func));
    }

    /// Shares the memory out, for as long as the process lives (on the
    /// idle-priority runtime: nothing waits on it).
    pub async fn run(self: Arc<Self>) {
        if self.bytes == 0 {
            return;
        }
        loop {
            tokio::time::sleep(EVERY).await;
            self.share();
        }
    }

    fn share(&self) {
        let funcs: Vec<Arc<Function>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.retain(|w| w.upgrade().is_some_and(|f| !f.pool.is_closed()));
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        let busy: Vec<(f64, Duration)> = funcs
            .iter()
            .map(|f| (f.pool.demand().rate_at(now), f.pool.idle_for()))
            .collect();
        let mut order: Vec<usize> = (0..funcs.len()).collect();
        order.sort_by(|&a, &b| {
            busy[b]
                .0
                .total_cmp(&busy[a].0)
                .then(busy[a].1.cmp(&busy[b].1))
        });
        let mut left = self.bytes;
        for &i in &order {
            let pool = &funcs[i].pool;
            let each = match pool.memory_each() {
                0 => UNMEASURED,
                n => n,
            };
            let want = pool.wanted();
            let fits = u32::try_from(left / each).unwrap_or(u32::MAX);
            let granted = want.min(fits);
            left -= u64::from(granted) * each;
            pool.set_cap(if granted < want { granted } else { u32::MAX });
        }
    }
}
