//! How a `--fork` function's pool container differs from any other: it
//! holds a zygote (`faas-init fork MODE`) that makes each connection's
//! sandbox itself, so the container lets it — its seccomp profile allows
//! namespaces and mounts (`seccomp::Profile::Zygote`), `/proc` is left
//! unmasked so a child may mount its own (the kernel refuses a new proc
//! where the container's is partly covered), its root is the read-only
//! image, and faas-init holds CAP_SETUID and CAP_SETGID to map a child's
//! ids. Each child masks `/proc` again, gets its own writable paths and
//! seals itself (faas-init's `child`, `seal`) before the program runs.
//! What the zygote is told (`faas_protocol::fork`) comes from here.

use crate::api::{caps, DeployOptions, HandlerKind};
use crate::image::ImageConfig;
use faas_protocol::fork as vars;

/// Size of a child's `/tmp`, as a container's.
pub const TMP_BYTES: u64 = 64 << 20;
/// Processes one child may have at once: a container's limit.
pub const CHILD_PIDS: i64 = 64;
/// Processes a child usually has (faas-init and the program, or the
/// program alone), counted for the zygote's container as a whole.
const PIDS_PER_CHILD: i64 = 4;

/// The pids limit of a zygote's container: one child's fork bomb takes at
/// most `CHILD_PIDS` and leaves room for the others.
pub fn pids_limit(options: &DeployOptions) -> i64 {
    CHILD_PIDS + PIDS_PER_CHILD * i64::from(max_children(options))
}

/// `faas-init`'s mode words for the zygote.
pub fn mode(kind: HandlerKind) -> Vec<String> {
    let serve: Vec<String> = match kind {
        HandlerKind::ControlSocket => vec!["control".into()],
        HandlerKind::Stdio => vec!["stdio".into()],
        HandlerKind::ContainerPort(port) => vec!["port".into(), port.to_string()],
        // Refused by `DeployOptions::validate`.
        HandlerKind::SocketActivation => vec!["listen".into()],
    };
    std::iter::once("fork".to_string()).chain(serve).collect()
}

/// Children one zygote serves at once: the function's concurrency shared
/// by its warm containers (at least one each).
pub fn max_children(options: &DeployOptions) -> u32 {
    options.concurrency.div_ceil(options.warm.max(1)).max(1)
}

/// The zygote's variables (`faas_protocol::fork`).
pub fn environment(image: &ImageConfig, options: &DeployOptions) -> Vec<String> {
    let root = match options.read_only {
        true => "ro".to_string(),
        false => format!("overlay:{}", options.scratch),
    };
    let mut tmpfs = vec![format!("/tmp:{TMP_BYTES}:0:0:1777")];
    for volume in &image.volumes {
        tmpfs.push(format!(
            "{volume}:{}:{}:{}:755",
            options.scratch, image.uid, image.gid
        ));
    }
    let caps: Vec<String> = caps::resolve(&options.cap_add, &options.cap_drop)
        .iter()
        .filter_map(|c| caps::number(c))
        .map(|n| n.to_string())
        .collect();
    vec![
        format!("{}={}", vars::MAX_CHILDREN, max_children(options)),
        format!("{}={}", vars::TIMEOUT_MS, options.timeout_secs * 1000),
        format!("{}={}", vars::CAPS, caps.join(",")),
        format!("{}={root}", vars::ROOT),
        format!("{}={}", vars::TMPFS, tmpfs.join(";")),
        format!("{}={CHILD_PIDS}", vars::PIDS),
    ]
}

/// What faas-init holds as a zygote beyond its usual two: CAP_SETUID and
/// CAP_SETGID, to map every id of the container into a child's user
/// namespace (a child changes user as the program would in a container).
pub const ZYGOTE_CAPS: &[&str] = &["CAP_SETUID", "CAP_SETGID"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_is_told_its_children() {
        let options = DeployOptions {
            fork: true,
            warm: 2,
            concurrency: 64,
            kind: HandlerKind::ContainerPort(80),
            ..DeployOptions::default()
        };
        assert_eq!(mode(options.kind), vec!["fork", "port", "80"]);
        assert_eq!(mode(HandlerKind::ControlSocket), vec!["fork", "control"]);
        assert_eq!(max_children(&options), 32);
        let image = ImageConfig {
            volumes: vec!["/data".into()],
            ..ImageConfig::default()
        };
        let env = environment(&image, &options);
        assert!(env.contains(&"FAAS_FORK_MAX=32".to_string()));
        assert!(env.contains(&"FAAS_FORK_TIMEOUT_MS=30000".to_string()));
        assert!(env.contains(&format!("FAAS_FORK_ROOT=overlay:{}", 64 << 20)));
        assert!(env
            .iter()
            .any(|e| e.starts_with("FAAS_FORK_TMPFS=/tmp:67108864:0:0:1777;/data:")));
        // Docker's default set: CHOWN (0) is in, NET_RAW (13) is not.
        let caps = env
            .iter()
            .find_map(|e| e.strip_prefix("FAAS_FORK_CAPS="))
            .expect("caps");
        assert!(caps.split(',').any(|c| c == "0"));
        assert!(!caps.split(',').any(|c| c == "13"));
    }
}
