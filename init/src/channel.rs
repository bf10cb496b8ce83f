//! The channel between a `--fork` zygote and a prepared child: the child
//! says its sandbox is made (a fork server's child may enter it then);
//! the zygote sends, when a connection comes, the time it received it and
//! the connection, or word that a fork server's child takes the child's
//! namespaces; EOF lets the child go. Both sides' halves are here.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::stats::Stats;

/// How long a fork server's connection waits for a child being prepared
/// (its sandbox takes about a millisecond).
const PREPARE_WAIT: Duration = Duration::from_secs(2);

/// CLOCK_MONOTONIC in nanoseconds: a child measures its start from the
/// zygote's receipt of its connection with it.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The start latency of a child's connection, received by the zygote at
/// `received` (`fork::monotonic_ns`), into the zygote's counters; then the
/// mapping goes (the program never has it).
pub fn record(stats: Option<&Stats>, received: u64) {
    if let Some(stats) = stats {
        let now = monotonic_ns();
        stats.record(std::time::Duration::from_nanos(
            now.saturating_sub(received),
        ));
        stats.unmap_here();
    }
}

/// What the zygote gives a prepared child.
pub enum Handed {
    /// Its connection, and when the zygote received it.
    Connection(OwnedFd, u64),
    /// A fork server's child serves in its namespaces instead.
    ToForkServer,
    /// Nothing: the zygote lets it go.
    Nothing,
}

/// What the zygote says instead of a connection's time when a fork
/// server's child takes the child's namespaces.
pub const TO_FORK_SERVER: u64 = u64::MAX;

/// The zygote's next word to a prepared child. The child says first that
/// its sandbox is made: a fork server's child may enter it now (a zygote
/// without a fork server reads none of it, and may have let go of its end
/// already, the connection sent).
pub fn next(stream: &mut UnixStream) -> Result<Handed, String> {
    let _ = stream.write_all(&[1]);
    let mut when = [0u8; 8];
    match stream.read_exact(&mut when) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Handed::Nothing),
        Err(e) => return Err(format!("waiting for a connection: {e}")),
    }
    if u64::from_le_bytes(when) == TO_FORK_SERVER {
        return Ok(Handed::ToForkServer);
    }
    let mut byte = [0u8; 1];
    let got = faas_protocol::recv_fds(stream.as_fd(), &mut byte, faas_protocol::Wait::Yes)
        .map_err(|e| format!("receiving its connection: {e}"))?;
    let conn = got
        .fds
        .into_iter()
        .next()
        .ok_or("the zygote sent no connection")?;
    Ok(Handed::Connection(conn, u64::from_le_bytes(when)))
}

/// Waits for a prepared child to say its sandbox is made (at once, for
/// one prepared a while ago; at most `PREPARE_WAIT`).
pub fn prepared(channel: &UnixStream) -> std::io::Result<()> {
    channel.set_read_timeout(Some(PREPARE_WAIT))?;
    let mut byte = [0u8; 1];
    (&*channel).read_exact(&mut byte)
}

/// Tells a prepared child that a fork server's child serves in its
/// namespaces (`sdk`).
pub fn send_to_fork_server(channel: &UnixStream) -> std::io::Result<()> {
    (&*channel).write_all(&TO_FORK_SERVER.to_le_bytes())
}

/// Gives a prepared child its connection: when it was received, then the
/// descriptor.
pub fn send_connection(channel: &UnixStream, conn: &OwnedFd, received: u64) -> std::io::Result<()> {
    (&*channel).write_all(&received.to_le_bytes())?;
    faas_protocol::send_fds(channel.as_fd(), &[conn.as_fd()])
}
