//! The OCI runtime spec (`config.json`) of a function container, rendered
//! as a pure function of the function's settings: the image's rootfs
//! (under a writable layer of the container's own, or read-only with
//! `--read-only`), its own user (root mapped to the function's
//! unprivileged host id range), pid, mount, ipc, uts, cgroup and network
//! namespaces, Docker's default capabilities inside that user namespace
//! (`api::caps`), unprivileged low ports, no new privileges, the default
//! seccomp allowlist, masked /proc paths, resource limits, tmpfs /tmp and
//! VOLUMEs, and the control socket bind-mounted at `/control.sock`.

use std::path::Path;

use serde_json::{json, Value};

use super::fork;
use super::seccomp::{self, Profile};
use crate::api::{caps, DeployOptions, HandlerKind, Sandbox};
use crate::image::owners::ID_RANGE;
use crate::image::ImageConfig;
use faas_protocol::layout;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PIDS_LIMIT: i64 = 64;
const TMP_SIZE: &str = "size=64m";
/// One full CPU per container: a runaway handler cannot starve the node.
const CPU_PERIOD_US: u64 = 100_000;
const CPU_QUOTA_US: i64 = 100_000;

/// What `render` applies, for `faas inspect`.
pub fn sandbox(options: &DeployOptions, id_base: u32) -> Sandbox {
    Sandbox {
        host_ids: format!("{id_base}-{}", u64::from(id_base) + u64::from(ID_RANGE) - 1),
        seccomp: "default allowlist (anything else: EPERM)".into(),
        capabilities: caps::resolve(&options.cap_add, &options.cap_drop),
        no_new_privileges: true,
        rootfs: match options.read_only {
            true => format!(
                "read-only; /tmp tmpfs {}",
                TMP_SIZE.trim_start_matches("size=")
            ),
            false => format!(
                "writable layer of {} MiB, gone with the container; /tmp tmpfs {}",
                options.scratch >> 20,
                TMP_SIZE.trim_start_matches("size=")
            ),
        },
        network: match (options.egress, options.egress_allow.as_slice()) {
            (false, _) => "none: only the connection handed over".into(),
            (true, []) => "egress to anywhere but this host (NAT)".into(),
            (true, allow) => format!(
                "egress to {} only (NAT)",
                allow
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        memory_bytes: options.memory,
        pids: pids_limit(options),
        cpus: CPU_QUOTA_US as f64 / CPU_PERIOD_US as f64,
    }
}

fn pids_limit(options: &DeployOptions) -> i64 {
    match options.fork {
        true => fork::pids_limit(options),
        false => PIDS_LIMIT,
    }
}

/// What a container's spec is made from.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub function: &'a str,
    pub rootfs: &'a Path,
    /// The version's image root, read-only (as the runtime reaches it).
    pub image_root: &'a Path,
    /// A `--fork` zygote's pids cgroup, if it has one
    /// (`cgroup::delegate_pids`).
    pub fork_cgroup: Option<&'a Path>,
    /// A `--fork` zygote's counters (`runtime::forkstats`).
    pub fork_stats: Option<&'a Path>,
    pub control_sock: &'a Path,
    pub image: &'a ImageConfig,
    pub options: &'a DeployOptions,
    pub cgroup: &'a str,
    /// First host uid/gid of the function's range: container root.
    pub id_base: u32,
    /// The seccomp program, compiled, for a runtime that takes it (crun).
    pub seccomp_bpf: Option<&'a str>,
    /// `faas-init` on the host (as the runtime reaches it), for the
    /// handler kinds it runs (`HandlerKind::needs_init`).
    pub init: Option<&'a Path>,
    /// How long the handler has to connect (faas-init's wait for a
    /// server to listen is a little shorter).
    pub connect_timeout_ms: u64,
    /// The function's secrets directory (as the runtime reaches it) and
    /// their variables, if it has any.
    pub secrets: Option<(&'a Path, &'a [(String, String)])>,
}

/// The container's process: the image's program, or `faas-init` running
/// it in the function's handler kind.
pub fn args(image: &ImageConfig, options: &DeployOptions) -> Vec<String> {
    let mode: Vec<String> = match options.kind {
        _ if options.fork => fork::mode(options.kind),
        HandlerKind::ControlSocket => return image.argv(),
        HandlerKind::Stdio => vec!["stdio".into()],
        HandlerKind::SocketActivation => vec!["listen".into()],
        HandlerKind::ContainerPort(port) if options.hands_listener() => {
            vec!["bind".into(), port.to_string()]
        }
        HandlerKind::ContainerPort(port) => vec!["port".into(), port.to_string()],
    };
    let mut args = vec![layout::FAAS_INIT.to_string()];
    args.extend(mode);
    args.push("--".into());
    args.extend(image.argv());
    args
}

/// The container's environment: image Env, then the deploy's `--env`
/// (which wins), then what faasd tells every handler.
pub fn environment(
    image: &ImageConfig,
    options: &DeployOptions,
    secrets: &[(String, String)],
    function: &str,
    connect_timeout_ms: u64,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    set(DEFAULT_PATH.to_string());
    for kv in &image.env {
        set(kv.clone());
    }
    for (k, v) in options
        .env
        .iter()
        .chain(secrets.iter().map(|(k, v)| (k, v)))
    {
        set(format!("{k}={v}"));
    }
    set(format!("FAAS_FUNCTION={function}"));
    if options.reuse {
        // Tells the handler it may ask for more connections.
        set("FAAS_REUSE=1".to_string());
    }
    if options.runs_init() {
        // faas-init gives a server this long (a little less) to listen.
        set(format!("FAAS_CONNECT_TIMEOUT={connect_timeout_ms}"));
    }
    if options.fork {
        for kv in fork::environment(image, options) {
            set(kv);
        }
    }
    env
}

/// Capabilities `faas-init` holds and the program it starts must not (it
/// drops them from the bounding set before the exec, `FAAS_INIT_DROP`):
/// CAP_SYS_PTRACE, to read the fds and write the memory of a server's
/// processes that changed user (nginx's workers: not dumpable), and
/// CAP_SETPCAP, to drop it; each only where the function has not got it.
fn init_capabilities(options: &DeployOptions, granted: &[String]) -> Vec<String> {
    if !options.runs_init() {
        return Vec::new();
    }
    let zygote = if options.fork { fork::ZYGOTE_CAPS } else { &[] };
    ["CAP_SYS_PTRACE", "CAP_SETPCAP"]
        .into_iter()
        .chain(zygote.iter().copied())
        .filter(|c| !granted.iter().any(|g| g == c))
        .map(str::to_string)
        .collect()
}

/// The environment with `FAAS_INIT_DROP` (capability numbers) for those.
fn init_env(mut env: Vec<String>, init_only: &[String]) -> Vec<String> {
    let numbers: Vec<String> = init_only
        .iter()
        .filter_map(|c| caps::number(c))
        .map(|n| n.to_string())
        .collect();
    if !numbers.is_empty() {
        env.push(format!("FAAS_INIT_DROP={}", numbers.join(",")));
    }
    env
}

pub fn render(input: &SpecInput<'_>) -> Value {
    let SpecInput {
        function,
        rootfs,
        image,
        options,
        cgroup,
        id_base,
        seccomp_bpf,
        connect_timeout_ms,
        secrets,
        ..
    } = *input;
    let secret_env = secrets.map(|(_, env)| env).unwrap_or_default();
    let ids = [json!({ "containerID": 0, "hostID": id_base, "size": ID_RANGE })];
    let caps = Capabilities::of(image, options);
    let mut annotations = serde_json::Map::new();
    if let Some(bpf) = seccomp_bpf {
        // crun then loads this instead of compiling `linux.seccomp` itself.
        annotations.insert("run.oci.seccomp_bpf_data".into(), bpf.into());
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": image.uid, "gid": image.gid },
            "args": args(image, options),
            "env": init_env(environment(image, options, secret_env, function, connect_timeout_ms), &caps.init_only),
            "cwd": image.working_dir,
            "capabilities": {
                "bounding": caps.bounding, "effective": caps.in_effect, "inheritable": caps.ambient,
                "permitted": caps.in_effect, "ambient": caps.ambient,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": rootfs, "readonly": options.read_only || options.fork },
        "annotations": annotations,
        "hostname": function,
        "mounts": mounts(input),
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "memory": { "limit": options.memory },
                "cpu": { "quota": CPU_QUOTA_US, "period": CPU_PERIOD_US },
                "pids": { "limit": pids_limit(options) },
            },
            "namespaces": [
                { "type": "user" }, { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" },
            ],
            // As Docker: a server as any user binds port 80 (in its own
            // network namespace, where nothing else lives).
            "sysctl": { "net.ipv4.ip_unprivileged_port_start": "0" },
            "uidMappings": ids,
            "gidMappings": ids,
            "seccomp": seccomp::profile(Profile::of(options)),
            "maskedPaths": if options.fork { &[] } else { layout::MASKED },
            "readonlyPaths": if options.fork { &[] } else { layout::READONLY },
        },
    })
}

