//! Docker's runtime contract, inside faasd's sandbox: a writable root of
//! each container's own (gone with it, bounded by `--scratch`, read-only
//! with `--read-only`), VOLUMEs writable, Docker's default capabilities
//! acting only inside the container's user namespace (`--cap-add`,
//! `--cap-drop`), port 80 for any user.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;

use common::*;
use faasd::api::DeployOptions;
use faasd::image::build::ImageSpec;

fn probe(user: &str, env: &[&str]) -> ImageSpec {
    let mut spec = probe_image("inspect", env);
    spec.config.user = user.into();
    spec
}

fn ask(ip: IpAddr) -> HashMap<String, String> {
    let (status, body) = call(ip).expect("request");
    assert_eq!(status, 200, "{body}");
    kv(&body)
}

fn with(options: DeployOptions) -> DeployOptions {
    DeployOptions { warm: 1, ..options }
}

#[test]
fn each_container_writes_its_own_root_and_leaves_nothing() {
    let d = Daemon::start();
    let mut spec = probe("0", &["PROBE_WRITES=/data", "PROBE_FILL_MB=16"]);
    spec.config.volumes = vec!["/data".into()];
    let ip = d.deploy("w", &spec, &with(DeployOptions::default())).ip;
    for round in 0..3 {
        let v = ask(ip);
        assert_eq!(v["rootfs_write"], "ok", "round {round}");
        assert_eq!(
            v["rootfs_seen"], "false",
            "another container's file, round {round}"
        );
        assert_eq!(v["write./data"], "ok", "the VOLUME");
        assert_eq!(v["fill"], "ok", "16 MiB in a 64 MiB layer");
    }
    // Bounded: 16 MiB does not fit an 8 MiB layer.
    let small = DeployOptions {
        scratch: 8 << 20,
        ..DeployOptions::default()
    };
    let ip = d.deploy("w", &spec, &with(small)).ip;
    let v = ask(ip);
    assert_eq!(v["fill"], "denied(28)", "ENOSPC at --scratch");
    // Counted against the container's memory: 48 MiB in a 64 MiB layer of
    // a 32 MiB container is the OOM killer's, answered 502.
    let tight = DeployOptions {
        memory: 32 << 20,
        ..DeployOptions::default()
    };
    let heavy = probe("0", &["PROBE_FILL_MB=48"]);
    let ip = d.deploy("heavy", &heavy, &with(tight)).ip;
    assert_eq!(
        call(ip).expect("request").0,
        502,
        "the layer is the container's memory"
    );
    // --read-only: today's root, the VOLUME and /tmp still writable.
    let ro = DeployOptions {
        read_only: true,
        ..DeployOptions::default()
    };
    let info = d.deploy("w", &spec, &with(ro));
    assert!(
        info.sandbox.rootfs.starts_with("read-only"),
        "{:?}",
        info.sandbox
    );
    let v = ask(info.ip);
    assert_eq!(v["rootfs_write"], "denied(30)", "EROFS");
    assert_eq!(v["write./data"], "ok");
    assert_eq!(v["tmp_write"], "ok");
    // Nothing of the layers is left: no mount under the state directory
    // in faasd's namespace once the containers are gone.
    for name in ["w", "heavy"] {
        assert!(d.faas(&["rm", name], None).status.success());
    }
    assert!(
        d.wait_quiet(std::time::Duration::from_secs(10)),
        "containers left"
    );
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).expect("mountinfo");
    let bundles = d.state.join("bundles");
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!("{}/", bundles.display())))
        .collect();
    assert!(left.is_empty(), "writable layers left mounted: {left:?}");
}

