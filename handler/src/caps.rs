//! A process's capability sets (`capget`/`capset`, the bounding and
//! ambient sets' `prctl`s, which neither std nor nix wraps), for the SDK's
//! fork children and for faas-init. Syscalls only: safe between fork and
//! exec.
#![allow(unsafe_code)]

use std::io;

use nix::libc;

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

/// One 32-bit word of each set, as the kernel lays them out.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Word {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// This process's sets: capabilities 0-31, then 32-63.
pub fn get() -> io::Result<[Word; 2]> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Word::default(); 2];
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
    Ok(data)
}

/// Sets this process's sets to `data`.
pub fn set(data: &[Word; 2]) -> io::Result<()> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: as for `get`; capset only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties this process's ambient set.
pub fn clear_ambient() -> io::Result<()> {
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
    Ok(())
}

/// Takes `cap` out of this process's bounding set (needs CAP_SETPCAP).
pub fn drop_bounding(cap: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Leaves in the bounding set only `caps`, of every capability up to
/// `last` (the kernel's highest).
pub fn bound_to(caps: &[u32], last: u32) -> io::Result<()> {
    (0..=last)
        .filter(|c| !caps.contains(c))
        .try_for_each(drop_bounding)
}
