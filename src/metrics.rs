//! Metrics: names, help texts and histogram buckets in one place, and the
//! handles the request path records through. Handles are registered once
//! per function version and per core, so recording is an atomic add (or a
//! lock-free bucket push), never a registry lookup. Rendered in Prometheus
//! text by `metrics-exporter-prometheus` on `/metrics`.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "faas_requests_total";
pub const REQUEST_DURATION: &str = "faas_request_duration_seconds";
pub const CONTAINER_STARTS: &str = "faas_container_starts_total";
pub const WARM_POOL_READY: &str = "faas_warm_pool_ready";
pub const INFLIGHT: &str = "faas_inflight";
pub const COLD_START_PHASE: &str = "faas_cold_start_phase_seconds";
pub const CONTAINER_CPU: &str = "faas_container_cpu_seconds";
pub const CONTAINER_MEMORY: &str = "faas_container_memory_peak_bytes";
pub const ACCEPTS: &str = "faas_accepts_total";
pub const DEPLOY_DURATION: &str = "faas_deploy_duration_seconds";
pub const DEPLOY_BYTES: &str = "faas_deploy_bytes_total";
pub const IMAGE_ERRORS: &str = "faas_image_errors_total";
pub const CLOSER_CLOSED: &str = "faas_closer_closed_total";
pub const CLOSER_LINGER_CLEARED: &str = "faas_closer_lingers_cleared_total";
pub const CLOSER_INTERRUPTED: &str = "faas_closer_interrupted_total";
pub const FORK_STARTS: &str = "faas_fork_starts_total";
pub const FORK_SECONDS: &str = "faas_fork_seconds";
pub const SHARED_UNROUTED: &str = "faas_shared_unrouted_total";
pub const CONTAINER_FAILURES: &str = "faas_container_failures_total";
pub const CLUSTER_FOLLOWING: &str = "faas_cluster_following";
pub const CLUSTER_REVISION: &str = "faas_cluster_revision";
pub const CLUSTER_MEMBERS: &str = "faas_cluster_members";

