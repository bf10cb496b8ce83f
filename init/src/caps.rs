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
    faas_handler::caps::clear_ambient()?;
    // Inheritable too: at a root program's exec the kernel grants what is
    // inheritable as if the file allowed everything.
    clear_inheritable()?;
    // CAP_SETPCAP last: dropping needs it.
    let ordered = extra
        .iter()
        .filter(|&&c| c != SETPCAP)
        .chain(extra.iter().filter(|&&c| c == SETPCAP));
    ordered
        .copied()
        .try_for_each(|cap| faas_handler::caps::drop_bounding(cap as u32))
}

/// The command that starts `program` without faas-init's capabilities.
pub fn command(program: &[OsString]) -> Command {
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    // SAFETY: only syscalls between fork and exec (`drop_for_program`).
    unsafe { command.pre_exec(drop_for_program) };
    command
}

/// The command that starts `program` as a fork server (`sdk`): it keeps
/// CAP_SYS_ADMIN and CAP_SETPCAP in the zygote's user namespace across
/// its exec as any user, to put its children into their namespaces and
/// seal them (each child gives them up).
pub fn fork_server_command(program: &[OsString]) -> Command {
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    // SAFETY: only syscalls between fork and exec (`keep_for_fork_server`).
    unsafe { command.pre_exec(keep_for_fork_server) };
    command
}

/// Makes CAP_SYS_ADMIN and CAP_SETPCAP inheritable and ambient.
fn keep_for_fork_server() -> io::Result<()> {
    const SYS_ADMIN: u32 = 21;
    let keep = [SYS_ADMIN, SETPCAP as u32];
    set_inheritable(|word, base| {
        for cap in keep {
            if cap / 32 == base {
                *word |= 1 << (cap % 32);
            }
        }
    })?;
    for cap in keep {
        // SAFETY: integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Empties this process's inheritable set (lowering it needs nothing).
fn clear_inheritable() -> io::Result<()> {
    set_inheritable(|word, _| *word = 0)
}

/// Changes this process's inheritable set, word by word (`change` gets
/// each 32-bit word and the number of its first capability / 32).
fn set_inheritable(change: impl Fn(&mut u32, u32)) -> io::Result<()> {
    let mut data = faas_handler::caps::get()?;
    for (base, word) in (0u32..).zip(data.iter_mut()) {
        change(&mut word.inheritable, base);
    }
    faas_handler::caps::set(&data)
}
