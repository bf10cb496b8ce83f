//! faasd: Docker images as functions, each with its own IP address, each
//! TCP connection served by a fresh OCI container.
//!
//! ```text
//!  faas CLI ──HTTP (TCP + token, or the Unix socket)──▶ control (hyper) ──▶ manager ──▶ image (ingest, rootfs store)
//!                                            │──▶ registry (crash-safe state file)
//!                                            │──▶ net (IP pool, rtnetlink lo:faas)
//!                                            └──▶ dataplane (listeners, sharded to cores)
//!  client ──TCP──▶ core N (io_uring accept) ──▶ warm pool: a started container whose
//!                  handler waits on /control.sock ──▶ sendmsg(SCM_RIGHTS) ──▶ ours to the closer
//!                  (pool empty: cold start on the control runtime — bundle, runc run)
//!  runtime: supervisors end containers at their timeout, refillers keep pools full
//! ```
//!
//! Dependencies flow one way: `dataplane → runtime → image`; `control →
//! manager → registry, net, runtime, dataplane`; `daemon` wires everything.
//! The image code knows nothing about sockets, the dataplane nothing about tar.

/// Wire types shared by the `faas` client and the daemon's control API.
pub mod api;
/// Control-API client used by `faas`.
pub mod client;
/// Many nodes, one registry of record in etcd; archives by digest.
pub mod cluster;
/// Daemon command line, validated into a typed configuration.
pub mod config;
/// The control API: HTTP routes over the manager.
pub mod control;
/// Composition root: runtimes, start-up recovery, signals, shutdown.
pub mod daemon;
/// Accepting connections on function IPs and handing them to the runtime.
pub mod dataplane;
/// Docker-save / OCI image archives: reading, layering, building.
pub mod image;
/// Installing the static `faas-init` helper into the state directory.
pub mod init;
/// Deployed functions: deploy, remove, list, restore; ties the parts together.
pub mod manager;
/// Metric names, help texts, buckets and recording handles.
pub mod metrics;
/// Function names (DNS-label rules).
pub mod name;
/// Function IP addresses: the pool allocator and the loopback addresses.
pub mod net;
/// systemd's readiness protocol (`sd_notify`).
pub mod notify;
/// Socket descriptors: the io_uring stream's typed borrow, TCP options std lacks.
pub mod rawfd;
/// Persistent record of deployed functions.
pub mod registry;
/// HTTP error answers faasd writes itself.
pub mod respond;
/// Containers: sandbox, one container's life, the warm pool, the cold path.
pub mod runtime;
/// Secrets: stored root-only, delivered on a tmpfs and as variables.
pub mod secrets;
/// Process syscalls std and nix lack: pidfds, scheduling priorities.
pub mod sys;
/// Optional deadlines for `select!`.
pub mod timer;
/// Human sizes ("64M") and durations for flags and the API.
pub mod units;
