//! faasd's handler protocol, owned in one place by every side of it:
//! faasd, `faas-init` and the handler SDK (`faas-handler`).
//!
//! 1. The container's process connects to the Unix stream socket
//!    [`layout::CONTROL_SOCKET`].
//! 2. faasd sends it one message: one data byte and, as SCM_RIGHTS, one
//!    connected TCP socket (or, to a handler that asked for more, up to
//!    [`MAX_BATCH`]).
//! 3. The handler serves it and closes it, then exits; or, when faasd set
//!    `FAAS_REUSE=1`, writes one ready byte on the same connection and
//!    receives again. The byte's value is how many connections it takes
//!    at once ([`batch_of`]).
//!
//! Every descriptor that arrives is owned at once ([`recv_fds`]): none is
//! left for a plain `recv` to have the kernel close on the caller's
//! thread.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Where faasd puts its things in every container.
pub mod layout {
    /// The control socket the handler connects to.
    pub const CONTROL_SOCKET: &str = "/control.sock";
    /// `faas-init`, bind-mounted read-only for the kinds that run it.
    pub const FAAS_INIT: &str = "/.faas-init";
    /// The function's secrets, one read-only file each.
    pub const SECRETS: &str = "/run/secrets";
    /// The image's root once more, read-only and with nothing mounted
    /// in it, in a `--fork` zygote's container: the lower layer of each
    /// child's own writable root (the container's `/` cannot be one: the
    /// kernel's mounts in it are locked to a child).
    pub const IMAGE: &str = "/.faas-image";
    /// A `--fork` zygote's pids cgroup (the container's, given to it):
    /// it makes one per child below it.
    pub const CGROUP: &str = "/.faas-cgroup";
    /// A `--fork` zygote's counters for faasd (`forkstats`).
    pub const FORK_STATS: &str = "/.faas-stats";

    /// Paths of the kernel's filesystems a container never sees (masked
    /// as Docker masks them: `/dev/null` over files, an empty read-only
    /// tmpfs over directories). faasd has the runtime mask them; under
    /// `--fork` faas-init masks them again in each child's own `/proc`.
    pub const MASKED: &[&str] = &[
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    /// Paths a container sees read-only.
    pub const READONLY: &[&str] = &[
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];

    /// `path` without its leading `/`: where it is inside a rootfs.
    pub const fn in_rootfs(path: &str) -> &str {
        match path.as_bytes() {
            [b'/', rest @ ..] => match std::str::from_utf8(rest) {
                Ok(relative) => relative,
                Err(_) => path,
            },
            _ => path,
        }
    }
}

/// What faasd tells the zygote of a `--fork` function (`faas-init fork`)
/// in its environment; faas-init takes each out before a child runs the
/// image's program.
pub mod fork {
    /// Children alive at once, at most (the zygote asks for no more
    /// connections meanwhile).
    pub const MAX_CHILDREN: &str = "FAAS_FORK_MAX";
    /// Milliseconds a child may live: its connection's timeout.
    pub const TIMEOUT_MS: &str = "FAAS_FORK_TIMEOUT_MS";
    /// The capabilities (numbers, comma-separated) the image's program
    /// may hold, as in a fresh container of the function.
    pub const CAPS: &str = "FAAS_FORK_CAPS";
    /// Each child's writable root: `overlay:BYTES` (a fresh writable
    /// layer of that size over the read-only image) or `ro`.
    pub const ROOT: &str = "FAAS_FORK_ROOT";
    /// Where a child gets fresh tmpfs mounts: `PATH:BYTES:UID:GID:MODE`
    /// entries separated by `;` (`/tmp` and the image's volumes).
    pub const TMPFS: &str = "FAAS_FORK_TMPFS";
    /// Processes one child may have at once (its own pids cgroup, when
    /// faasd gave the zygote one at `layout::CGROUP`).
    pub const PIDS: &str = "FAAS_FORK_PIDS";
    /// Every variable above.
    pub const ALL: &[&str] = &[MAX_CHILDREN, TIMEOUT_MS, CAPS, ROOT, TMPFS, PIDS];

