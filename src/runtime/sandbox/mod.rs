//! What a container may do and see: its OCI spec (`spec`, a pure
//! function of the function's settings) with the seccomp allowlist
//! (`seccomp`, and compiled by us for crun: `bpf`), the cgroups it runs in and what it used (`cgroup`), and
//! the path through which runc reaches the state directory (`view`).

pub mod bpf;
pub mod cgroup;
mod seccomp;
pub mod spec;
pub mod view;