/// Accept → hand-over spans a warm hit (tens of µs) to a slow cold start
/// (seconds): roughly ×2.5 steps over that range.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// A handler's CPU: from a few ms (answer and exit) to its timeout.
const CPU_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Peak memory: powers of two from 1 MiB to 4 GiB.
const MEMORY_BUCKETS: &[f64] = &[
    1048576.0,
    2097152.0,
    4194304.0,
    8388608.0,
    16777216.0,
    33554432.0,
    67108864.0,
    134217728.0,
    268435456.0,
    536870912.0,
    1073741824.0,
    2147483648.0,
    4294967296.0,
];
/// A `--fork` child's start: well under a millisecond unloaded, tens of
/// ms on a saturated machine.
const FORK_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Deploys: unpacking a small image to a large one.
const DEPLOY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the global recorder; returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(COLD_START_PHASE.into()), LATENCY_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CONTAINER_CPU.into()), CPU_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(CONTAINER_MEMORY.into()), MEMORY_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(DEPLOY_DURATION.into()), DEPLOY_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FORK_SECONDS.into()), FORK_BUCKETS))
        .map_err(|e| e.to_string())?;
    let handle = builder.install_recorder().map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Connections accepted for a function, by how they ended (ok: handed to a handler)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from accept to the socket handed to a handler."
    );
    describe_counter!(
        CONTAINER_STARTS,
        "Connections served by a container started for them (cold) or waiting ahead (warm)."
    );
    describe_gauge!(
        WARM_POOL_READY,
        "Containers started and waiting for a connection."
    );
    describe_gauge!(INFLIGHT, "Connections being served right now.");
    describe_histogram!(COLD_START_PHASE, Unit::Seconds, "Container start, by phase: bundle, start_slot (waiting for a start permit), runtime_create (the runtime's create), runtime_start (the container's process released to exec), handler_connect (until the handler connected to /control.sock).");
    describe_histogram!(
        CONTAINER_CPU,
        Unit::Seconds,
        "CPU time a container used, read from its cgroup when it ended."
    );
    describe_histogram!(
        CONTAINER_MEMORY,
        Unit::Bytes,
        "Peak memory of a container, read from its cgroup when it ended."
    );
    describe_counter!(ACCEPTS, "Connections accepted by each data-plane core.");
    describe_counter!(
        SHARED_UNROUTED,
        "Connections on a shared listener (--shared-listen) no function took, by reason: unknown_host, no_host (and no --default-host), malformed, too_large (no decision in 16 KiB), timeout (--header-timeout), closed (by the client first)."
    );
    describe_counter!(
        FORK_STARTS,
        "--fork children started (a fresh sandbox per connection, in a zygote's container)."
    );
    describe_histogram!(
        FORK_SECONDS,
        Unit::Seconds,
        "--fork: from the zygote's receipt of a connection to the child having it for its program (started ahead)."
    );
    describe_histogram!(
        DEPLOY_DURATION,
        Unit::Seconds,
        "Time to receive, unpack and switch to a new image."
    );
    describe_counter!(
        DEPLOY_BYTES,
        Unit::Bytes,
        "Bytes of image archives received."
    );
    describe_counter!(IMAGE_ERRORS, "Image uploads refused, by reason.");
    describe_counter!(
        CONTAINER_FAILURES,
        "Containers of a function that failed: did not start, ended before serving, or a long-lived server ended (a crash loop counts up fast)."
    );
    describe_gauge!(
        CLUSTER_FOLLOWING,
        "1 while this node follows the cluster's etcd, 0 while it is cut off (it serves what it has; changes through it are refused)."
    );
    describe_gauge!(
        CLUSTER_REVISION,
        "The etcd revision of the last function record this node applied."
    );
    describe_gauge!(
        CLUSTER_MEMBERS,
        "The cluster's members as this node last saw them in etcd."
    );
    describe_counter!(
        CLOSER_CLOSED,
        "Descriptors a container had its hands on, closed by the closer thread."
    );
    describe_counter!(
        CLOSER_LINGER_CLEARED,
        "Of those, sockets whose SO_LINGER was cleared so their close would not wait."
    );
    describe_counter!(
        CLOSER_INTERRUPTED,
        "Closes that waited anyway and were interrupted by the closer's watchdog."
    );
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to a handler.
    Ok,
    /// The handler or the runtime failed (502).
    HandlerError,
    /// The handler did not connect in time (504).
    Timeout,
    /// Waited past the queue deadline (503).
    Rejected,
    /// faasd was stopping (503).
    Unavailable,
}

/// A container start's phases.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Bundle directory, config.json, control socket, output pipe.
    Bundle,
    /// Waiting for a start permit (`--max-concurrent-starts`).
    StartSlot,
    /// The runtime's `create`, from spawn to exit.
    RuntimeCreate,
    /// Starting the created process (the exec fifo, or `start`).
    RuntimeStart,
    /// From then until the handler connected to `/control.sock`.
    HandlerConnect,
}

/// The handles of one function.
#[derive(Debug, Clone)]
pub struct FunctionMetrics {
    ok: Counter,
    handler_error: Counter,
    timeout: Counter,
    rejected: Counter,
    unavailable: Counter,
    duration: Histogram,
    cold: Counter,
    warm: Counter,
    bundle: Histogram,
    start_slot: Histogram,
    runtime_create: Histogram,
    runtime_start: Histogram,
    handler_connect: Histogram,
    cpu: Histogram,
    memory: Histogram,
    fork_starts: Counter,
    fork_seconds: Histogram,
    failures: Counter,
}