    /// To a program started as the fork server (the SDK's `fork_serve`):
    /// the descriptor of its socket to the zygote. It writes one byte once
    /// it is ready, then receives, per connection, 8 bytes (when the
    /// zygote received it, CLOCK_MONOTONIC ns, little-endian) and a
    /// message carrying the connection, a pidfd of the process whose
    /// namespaces the connection's child enters (all but the user
    /// namespace; then it forks once more to be in its pid namespace),
    /// and a pipe's write end the child keeps open until it is done.
    pub const SERVER: &str = "FAAS_FORK_SERVER";
    /// The seccomp program each of its children installs before serving
    /// (classic BPF, `struct sock_filter` array, in hex). With it, each
    /// child keeps only `CAPS` (the capability numbers the program may
    /// hold) and drops every other capability up to `LAST_CAP`.
    pub const SEAL: &str = "FAAS_FORK_SEAL";
    pub const LAST_CAP: &str = "FAAS_FORK_LAST_CAP";
}

/// The file a `--fork` zygote counts its children in for faasd
/// (`layout::FORK_STATS`): little-endian 64-bit words, each written with
/// one atomic store or add, read by faasd while the container lives.
pub mod forkstats {
    /// Word 0: what the file is.
    pub const MAGIC: u64 = u64::from_le_bytes(*b"faasfk01");
    /// Children cloned.
    pub const STARTED: usize = 1;
    /// Children ended (reaped).
    pub const ENDED: usize = 2;
    /// Connections no child could be made for.
    pub const FAILED: usize = 3;
    /// How many start latencies were written to the ring so far.
    pub const RING_NEXT: usize = 4;
    /// The ring of start latencies (nanoseconds from the zygote's receipt
    /// of a connection to the program's start): entry `n` at word
    /// `RING + n % RING_LEN`.
    pub const RING: usize = 8;
    pub const RING_LEN: usize = 1024;
    /// The file's size.
    pub const BYTES: usize = (RING + RING_LEN) * 8;
}

/// Most connections faasd hands over in one message.
pub const MAX_BATCH: usize = 16;

/// The data byte each message carries (SCM_RIGHTS needs one).
const CARRIER: u8 = b'F';

/// The most descriptors one message can carry (the kernel's SCM_MAX_FD):
/// a receiver makes room for them all, so whatever comes is owned.
const SCM_MAX_FD: usize = 253;

/// How many connections a ready byte asks for: 1 to [`MAX_BATCH`], and
/// anything else means one.
pub fn batch_of(ready: u8) -> usize {
    match usize::from(ready) {
        n @ 1..=MAX_BATCH => n,
        _ => 1,
    }
}

/// Sends `fds` (at most [`MAX_BATCH`]; more is an error) in one message
/// over `conn`. Never waits (each message goes to an empty send buffer:
/// a full one means a broken peer) and never raises SIGPIPE.
pub fn send_fds(conn: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_BATCH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message carries 1 to {MAX_BATCH} descriptors, not {}",
                fds.len()
            ),
        ));
    }
    let mut raw: [RawFd; MAX_BATCH] = [-1; MAX_BATCH];
    for (r, fd) in raw.iter_mut().zip(fds) {
        *r = fd.as_raw_fd();
    }
    let payload = [CARRIER];
    let iov = [IoSlice::new(&payload)];
    let cmsg = [ControlMessage::ScmRights(&raw[..fds.len()])];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, flags, None)
        .map(drop)
        .map_err(io::Error::from)
}

/// Writes a ready byte asking for `batch` connections; false if faasd
/// has gone (it closed the connection).
pub fn send_ready(conn: BorrowedFd<'_>, batch: u8) -> io::Result<bool> {
    let byte = [batch];
    let iov = [IoSlice::new(&byte)];
    match sendmsg::<()>(conn.as_raw_fd(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether [`recv_fds`] waits for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    No,
}

/// One message received: its data bytes, and the descriptors it carried,
/// owned.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message on `conn` into `buf`, taking every descriptor it
/// carries (close-on-exec). `bytes` is 0 when the peer closed.
pub fn recv_fds(conn: BorrowedFd<'_>, buf: &mut [u8], wait: Wait) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if wait == Wait::No {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(io::Error::from)?;
    let bytes = msg.bytes;
    let fds = match msg.cmsgs() {
        Ok(cmsgs) => cmsgs
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => Some(fds),
                _ => None,
            })
            .flatten()
            .map(owned)
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(Received { bytes, fds })
}

/// A descriptor `recvmsg` just installed, owned.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in our table with this message;
    // nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_batch_arrives_whole_and_owned() {
        let (faasd, handler) = UnixStream::pair().expect("pair");
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().expect("pair")).collect();
        let fds: Vec<_> = pairs.iter().map(|(_, b)| b.as_fd()).collect();
        send_fds(faasd.as_fd(), &fds).expect("send");
        let mut byte = [0u8; 1];
        let got = recv_fds(handler.as_fd(), &mut byte, Wait::Yes).expect("recv");
        assert_eq!((got.bytes, byte[0], got.fds.len()), (1, CARRIER, 3));
        for ((mut a, _), fd) in pairs.into_iter().zip(got.fds) {
            UnixStream::from(fd).write_all(b"hi").expect("write");
            let mut two = [0u8; 2];
            a.read_exact(&mut two).expect("read");
            assert_eq!(&two, b"hi");
        }
    }

    #[test]
    fn a_dead_peer_is_an_error_not_a_signal() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        drop(theirs);
        let (_a, b) = UnixStream::pair().expect("pair");
        assert!(send_fds(ours.as_fd(), &[b.as_fd()]).is_err());
        assert!(!send_ready(ours.as_fd(), 1).expect("ready"));
    }

    #[test]
    fn batches_are_bounded_both_ways() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let (_a, b) = UnixStream::pair().expect("pair");
        let many = vec![b.as_fd(); MAX_BATCH + 1];
        assert!(send_fds(ours.as_fd(), &many).is_err());
        assert!(send_fds(ours.as_fd(), &[]).is_err());
        assert_eq!(batch_of(0), 1);
        assert_eq!(batch_of(8), 8);
        assert_eq!(batch_of(16), 16);
        assert_eq!(batch_of(17), 1);
    }

    #[test]
    fn layout_paths_are_absolute_and_relative_in_a_rootfs() {
        assert_eq!(layout::in_rootfs(layout::SECRETS), "run/secrets");
        assert_eq!(layout::in_rootfs(layout::CONTROL_SOCKET), "control.sock");
        assert_eq!(layout::in_rootfs("x"), "x");
    }

    #[test]
    fn nothing_waiting_is_would_block_and_a_close_is_zero_bytes() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let mut buf = [0u8; 4];
        let e = recv_fds(ours.as_fd(), &mut buf, Wait::No).expect_err("nothing sent");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(theirs);
        let got = recv_fds(ours.as_fd(), &mut buf, Wait::Yes).expect("recv");
        assert_eq!((got.bytes, got.fds.len()), (0, 0));
    }
}
