//! Capabilities faas-init holds for its own work and its program must
//! not: faasd gives it CAP_SYS_PTRACE (to read the descriptors and write
//! the memory of a server's processes that changed user, which the kernel
//! makes not dumpable) and CAP_SETPCAP (to let go of it) where the
//! function has not got them, and names them in `FAAS_INIT_DROP` (ambient,
//! so faas-init keeps them as any user). Every program faas-init starts
//! has the ambient set cleared and them taken out of its bounding set
//! before its exec, so they are gone from it; the variable goes too.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

use nix::libc;

const VAR: &str = "FAAS_INIT_DROP";
/// CAP_SETPCAP (linux/capability.h).
const SETPCAP: i32 = 8;

static EXTRA: OnceLock<Vec<i32>> = OnceLock::new();

/// Reads (and removes from the environment the program inherits) the
/// capabilities to drop. Call once at start, while single-threaded.
pub fn take() {
    let extra: Vec<i32> = std::env::var(VAR)
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    std::env::remove_var(VAR);
    let _ = EXTRA.set(extra);
}

/// Drops them from the bounding set of this process (a forked child about
/// to exec the program, or faas-init about to become it). Only syscalls:
/// safe between fork and exec.
pub fn drop_for_program() -> io::Result<()> {
    let Some(extra) = EXTRA.get() else {
        return Ok(());
    };
    if extra.is_empty() {
        return Ok(());
    }
    // faasd made them ambient, so faas-init keeps them as any user; the
    // program must not inherit that.
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Inheritable too: at a root program's exec the kernel grants what is
    // inheritable as if the file allowed everything.
    clear_inheritable()?;
    // CAP_SETPCAP last: dropping needs it.
    let ordered = extra
        .iter()
        .filter(|&&c| c != SETPCAP)
        .chain(extra.iter().filter(|&&c| c == SETPCAP));
    for &cap in ordered {
        // SAFETY: integer arguments only (nix has no PR_CAPBSET_DROP).
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The command that starts `program` without faas-init's capabilities.
pub fn command(program: &[OsString]) -> Command {
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    // SAFETY: only syscalls between fork and exec (`drop_for_program`).
    unsafe { command.pre_exec(drop_for_program) };
    command
}

/// Empties this process's inheritable set (lowering it needs nothing).
fn clear_inheritable() -> io::Result<()> {
    /// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    const VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: `header` and `data` are the layouts capget writes (version 3:
    // two data words), both valid for writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for word in &mut data {
        word.inheritable = 0;
    }
    // SAFETY: as above; capset only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
