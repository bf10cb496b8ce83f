//! Running a hand-over on one CPU. Handing a connection to a program
//! that waits in a stopped call is a round trip between it and
//! faas-init; on two CPUs each leg wakes the other, sleeping, CPU (about
//! 0.1 ms a wake-up in this VM, measured: it nearly doubled a stdio hit),
//! on one CPU it is a switch between two tasks. So the calling thread
//! and the waiting task are put on the CPU the connection arrived on,
//! for as long as the hand-over lasts; what the task starts meanwhile
//! inherits the one CPU until it is given every CPU back.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The calling thread and one task, held on one CPU.
pub struct OneCpu {
    task: Pid,
    all: CpuSet,
}

impl OneCpu {
    /// Puts the calling thread and `task` on the CPU this thread runs on;
    /// None where the sandbox or the kernel refuses, which only costs
    /// time.
    pub fn pin(task: Pid) -> Option<Self> {
        let all = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut one = CpuSet::new();
        one.set(sched_getcpu().ok()?).ok()?;
        sched_setaffinity(Pid::from_raw(0), &one).ok()?;
        if sched_setaffinity(task, &one).is_err() {
            let _ = sched_setaffinity(Pid::from_raw(0), &all);
            return None;
        }
        Some(Self { task, all })
    }

    /// Gives the task and the calling thread every CPU back.
    pub fn release(self) {
        let _ = sched_setaffinity(self.task, &self.all);
        let _ = sched_setaffinity(Pid::from_raw(0), &self.all);
    }

    /// Gives every CPU back to every task of `processes` (what the task
    /// started while it was held inherited the one CPU), and to the
    /// calling thread. A task that ended meanwhile needs nothing.
    pub fn release_all(self, processes: &[u32]) {
        for pid in processes {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for tid in tasks.flatten() {
                if let Some(tid) = tid.file_name().to_str().and_then(|t| t.parse().ok()) {
                    let _ = sched_setaffinity(Pid::from_raw(tid), &self.all);
                }
            }
        }
        self.release();
    }
}
