//! The relay between handed connections and the server inside the
//! container: one thread, one epoll set, every connection pair in it.
//! A thread per direction per connection (what this replaced) ran into the
//! container's pids limit under load beside a forking server, and cost a
//! thread start per connection.
//!
//! Connecting retries fast: a server's own backlog (busybox httpd asks for
//! 9) fills under load, and the kernel then drops the SYN and sends it
//! again only after a second. Over the container's loopback a handshake
//! takes microseconds, so one not done within a few milliseconds was
//! dropped, and a fresh attempt gets in far sooner.

use std::io::{self, ErrorKind, Read};

use crate::flow::Flow;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

const FIRST_ATTEMPT: Duration = Duration::from_millis(5);
const LONGEST_ATTEMPT: Duration = Duration::from_millis(200);
/// The epoll token of the wake-up socket (pairs use 2·slot and 2·slot+1).
const WAKE: u64 = u64::MAX;

/// Relays connections to the server at `target`.
pub struct Relay {
    target: SocketAddr,
    /// How long a connection may wait for the server to accept it.
    connect_wait: Duration,
    epoll: Epoll,
    pairs: Vec<Option<Pair>>,
    live: usize,
}

impl Relay {
    pub fn new(target: SocketAddr, connect_wait: Duration) -> io::Result<Self> {
        Ok(Self {
            target,
            connect_wait,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            pairs: Vec::new(),
            live: 0,
        })
    }

    /// Relays one connection to its end; returns the bytes that reached
    /// the client.
    pub fn one(mut self, client: TcpStream) -> io::Result<u64> {
        self.add(client)?;
        loop {
            let timeout = self.next_timeout();
            if let Some(end) = self.turn(timeout, &mut |_| {})?.pop() {
                return end.result.map(|()| end.sent);
            }
        }
    }

