//! Capabilities as Docker names them (`--cap-add NET_ADMIN`, `--cap-drop
//! ALL`): the names a deploy may give, Docker's default set, and the set a
//! function's containers get from both. They act inside the container's
//! user namespace only (its root is an unprivileged host user).

/// Every capability the kernel knows (Linux 6.x), without `CAP_`.
pub const KNOWN: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set, less `MKNOD` (no device may be made or opened
/// here anyway: the device cgroup denies all) and `NET_RAW` (raw and
/// packet sockets: nothing a server needs, and a way to forge packets on
/// an `--egress` link).
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "SETFCAP",
    "AUDIT_WRITE",
];

/// `name` as this module spells it (upper case, no `CAP_`), if the kernel
/// has it; `ALL` too.
pub fn parse(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" || KNOWN.contains(&bare) {
        Ok(bare.to_string())
    } else {
        Err(format!(
            "unknown capability {name:?} (Docker's names: NET_ADMIN, SYS_PTRACE, …, or ALL)"
        ))
    }
}

/// The set a container gets: Docker's default, less `drop`, plus `add`
/// (`ALL` in either meaning every capability), as `CAP_` names.
pub fn resolve(add: &[String], drop: &[String]) -> Vec<String> {
    let all = |list: &[String]| list.iter().any(|c| c == "ALL");
    KNOWN
        .iter()
        .filter(|c| {
            let named = |list: &[String]| list.iter().any(|x| x == *c);
            let kept = DEFAULT.contains(c) && !all(drop) && !named(drop);
            kept || all(add) || named(add)
        })
        .map(|c| format!("CAP_{c}"))
        .collect()
}

/// The kernel's number of a `CAP_` name (`KNOWN` is in the kernel's order).
pub fn number(cap: &str) -> Option<u32> {
    let bare = cap.strip_prefix("CAP_").unwrap_or(cap);
    KNOWN
        .iter()
        .position(|c| *c == bare)
        .and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn docker_semantics() {
        assert_eq!(resolve(&[], &[]).len(), DEFAULT.len());
        assert!(resolve(&[], &list(&["ALL"])).is_empty());
        assert_eq!(
            resolve(&list(&["NET_BIND_SERVICE"]), &list(&["ALL"])),
            vec!["CAP_NET_BIND_SERVICE"]
        );
        let fewer = resolve(&[], &list(&["CHOWN"]));
        assert!(!fewer.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(fewer.len(), DEFAULT.len() - 1);
        assert!(resolve(&list(&["NET_ADMIN"]), &[]).contains(&"CAP_NET_ADMIN".to_string()));
        assert_eq!(resolve(&list(&["ALL"]), &[]).len(), KNOWN.len());
    }

    #[test]
    fn names_are_dockers() {
        assert_eq!(parse("net_admin"), Ok("NET_ADMIN".into()));
        assert_eq!(parse("CAP_SYS_PTRACE"), Ok("SYS_PTRACE".into()));
        assert_eq!(parse("all"), Ok("ALL".into()));
        assert!(parse("FLY").is_err());
        assert!(parse("").is_err());
    }
}