impl FunctionMetrics {
    pub fn new(function: &str) -> Self {
        let f = function.to_string();
        let requests = |outcome: &'static str| counter!(REQUESTS, "function" => f.clone(), "outcome" => outcome);
        let phase =
            |p: &'static str| histogram!(COLD_START_PHASE, "function" => f.clone(), "phase" => p);
        Self {
            ok: requests("ok"),
            handler_error: requests("handler_error"),
            timeout: requests("timeout"),
            rejected: requests("rejected"),
            unavailable: requests("unavailable"),
            duration: histogram!(REQUEST_DURATION, "function" => f.clone()),
            cold: counter!(CONTAINER_STARTS, "function" => f.clone(), "kind" => "cold"),
            warm: counter!(CONTAINER_STARTS, "function" => f.clone(), "kind" => "warm"),
            bundle: phase("bundle"),
            start_slot: phase("start_slot"),
            runtime_create: phase("runtime_create"),
            runtime_start: phase("runtime_start"),
            handler_connect: phase("handler_connect"),
            cpu: histogram!(CONTAINER_CPU, "function" => f.clone()),
            memory: histogram!(CONTAINER_MEMORY, "function" => f.clone()),
            fork_starts: counter!(FORK_STARTS, "function" => f.clone()),
            fork_seconds: histogram!(FORK_SECONDS, "function" => f.clone()),
            failures: counter!(CONTAINER_FAILURES, "function" => f),
        }
    }

    /// One of its containers failed.
    pub fn container_failed(&self) {
        self.failures.increment(1);
    }

    pub fn outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::HandlerError => &self.handler_error,
            Outcome::Timeout => &self.timeout,
            Outcome::Rejected => &self.rejected,
            Outcome::Unavailable => &self.unavailable,
        }
        .increment(1);
    }

    /// A connection handed over after `took`, to a `warm` or cold container.
    pub fn handed_over(&self, took: Duration, warm: bool) {
        self.ok.increment(1);
        self.duration.record(took.as_secs_f64());
        if warm { &self.warm } else { &self.cold }.increment(1);
    }

    pub fn phase(&self, phase: Phase, took: Duration) {
        match phase {
            Phase::Bundle => &self.bundle,
            Phase::StartSlot => &self.start_slot,
            Phase::RuntimeCreate => &self.runtime_create,
            Phase::RuntimeStart => &self.runtime_start,
            Phase::HandlerConnect => &self.handler_connect,
        }
        .record(took.as_secs_f64());
    }

    pub fn usage(&self, cpu_seconds: f64, peak_bytes: u64) {
        self.cpu.record(cpu_seconds);
        self.memory.record(peak_bytes as f64);
    }

    /// `started` --fork children, and start latencies seen.
    pub fn forked(&self, started: u64, latencies: &[Duration]) {
        self.fork_starts.increment(started);
        for took in latencies {
            self.fork_seconds.record(took.as_secs_f64());
        }
    }
}

/// The accept counter of data-plane core `core`.
/// A connection on a shared listener that went to no function.
pub fn shared_unrouted(reason: &'static str) {
    counter!(SHARED_UNROUTED, "reason" => reason).increment(1);
}

pub fn core_accepts(core: usize) -> Counter {
    counter!(ACCEPTS, "core" => core.to_string())
}

/// Point-in-time values, set when `/metrics` is scraped.
pub fn set_function_gauges(function: &str, ready: u64, inflight: u64) {
    gauge!(WARM_POOL_READY, "function" => function.to_string()).set(ready as f64);
    gauge!(INFLIGHT, "function" => function.to_string()).set(inflight as f64);
}

pub fn deployed(took: Duration, bytes: u64) {
    histogram!(DEPLOY_DURATION).record(took.as_secs_f64());
    counter!(DEPLOY_BYTES).increment(bytes);
}

pub fn image_error(reason: &'static str) {
    counter!(IMAGE_ERRORS, "reason" => reason).increment(1);
}

/// Whether this node follows the cluster's etcd now.
pub fn cluster_following(following: bool) {
    gauge!(CLUSTER_FOLLOWING).set(if following { 1.0 } else { 0.0 });
}

/// The revision of the last function record applied here.
pub fn cluster_revision(revision: i64) {
    gauge!(CLUSTER_REVISION).set(revision as f64);
}

/// How many members the cluster has, as last seen.
pub fn cluster_members(count: usize) {
    gauge!(CLUSTER_MEMBERS).set(count as f64);
}
