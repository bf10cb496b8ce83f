//! A `--fork` zygote's counters for faasd: the file faasd made and bound
//! at `layout::FORK_STATS`, mapped shared (`faas_protocol::forkstats`).
//! The zygote counts the children it starts, reaps and could not make;
//! each child writes its own start latency before the program runs, then
//! lets go of the mapping (a program never has it).
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faas_protocol::{forkstats as words, layout};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

pub struct Stats {
    base: NonNull<AtomicU64>,
}

// SAFETY: the mapping is only ever read and written through atomics, from
// any thread; it lives as long as the `Stats`.
unsafe impl Send for Stats {}
// SAFETY: as above.
unsafe impl Sync for Stats {}

impl Stats {
    /// The mapping, if faasd gave this zygote the file (and it is one).
    pub fn open() -> Option<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(layout::FORK_STATS)
            .ok()?;
        if file.metadata().ok()?.len() != words::BYTES as u64 {
            return None;
        }
        // SAFETY: a fresh shared mapping of the whole file (its size just
        // checked); nothing else in this process maps or frees it.
        let base = unsafe {
            mmap(
                None,
                NonZeroUsize::new(words::BYTES)?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        }
        .ok()?;
        let stats = Self { base: base.cast() };
        (stats.word(0).load(Ordering::Relaxed) == words::MAGIC).then_some(stats)
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        let index = index.min(words::BYTES / 8 - 1);
        // SAFETY: `index` lies within the mapping, which lives as long as
        // `self`; its words are 8-byte aligned (page-aligned base) and
        // only ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(index) }
    }

    pub fn started(&self) {
        self.word(words::STARTED).fetch_add(1, Ordering::Relaxed);
    }

    pub fn ended(&self) {
        self.word(words::ENDED).fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.word(words::FAILED).fetch_add(1, Ordering::Relaxed);
    }

    /// A child's start latency, into the ring.
    pub fn record(&self, took: Duration) {
        let n = self.word(words::RING_NEXT).load(Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.word(words::RING + (n as usize) % words::RING_LEN)
            .store(ns, Ordering::Relaxed);
        // Children record at once: a slot written twice loses one sample,
        // which a histogram of thousands does not miss.
        self.word(words::RING_NEXT).fetch_add(1, Ordering::Release);
    }

    /// Unmaps this process's copy (a child, before its program runs).
    pub fn unmap_here(&self) {
        // SAFETY: called in a child only, whose copy of the mapping
        // nothing uses afterwards; the zygote's own stays mapped.
        let _ = unsafe { munmap(self.base.cast(), words::BYTES) };
    }
}