/// A container's capability sets.
struct Capabilities {
    bounding: Vec<String>,
    in_effect: Vec<String>,
    ambient: Vec<String>,
    /// faas-init's own, dropped before the program runs.
    init_only: Vec<String>,
}

impl Capabilities {
    fn of(image: &ImageConfig, options: &DeployOptions) -> Self {
        // Docker's way: the set bounds every process; only root starts
        // with it in effect (a non-root user gains nothing by exec).
        let mut bounding = caps::resolve(&options.cap_add, &options.cap_drop);
        let mut in_effect: Vec<String> = if image.uid == 0 {
            bounding.clone()
        } else {
            Vec::new()
        };
        let init_only = init_capabilities(options, &bounding);
        bounding.extend(init_only.iter().cloned());
        // faas-init needs them in effect whatever its user (CAP_SETPCAP to
        // drop the others): ambient, which is how a non-root process keeps
        // a capability across its exec; it clears the ambient set and
        // drops them from the bounding set before it starts the program.
        let setpcap = "CAP_SETPCAP".to_string();
        let needs_setpcap = (!init_only.is_empty()).then_some(&setpcap);
        let ambient: Vec<String> = init_only.iter().chain(needs_setpcap).cloned().collect();
        for cap in &ambient {
            if !in_effect.contains(cap) {
                in_effect.push(cap.clone());
            }
        }
        Self {
            bounding,
            in_effect,
            ambient,
            init_only,
        }
    }
}

