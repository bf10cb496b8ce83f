//! The seccomp allowlist compiled by faasd itself into the classic BPF
//! program the kernel runs (x86_64), once per process. crun takes it as
//! `run.oci.seccomp_bpf_data` and then skips compiling the spec's
//! `linux.seccomp` section with libseccomp at every container start
//! (measured: the section costs ~3 ms per `crun run`). runc has no such
//! option and compiles the section itself.
//!
//! The program does what `seccomp::profile` says to libseccomp: native
//! calls only (other architectures and x32 numbers: EPERM), the allowed
//! calls, `clone` without namespace flags, `clone3` ENOSYS, anything else
//! EPERM. Allowed calls are tested one after the other; the kernel's
//! action cache answers most of them without running the filter at all,
//! as none of them depends on an argument.

use std::sync::OnceLock;

use base64::Engine;

use super::seccomp::{Profile, ALLOWED, CLONE_NAMESPACE_FLAGS, ENOSYS, EPERM, ZYGOTE_ALLOWED};

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Numbers from here on are the x32 ABI's.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program for crun's `run.oci.seccomp_bpf_data`: base64 of the raw
/// `sock_filter` array, built on first use.
pub fn crun_annotation(which: Profile) -> &'static str {
    static DEFAULT: OnceLock<String> = OnceLock::new();
    static ZYGOTE: OnceLock<String> = OnceLock::new();
    let cell = match which {
        Profile::Default => &DEFAULT,
        Profile::Zygote => &ZYGOTE,
    };
    cell.get_or_init(|| base64::engine::general_purpose::STANDARD.encode(bytes(&program(which))))
}

fn program(which: Profile) -> Vec<Insn> {
    let errno = |e: u32| stmt(RET_K, RET_ERRNO | e);
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        errno(EPERM),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        errno(EPERM),
    ];
    let zygote: &[&str] = match which {
        Profile::Default => &[],
        Profile::Zygote => ZYGOTE_ALLOWED,
    };
    let mut numbers: Vec<u32> = ALLOWED
        .iter()
        .chain(zygote)
        .filter_map(|name| number(name))
        .collect();
    if which == Profile::Zygote {
        numbers.extend(number("clone"));
    }
    numbers.sort_unstable();
    numbers.dedup();
    for nr in numbers {
        p.push(jump(JEQ_K, nr, 0, 1));
        p.push(stmt(RET_K, RET_ALLOW));
    }
    if let Some(clone) = number("clone") {
        p.push(jump(JEQ_K, clone, 0, 5));
        p.push(stmt(LD_W_ABS, ARG0_LOW));
        // The namespace flags all sit in the low 32 bits.
        p.push(stmt(AND_K, CLONE_NAMESPACE_FLAGS as u32));
        p.push(jump(JEQ_K, 0, 0, 1));
        p.push(stmt(RET_K, RET_ALLOW));
        p.push(errno(EPERM));
    }
    if let Some(clone3) = number("clone3") {
        p.push(jump(JEQ_K, clone3, 0, 1));
        p.push(errno(ENOSYS));
    }
    p.push(errno(EPERM));
    p
}

fn bytes(program: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// The x86_64 number of system call `name` (the `syscalls` crate's
/// table of this architecture's calls, taken from the kernel's).
fn number(name: &str) -> Option<u32> {
    let nr: syscalls::Sysno = name.parse().ok()?;
    u32::try_from(nr.id()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_call_has_a_number() {
        for name in ALLOWED {
            assert!(number(name).is_some(), "{name} has no x86_64 number");
        }
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("clone"), Some(56));
        assert_eq!(number("no_such_call"), None);
        assert!(!ALLOWED.contains(&"mount"), "mount is not allowed");
    }

    #[test]
    fn the_program_checks_arch_then_allows_then_denies() {
        let p = program(Profile::Default);
        assert!(p.len() < 4096, "the kernel takes at most 4096 instructions");
        assert_eq!(p[0], stmt(LD_W_ABS, ARCH));
        assert_eq!(p[1].k, AUDIT_ARCH_X86_64);
        assert_eq!(p.last(), Some(&stmt(RET_K, RET_ERRNO | EPERM)));
        // read (0) is allowed: a compare followed by ALLOW.
        let read = p
            .iter()
            .position(|i| i.code == JEQ_K && i.k == 0 && i.jf == 1);
        assert!(read.is_some_and(|at| p[at + 1] == stmt(RET_K, RET_ALLOW)));
        // mount (165) is never compared.
        assert!(!p.iter().any(|i| i.code == JEQ_K && i.k == 165));
        // Every jump lands inside the program.
        for (at, i) in p.iter().enumerate() {
            if i.code == JEQ_K || i.code == JGE_K {
                assert!(at + 1 + usize::from(i.jt.max(i.jf)) < p.len());
            }
        }
        assert_eq!(bytes(&p).len(), p.len() * 8);
        assert!(!crun_annotation(Profile::Default).is_empty());
        // A zygote's mount (165) is allowed.
        let z = program(Profile::Zygote);
        let mount = z
            .iter()
            .position(|i| i.code == JEQ_K && i.k == 165 && i.jf == 1);
        assert!(mount.is_some_and(|at| z[at + 1] == stmt(RET_K, RET_ALLOW)));
        assert_ne!(
            crun_annotation(Profile::Zygote),
            crun_annotation(Profile::Default)
        );
    }
}
