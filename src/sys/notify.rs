//! systemd's notify protocol (`Type=notify`): `READY=1` once faasd serves,
//! `STOPPING=1` as it starts to stop, and `WATCHDOG=1` every half of
//! `WatchdogSec` while its control runtime answers. Without
//! `NOTIFY_SOCKET` in the environment nothing is sent.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The service manager's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` (and `WATCHDOG_USEC`, if meant for this
    /// process) out of the environment, so no child — runc forwards a
    /// notify socket into its containers when it sees one — inherits them.
    /// Call while the process is still single-threaded.
    pub fn take_from_env() -> io::Result<Option<Self>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(key);
        }
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        let for_us = pid.is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = usec
            .filter(|_| for_us)
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0)
            .map(Duration::from_micros);
        Ok(Some(Self {
            socket: UnixDatagram::unbound()?,
            addr,
            watchdog,
        }))
    }

    /// Sends one state line (`READY=1`, `STOPPING=1`, `STATUS=...`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }

    /// How often to send `WATCHDOG=1`, if the service has a watchdog: half
    /// its timeout, as systemd recommends.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_out_of_the_environment_so_children_do_not_see_it() {
        std::env::set_var("NOTIFY_SOCKET", "@faasd-test-notify");
        std::env::set_var("WATCHDOG_USEC", "4000000");
        let n = Notifier::take_from_env().expect("parse").expect("present");
        assert!(std::env::var_os("NOTIFY_SOCKET").is_none());
        assert!(std::env::var_os("WATCHDOG_USEC").is_none());
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(2)));
        let child = std::process::Command::new("sh")
            .args(["-c", "echo ${NOTIFY_SOCKET:-unset}"])
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&child.stdout).trim(), "unset");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            socket: UnixDatagram::unbound().expect("socket"),
            addr: SocketAddr::from_pathname(&path).expect("addr"),
            watchdog: Some(Duration::from_secs(10)),
        };
        n.send("READY=1").expect("send");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(5)));
    }
}