/// What a container mounts: the kernel's filesystems, `/tmp`, the control
/// socket, the image's volumes, its secrets and faas-init where they apply.
fn mounts(input: &SpecInput<'_>) -> Vec<Value> {
    let SpecInput {
        control_sock,
        image,
        options,
        init,
        secrets,
        ..
    } = *input;
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }),
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "nodev", "mode=1777", TMP_SIZE] }),
        json!({ "destination": layout::CONTROL_SOCKET, "type": "bind", "source": control_sock, "options": ["bind"] }),
    ];
    let size = format!("size={}", options.scratch);
    let owner = [format!("uid={}", image.uid), format!("gid={}", image.gid)];
    for volume in &image.volumes {
        mounts.push(json!({
            "destination": volume, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=755", owner[0], owner[1], size],
        }));
    }
    if let Some((dir, _)) = secrets {
        mounts.push(json!({
            "destination": layout::SECRETS, "type": "bind", "source": dir,
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
    if options.fork {
        mounts.push(json!({
            "destination": layout::IMAGE, "type": "bind", "source": input.image_root,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
        if let Some(stats) = input.fork_stats {
            mounts.push(json!({
                "destination": layout::FORK_STATS, "type": "bind", "source": stats,
                "options": ["bind", "nosuid", "nodev", "noexec"],
            }));
        }
        if let Some(cgroup) = input.fork_cgroup {
            mounts.push(json!({
                "destination": layout::CGROUP, "type": "bind", "source": cgroup,
                "options": ["bind", "nosuid", "nodev", "noexec"],
            }));
        }
    }
    if let (true, Some(init)) = (options.runs_init(), init) {
        mounts.push(json!({
            "destination": layout::FAAS_INIT, "type": "bind", "source": init,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/app".into(), "A=image".into(), "B=image".into()],
            entrypoint: vec!["/handler".into()],
            cmd: vec!["serve".into()],
            working_dir: "/work".into(),
            user: "1000".into(),
            uid: 1000,
            gid: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn deploy_env_overrides_image_env() {
        let mut options = DeployOptions::default();
        options.env.insert("B".into(), "deploy".into());
        let env = environment(&image(), &options, &[], "f", 5000);
        assert_eq!(
            env,
            vec!["PATH=/app", "A=image", "B=deploy", "FAAS_FUNCTION=f"]
        );
    }

    #[test]
    fn spec_is_locked_down() {
        let options = DeployOptions {
            memory: 64 << 20,
            ..Default::default()
        };
        let img = image();
        let spec = render(&SpecInput {
            function: "f",
            rootfs: Path::new("/state/rootfs/f-v1"),
            image_root: Path::new("/state/rootfs/f-v1"),
            fork_cgroup: None,
            fork_stats: None,
            control_sock: Path::new("/state/bundles/f-1/control.sock"),
            image: &img,
            options: &options,
            cgroup: "/faasd/f-1",
            id_base: 1 << 30,
            seccomp_bpf: None,
            init: None,
            connect_timeout_ms: 5000,
            secrets: None,
        });
        // A writable layer (mounted by the runtime's caller) by default.
        assert_eq!(spec["root"]["readonly"], false);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["args"], json!(["/handler", "serve"]));
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["process"]["cwd"], "/work");
        // Docker's set bounds it; a non-root user has none in effect.
        let bounding = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("bounding")
            .len();
        assert_eq!(bounding, crate::api::caps::DEFAULT.len());
        assert_eq!(spec["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(spec["process"]["capabilities"]["ambient"], json!([]));
        assert_eq!(
            spec["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let ns: Vec<&str> = spec["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        for want in ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"] {
            assert!(ns.contains(&want), "{want} namespace missing");
        }
        let map = json!([{ "containerID": 0, "hostID": 1 << 30, "size": 65536 }]);
        assert_eq!(spec["linux"]["uidMappings"], map);
        assert_eq!(spec["linux"]["gidMappings"], map);
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let mounts = spec["mounts"].as_array().expect("mounts");
        assert!(mounts.iter().any(|m| m["destination"] == "/control.sock"
            && m["source"] == "/state/bundles/f-1/control.sock"));
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/tmp" && m["type"] == "tmpfs"));
        assert!(!mounts.iter().any(|m| m["destination"] == "/.faas-init"));
    }

    #[test]
    fn other_kinds_run_faas_init_mounted_read_only() {
        let img = image();
        let options = DeployOptions {
            kind: HandlerKind::ContainerPort(8080),
            ..Default::default()
        };
        let spec = render(&SpecInput {
            function: "f",
            rootfs: Path::new("/r"),
            image_root: Path::new("/r"),
            fork_cgroup: None,
            fork_stats: None,
            control_sock: Path::new("/b/control.sock"),
            image: &img,
            options: &options,
            cgroup: "/faasd/f-1",
            id_base: 1 << 30,
            seccomp_bpf: None,
            init: Some(Path::new("/state/init/faas-init")),
            connect_timeout_ms: 3000,
            secrets: None,
        });
        assert_eq!(
            spec["process"]["args"],
            json!(["/.faas-init", "port", "8080", "--", "/handler", "serve"])
        );
        let mounts = spec["mounts"].as_array().expect("mounts");
        let init = mounts
            .iter()
            .find(|m| m["destination"] == "/.faas-init")
            .expect("faas-init mounted");
        assert_eq!(init["source"], "/state/init/faas-init");
        assert!(init["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro")));
        let env = spec["process"]["env"].as_array().expect("env");
        assert!(env.contains(&json!("FAAS_CONNECT_TIMEOUT=3000")));
        let stdio = DeployOptions {
            kind: HandlerKind::Stdio,
            ..Default::default()
        };
        assert_eq!(
            args(&img, &stdio),
            ["/.faas-init", "stdio", "--", "/handler", "serve"]
        );
        // A warm reused server is given the function's listener at its bind.
        let bound = DeployOptions {
            reuse: true,
            warm: 2,
            ..options.clone()
        };
        assert_eq!(args(&img, &bound)[1..3], ["bind", "8080"]);
        let cold = DeployOptions { warm: 0, ..bound };
        assert_eq!(args(&img, &cold)[1..3], ["port", "8080"]);
    }

    #[test]
    fn secrets_are_a_read_only_mount_and_variables() {
        let img = image();
        let options = DeployOptions::default();
        let env = [("PGPASSWORD".to_string(), "hunter2".to_string())];
        let spec = render(&SpecInput {
            function: "f",
            rootfs: Path::new("/r"),
            image_root: Path::new("/r"),
            fork_cgroup: None,
            fork_stats: None,
            control_sock: Path::new("/b/control.sock"),
            image: &img,
            options: &options,
            cgroup: "/faasd/f-1",
            id_base: 1 << 30,
            seccomp_bpf: None,
            init: None,
            connect_timeout_ms: 3000,
            secrets: Some((Path::new("/state/secrets-run/f-v1"), &env)),
        });
        let mounts = spec["mounts"].as_array().expect("mounts");
        let m = mounts
            .iter()
            .find(|m| m["destination"] == "/run/secrets")
            .expect("secrets mounted");
        assert_eq!(m["source"], "/state/secrets-run/f-v1");
        assert!(m["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro")));
        let env = spec["process"]["env"].as_array().expect("env");
        assert!(env.contains(&json!("PGPASSWORD=hunter2")));
    }
}