    /// Relays every connection that arrives on `incoming` (each announced
    /// by a byte on `wake`) until `incoming` is closed and all are done;
    /// `done` is called as each one ends.
    pub fn run(
        mut self,
        incoming: Receiver<TcpStream>,
        wake: UnixStream,
        mut done: impl FnMut(),
    ) -> io::Result<()> {
        wake.set_nonblocking(true)?;
        self.epoll
            .add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let mut open = true;
        while open || self.live > 0 {
            let timeout = self.next_timeout();
            let mut woken = false;
            for end in self.turn(timeout, &mut |token| woken |= token == WAKE)? {
                if let Err(e) = end.result {
                    eprintln!("faas-init: relaying to the server at {}: {e}", self.target);
                }
                done();
            }
            if !woken {
                continue;
            }
            let mut drain = [0u8; 64];
            while matches!((&wake).read(&mut drain), Ok(n) if n > 0) {}
            loop {
                match incoming.try_recv() {
                    Ok(client) => {
                        if let Err(e) = self.add(client) {
                            eprintln!("faas-init: taking a connection: {e}");
                            done();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, client: TcpStream) -> io::Result<usize> {
        client.set_nonblocking(true)?;
        let _ = client.set_nodelay(true);
        let slot = match self.pairs.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.pairs.push(None);
                self.pairs.len() - 1
            }
        };
        self.epoll.add(&client, event(2 * slot as u64))?;
        let mut pair = Pair {
            client,
            server: Server::Idle,
            up: Flow::default(),
            down: Flow::default(),
            deadline: Instant::now() + self.connect_wait,
            attempt: FIRST_ATTEMPT,
        };
        if let Err(e) = pair.dial(self.target, &self.epoll, slot) {
            let _ = self.epoll.delete(&pair.client);
            return Err(e);
        }
        self.pairs[slot] = Some(pair);
        self.live += 1;
        Ok(slot)
    }

    /// Waits for events (or the nearest connect deadline), moves bytes,
    /// and returns how each pair that ended did. `seen` gets every token.
    fn turn(&mut self, timeout: EpollTimeout, seen: &mut dyn FnMut(u64)) -> io::Result<Vec<Ended>> {
        let mut events = [EpollEvent::empty(); 64];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let mut touched: Vec<usize> = Vec::with_capacity(n);
        for ev in &events[..n] {
            let token = ev.data();
            seen(token);
            if token != WAKE {
                touched.push((token / 2) as usize);
            }
        }
        // Connections whose attempt ran out are looked at too.
        let now = Instant::now();
        for (slot, pair) in self.pairs.iter().enumerate() {
            if matches!(pair, Some(p) if p.server.attempt_over(now)) {
                touched.push(slot);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut ended = Vec::new();
        for slot in touched {
            let Some(pair) = self.pairs[slot].as_mut() else {
                continue;
            };
            let result = match pair.step(self.target, &self.epoll, slot) {
                Ok(true) => continue,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            let sent = pair.down.total;
            if let Some(pair) = self.pairs[slot].take() {
                pair.deregister(&self.epoll);
            }
            self.live -= 1;
            ended.push(Ended { result, sent });
        }
        Ok(ended)
    }

    /// Until the nearest end of a connect attempt (rounded up), or forever.
    fn next_timeout(&self) -> EpollTimeout {
        let now = Instant::now();
        self.pairs
            .iter()
            .flatten()
            .filter_map(|p| p.server.attempt_end())
            .min()
            .map_or(EpollTimeout::NONE, |at| {
                let left = at.saturating_duration_since(now) + Duration::from_millis(1);
                EpollTimeout::try_from(left.min(LONGEST_ATTEMPT)).unwrap_or(EpollTimeout::ZERO)
            })
    }
}

/// How a pair ended, and what reached its client.
struct Ended {
    result: io::Result<()>,
    sent: u64,
}

fn event(token: u64) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
        token,
    )
}

/// One client and its connection to the server.
struct Pair {
    client: TcpStream,
    server: Server,
    /// Client to server.
    up: Flow,
    /// Server to client.
    down: Flow,
    /// When the server must have accepted this connection.
    deadline: Instant,
    /// How long the next attempt to connect may take.
    attempt: Duration,
}

enum Server {
    Idle,
    Connecting { socket: OwnedFd, until: Instant },
    Connected(TcpStream),
}

impl Server {
    fn attempt_end(&self) -> Option<Instant> {
        match self {
            Server::Connecting { until, .. } => Some(*until),
            _ => None,
        }
    }

    fn attempt_over(&self, now: Instant) -> bool {
        self.attempt_end().is_some_and(|until| now >= until)
    }
}

impl Pair {
    /// Starts a non-blocking connect to the server.
    fn dial(&mut self, target: SocketAddr, epoll: &Epoll, slot: usize) -> io::Result<()> {
        let family = match target {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let socket = socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(socket.as_raw_fd(), &SockaddrStorage::from(target)) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        epoll.add(&socket, event(2 * slot as u64 + 1))?;
        let until = (Instant::now() + self.attempt).min(self.deadline);
        self.attempt = (self.attempt * 2).min(LONGEST_ATTEMPT);
        self.server = Server::Connecting { socket, until };
        Ok(())
    }

    /// Moves what can be moved; false once both directions are done.
    fn step(&mut self, target: SocketAddr, epoll: &Epoll, slot: usize) -> io::Result<bool> {
        if !self.settle(target, epoll, slot)? {
            return Ok(true);
        }
        let Server::Connected(server) = &self.server else {
            return Ok(true);
        };
        self.up.pump(&self.client, server);
        self.down.pump(server, &self.client);
        Ok(!(self.up.over && self.down.over))
    }

    /// Whether the server is connected, finishing or retrying a connect.
    fn settle(&mut self, target: SocketAddr, epoll: &Epoll, slot: usize) -> io::Result<bool> {
        let Server::Connecting { socket, until } = &self.server else {
            return Ok(matches!(self.server, Server::Connected(_)));
        };
        let until = *until;
        let errno = getsockopt(socket, sockopt::SocketError)?;
        if errno == 0 && is_connected(socket) {
            if let Server::Connecting { socket, .. } =
                std::mem::replace(&mut self.server, Server::Idle)
            {
                let stream = TcpStream::from(socket);
                let _ = stream.set_nodelay(true);
                self.server = Server::Connected(stream);
            }
            return Ok(true);
        }
        let now = Instant::now();
        if errno == 0 && now < until {
            return Ok(false);
        }
        if errno != 0 && errno != Errno::ECONNREFUSED as i32 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        // Dropped, or refused while the server catches up: a fresh socket.
        if now >= self.deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "the server accepted no connection in time",
            ));
        }
        let _ = epoll.delete(socket);
        self.dial(target, epoll, slot)?;
        Ok(false)
    }

    fn deregister(self, epoll: &Epoll) {
        let _ = epoll.delete(&self.client);
        match &self.server {
            Server::Connecting { socket, .. } => {
                let _ = epoll.delete(socket);
            }
            Server::Connected(stream) => {
                let _ = epoll.delete(stream);
            }
            Server::Idle => {}
        }
    }
}

/// A non-blocking connect has finished once the socket has a peer.
fn is_connected(socket: &OwnedFd) -> bool {
    nix::sys::socket::getpeername::<SockaddrStorage>(socket.as_raw_fd()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};

    /// A client connection as faasd would hand it over.
    fn handed() -> (TcpStream, TcpStream) {
        let front = TcpListener::bind("127.0.0.1:0").expect("front");
        let client = TcpStream::connect(front.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = front.accept().expect("accept");
        (client, accepted)
    }

    #[test]
    fn relays_both_ways_and_counts_what_the_client_got() {
        let server = TcpListener::bind("127.0.0.1:0").expect("server");
        let target = server.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().expect("accept");
            let mut req = [0u8; 5];
            s.read_exact(&mut req).expect("request");
            s.write_all(b"hello back").expect("answer");
        });
        let (mut client, accepted) = handed();
        client.write_all(b"hello").expect("send");
        let relay = Relay::new(target, Duration::from_secs(5)).expect("relay");
        let relaying = std::thread::spawn(move || relay.one(accepted));
        let mut got = String::new();
        client.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello back");
        drop(client);
        assert_eq!(relaying.join().expect("relay").expect("relayed"), 10);
    }

    #[test]
    fn many_connections_move_megabytes_both_ways_on_one_thread() {
        const PAIRS: usize = 20;
        const SIZE: usize = 1 << 20;
        let server = TcpListener::bind("127.0.0.1:0").expect("server");
        let target = server.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in server.incoming().take(PAIRS) {
                let mut s = s.expect("accept");
                // An echo server: what comes in goes back, until EOF.
                std::thread::spawn(move || {
                    let mut back = s.try_clone().expect("clone");
                    let _ = io::copy(&mut s, &mut back);
                });
            }
        });
        let (to_relay, incoming) = mpsc_channel();
        let (wake, woken) = UnixStream::pair().expect("pair");
        let relay = Relay::new(target, Duration::from_secs(5)).expect("relay");
        let mut ended = 0;
        let relaying =
            std::thread::spawn(move || relay.run(incoming, woken, || ended += 1).map(|()| ended));
        let mut clients = Vec::new();
        for i in 0..PAIRS {
            let (client, accepted) = handed();
            to_relay.send(accepted).expect("send");
            (&wake).write_all(&[1]).expect("wake");
            let payload: Vec<u8> = (0..SIZE).map(|b| (b * 7 + i) as u8).collect();
            let mut writer = client.try_clone().expect("clone");
            let sent = payload.clone();
            clients.push((
                std::thread::spawn(move || {
                    writer.write_all(&sent).expect("write");
                    writer.shutdown(Shutdown::Write).expect("shutdown");
                }),
                client,
                payload,
            ));
        }
        for (writer, mut client, payload) in clients {
            let mut back = Vec::new();
            client.read_to_end(&mut back).expect("read back");
            writer.join().expect("writer");
            assert!(back == payload, "echo differs ({} bytes back)", back.len());
        }
        drop(to_relay);
        (&wake).write_all(&[1]).expect("wake");
        assert_eq!(relaying.join().expect("join").expect("run"), PAIRS);
    }

    #[test]
    fn a_full_backlog_is_retried_within_milliseconds_not_a_second() {
        // A listener whose queue holds one connection, kept full.
        let listener = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let any: SockaddrStorage = SocketAddr::from(([127, 0, 0, 1], 0)).into();
        nix::sys::socket::bind(listener.as_raw_fd(), &any).expect("bind");
        nix::sys::socket::listen(
            &listener,
            nix::sys::socket::Backlog::new(0).expect("backlog"),
        )
        .expect("listen");
        let server = TcpListener::from(listener);
        let target = server.local_addr().expect("addr");
        let filler = TcpStream::connect(target).expect("filler");
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let _keep = filler;
            for s in server.incoming() {
                let mut s = s.expect("accept");
                let _ = s.write_all(b"ok");
            }
        });
        let (mut client, accepted) = handed();
        client.shutdown(Shutdown::Write).expect("shutdown");
        let relay = Relay::new(target, Duration::from_secs(5)).expect("relay");
        let relaying = std::thread::spawn(move || relay.one(accepted));
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read");
        let took = started.elapsed();
        assert_eq!(relaying.join().expect("join").expect("relayed"), 2);
        assert!(
            took < Duration::from_millis(700),
            "the relay waited {took:?} for a full backlog (the kernel's own retry takes 1 s)"
        );
    }

    fn mpsc_channel() -> (std::sync::mpsc::Sender<TcpStream>, Receiver<TcpStream>) {
        std::sync::mpsc::channel()
    }
}
