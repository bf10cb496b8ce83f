//! What a container may do and see: its OCI spec (`spec`, a pure
//! function of the function's settings) with the seccomp allowlist
//! (`seccomp`, and compiled by us for crun: `bpf`), the cgroups it runs in and what it used (`cgroup`),
//! the path through which runc reaches the state directory (`view`), the
//! writable layer over the image (`scratch`), and the way out for
//! functions with `--egress` (`egress`).

pub mod bpf;
pub mod cgroup;
pub mod egress;
pub mod fork;
pub mod scratch;
pub mod seccomp;
pub mod spec;
pub mod view;