#[test]
fn dockers_capabilities_act_only_inside_the_container() {
    let d = Daemon::start();
    let ip = d
        .deploy("root", &probe("0", &[]), &with(DeployOptions::default()))
        .ip;
    let v = ask(ip);
    // Docker's a80425fb, less MKNOD (bit 27) and NET_RAW (bit 13).
    assert_eq!(v["CapEff"], "00000000a00405fb");
    assert_eq!(
        v["chown_other"], "ok",
        "CAP_CHOWN, among the container's ids"
    );
    assert_eq!(
        v["setuid_unmapped"], "denied(22)",
        "no id outside the range"
    );
    assert_eq!(v["raw_socket"], "denied(1)", "no NET_RAW");
    assert_eq!(v["mknod"], "denied(1)", "no MKNOD");
    assert_eq!(v["bind80"], "ok");
    assert_eq!(v["mount"], "denied(1)", "seccomp still");
    assert_eq!(v["unshare_user"], "denied(1)");
    assert_eq!(v["procs"], "1", "nothing of the host in sight");
    assert_eq!(v["NoNewPrivs"], "1");
    // The chowned file belongs to an id of the function's own range.
    let map: Vec<u64> = v["uid_map"]
        .split(' ')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(map[1] >= 65536, "container root is host uid {}", map[1]);

    let none = DeployOptions {
        cap_drop: vec!["ALL".into()],
        ..DeployOptions::default()
    };
    let v = ask(d.deploy("root", &probe("0", &[]), &with(none)).ip);
    assert_eq!(v["CapEff"], "0000000000000000");
    assert_eq!(v["chown_other"], "denied(1)");
    assert_eq!(v["bind80"], "ok", "low ports need no capability here");

    let raw = DeployOptions {
        cap_add: vec!["NET_RAW".into()],
        ..DeployOptions::default()
    };
    let v = ask(d.deploy("root", &probe("0", &[]), &with(raw)).ip);
    assert_eq!(v["raw_socket"], "ok", "--cap-add NET_RAW");
    assert_eq!(v["egress"], "untested");

    let out = d.faas(&["update", "root", "--cap-add", "FLY"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown capability"),
        "{out:?}"
    );
}

/// faas-init holds CAP_SYS_PTRACE (to serve servers whose workers change
/// user) and its program never gets it, nor the variable that names it.
#[test]
fn the_program_faas_init_starts_gets_only_the_functions_capabilities() {
    let d = Daemon::start();
    let script = "while read -r l; do [ ${#l} -le 1 ] && break; done; \
                  printf 'HTTP/1.0 200 OK\\r\\n\\r\\n'; \
                  grep -E '^Cap(Eff|Bnd|Prm|Amb):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'; \
                  echo drop=${FAAS_INIT_DROP:-unset}";
    let busybox =
        which("busybox").expect("busybox: scripts/install-deps.sh installs busybox-static");
    let mut tree = common::stock::Tree::default();
    let busybox = busybox.to_string_lossy().into_owned();
    tree.file(&busybox).link("/bin/sh", &busybox).users();
    let image = tree.image(
        faasd::image::build::RunConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
        "busybox-caps:test",
    );
    let root = "00000000a00405fb";
    let zero = "0000000000000000";
    // (options, user, CapEff = CapPrm, CapBnd)
    for (options, user, in_effect, bounding) in [
        (DeployOptions::default(), "0", root, root),
        (DeployOptions::default(), "1000", zero, root),
        (
            DeployOptions {
                cap_drop: vec!["ALL".into()],
                ..DeployOptions::default()
            },
            "0",
            zero,
            zero,
        ),
    ] {
        let options = DeployOptions {
            kind: faasd::api::HandlerKind::Stdio,
            ..with(options)
        };
        let mut image = image.clone();
        image.config.user = user.into();
        let v = ask(d.deploy("caps", &image, &options).ip);
        assert_eq!(v["CapEff"], in_effect, "user {user}");
        assert_eq!(v["CapPrm"], in_effect, "user {user}");
        assert_eq!(v["CapBnd"], bounding, "user {user}");
        assert_eq!(v["CapAmb"], zero, "user {user}");
        assert_eq!(v["drop"], "unset");
    }
}
