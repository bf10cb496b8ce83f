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
/// Deployed functions: deploy, remove, list, restore; ties the parts together.
pub mod manager;
/// Metric names, help texts, buckets and recording handles.
pub mod metrics;
/// Function IP addresses: the pool allocator and the loopback addresses.
pub mod net;
/// Pulling images from a registry by reference (the OCI distribution API).
pub mod pull;
/// Persistent record of deployed functions.
pub mod registry;
/// Containers: sandbox, one container's life, the warm pool, the cold path.
pub mod runtime;
/// Secrets: stored root-only, delivered on a tmpfs and as variables.
pub mod secrets;
/// What the OS gives where std stops: pidfds, priorities, the closer,
/// socket options, private files, sd_notify, optional deadlines.
pub mod sys;
