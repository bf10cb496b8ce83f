//! Test handler for faasd's integration tests. `probe MODE` (or MODE in
//! PROBE_MODE) speaks the handler protocol and behaves as MODE says:
//!
//! - `hello`: answer "probe ok"
//! - `inspect`: answer `key=value` lines describing the sandbox it runs in
//! - `crash`: exit 3 before connecting to `/control.sock`
//! - `fail`: take the connection, exit 3 without a word
//! - `noconnect`: never connect
//! - `hang`: take the connection, never answer
//! - `close`: take the connection, close it without answering
//! - `print`: print a line to stdout and stderr, then answer like `hello`
//! - `noshutdown`: answer like `hello` but only close (no `shutdown`), exit
//! - `linger`: answer like `noshutdown`, then stay PROBE_SLEEP_MS (default
//!   300) ms before exiting
//! - `slow`: answer like `hello` after PROBE_SLEEP_MS (default 300) ms
//! - `forkserve`: `faas_handler::fork_serve` after a start of
//!   PROBE_SLEEP_MS; each connection answered with the server's id and
//!   where it runs (all of `inspect` with PROBE_INSPECT=1)
//! - `forkbomb`: take the connection, fork sleeping children until that
//!   fails, answer `forked=N` and `error=ERRNO`
//! - `memhog`: take the connection, touch memory until killed
//! - `memhog-early`: touch memory until killed, before connecting
//! - `spin`: take the connection, spin on the CPU forever
//! - `echo`: answer `who=` PROBE_NAME, the request line and the `Host`
//!   header it read, and the head's length in bytes
//! - `stdio`: no protocol at all: read the request from stdin, answer like
//!   `hello` on stdout (for `--stdio` functions)
//! - `banner`: speak first: write `220 probe ready` before reading, then
//!   answer a line with `250 ok` (a server-first protocol)
//! - `egress`: `GET /IP:PORT`: connect there (1 s at most) and answer
//!   `connected <what the server said first>` or `failed(ERRNO)`;
//!   `GET /v6/PORT`: answer `inet6=` its IPv6 addresses on `eth0` and
//!   `multicast=` what came of a UDP datagram to `[ff02::1%eth0]:PORT`
//!   (`sent` or `failed(ERRNO)`)
//!
//! Hostile to faasd itself (tests/tenants.rs):
//!
//! - `pass-fds`: while waiting for its connection, send faasd descriptors
//!   over `/control.sock`: with PROBE_PASS=linger (the default) two
//!   loopback TCP sockets, B (a receiver that never reads) then A (full of
//!   data for B, SO_LINGER at its maximum), whose last close would wait
//!   for B forever; with PROBE_PASS=flood 10,000 references to such an A.
//!   Then answer `passed=ok`, or `passed=N,refused(ERRNO)` when the
//!   message after N sent ones failed.
//! - `linger-client`: take the connection (in reuse mode, each of them),
//!   fill its send buffer toward a client that does not read, set
//!   SO_LINGER (PROBE_LINGER_SECS, default 40) and close it.
//! - `deaf`: connect to `/control.sock` and never read from it.
//!
//! With PROBE_LATER=MODE and PROBE_FROM=T (ms since the epoch), a probe
//! started at or after T behaves as MODE: a deploy's first container
//! comes up, the containers started for later requests misbehave.
//!
//! With PROBE_START_MS it sleeps that long before anything else (a
//! program with a slow start, such as its imports).
//!
//! With FAAS_REUSE=1 it asks for the next connection on the same control
//! connection (`faas-handler`), or with PROBE_RECONNECT set connects again
//! for each one (the protocol's older form); `inspect` then reports the
//! same `instance` and a growing `served`, and `queued`: how many
//! connections came in the same message and are still to be served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use faas_handler::Control;

fn main() {
    if let Some(ms) = std::env::var("PROBE_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mode = later_mode().unwrap_or_else(|| {
        std::env::args()
            .nth(1)
            .or_else(|| std::env::var("PROBE_MODE").ok())
            .unwrap_or_else(|| "hello".into())
    });
    let reuse = faas_handler::reuse_enabled();
    let reconnect = std::env::var_os("PROBE_RECONNECT").is_some();
    match mode.as_str() {
        "crash" => std::process::exit(3),
        "stdio" => {
            let mut stdin = std::io::stdin().lock();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(response("probe ok\n").as_bytes());
            let _ = out.flush();
            return;
        }
        "memhog-early" => hog_memory(),
        "noconnect" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "deaf" => {
            let _control = Control::connect();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "forkserve" => return fork_serve(),
        _ => {}
    }
    let mut passed = String::new();
    let instance = format!("{}-{}", std::process::id(), nanos());
    let mut served = 0u32;
    let mut control: Option<Control> = None;
    loop {
        if control.is_none() || reconnect {
            // Closing the previous control connection tells faasd it is done.
            drop(control.take());
            match Control::connect() {
                Ok(c) => {
                    if mode == "pass-fds" && passed.is_empty() {
                        passed = hostile::pass_fds(&c);
                    }
                    control = Some(c);
                }
                // faasd refused us: no more work.
                Err(_) => return,
            }
        }
        let Some(ctl) = control.as_mut() else { return };
        let mut conn = match ctl.next_connection() {
            Ok(Some(conn)) => conn,
            // faasd closed the control socket: no more work.
            Ok(None) | Err(_) => return,
        };
        served += 1;
        let queued = ctl.queued();
        match mode.as_str() {
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "close" => return,
            "fail" => std::process::exit(3),
            "memhog" => hog_memory(),
            "spin" => loop {
                std::hint::spin_loop();
            },
            "forkbomb" => {
                let _ = read_request_head(&mut conn);
                let (forked, error) = fork_until_refused();
                answer(&mut conn, &format!("forked={forked}\nerror={error}\n"));
            }
            "inspect" => {
                let _ = read_request_head(&mut conn);
                answer(
                    &mut conn,
                    &format!(
                        "instance={instance}\nserved={served}\nqueued={queued}\n{}",
                        inspect()
                    ),
                );
            }
            "slow" => {
                let _ = read_request_head(&mut conn);
                std::thread::sleep(Duration::from_millis(sleep_ms()));
                answer(&mut conn, "probe ok\n");
            }
            "banner" => {
                let _ = conn.write_all(b"220 probe ready\r\n");
                let mut line = [0u8; 256];
                if matches!(conn.read(&mut line), Ok(n) if n > 0) {
                    let _ = conn.write_all(b"250 ok\r\n");
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            "noshutdown" | "linger" => {
                let _ = read_request_head(&mut conn);
                let _ = conn.write_all(response("probe ok\n").as_bytes());
                drop(conn);
                if mode == "linger" {
                    std::thread::sleep(Duration::from_millis(sleep_ms()));
                }
            }
            "echo" => {
                let head = read_head_text(&mut conn);
                let line = head.lines().next().unwrap_or_default();
                let host = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let who = std::env::var("PROBE_NAME").unwrap_or_default();
                answer(
                    &mut conn,
                    &format!(
                        "who={who}\nrequest={line}\nhost={host}\nbytes={}\n",
                        head.len()
                    ),
                );
            }
            "pass-fds" => {
                let _ = read_request_head(&mut conn);
                answer(&mut conn, &format!("passed={passed}\n"));
            }
            "linger-client" => {
                let _ = read_request_head(&mut conn);
                hostile::stuff_and_linger(conn);
            }
            "egress" => {
                let path = read_request_path(&mut conn);
                let said = match path.strip_prefix("v6/") {
                    Some(port) => ipv6_out(port),
                    None => connect_out(&path),
                };
                answer(&mut conn, &format!("{said}\n"));
            }
            "print" => {
                println!("probe stdout line pid={}", std::process::id());
                eprintln!("probe stderr line");
                let _ = read_request_head(&mut conn);
                answer(&mut conn, "probe ok\n");
            }
            _ => {
                let _ = read_request_head(&mut conn);
                answer(&mut conn, "probe ok\n");
            }
        }
        if !reuse {
            return;
        }
    }
}

/// Ways a function could try to make faasd's own threads wait.
mod hostile {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd, RawFd};

    use nix::sys::socket::{sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags};

    /// A (lingering forever, its data stuck) and B (the peer that never
    /// reads): A's last close waits for B's, whoever makes it.
    fn stuck_pair() -> std::io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        setsockopt(&listener, sockopt::RcvBuf, &2048)?;
        let a = TcpStream::connect(listener.local_addr()?)?;
        let (b, _) = listener.accept()?;
        fill(&a);
        linger(&a, i32::MAX)?;
        Ok((a, b))
    }

    fn fill(sock: &TcpStream) {
        if sock.set_nonblocking(true).is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut out = sock;
        while out.write(&chunk).is_ok() {}
        let _ = sock.set_nonblocking(false);
    }

    fn linger(sock: &TcpStream, secs: i32) -> std::io::Result<()> {
        let l = nix::libc::linger {
            l_onoff: 1,
            l_linger: secs,
        };
        setsockopt(sock, sockopt::Linger, &l).map_err(Into::into)
    }

    /// Sends faasd descriptors over `control`; what came of it.
    pub fn pass_fds(control: &impl AsFd) -> String {
        let (a, b) = match stuck_pair() {
            Ok(pair) => pair,
            Err(e) => return format!("setup({e})"),
        };
        let flood = std::env::var("PROBE_PASS").is_ok_and(|p| p == "flood");
        let messages: Vec<Vec<RawFd>> = if flood {
            (0..40).map(|_| vec![a.as_raw_fd(); 250]).collect()
        } else {
            vec![vec![b.as_raw_fd()], vec![a.as_raw_fd()]]
        };
        for (sent, fds) in messages.iter().enumerate() {
            let iov = [std::io::IoSlice::new(b"x")];
            let cmsg = [ControlMessage::ScmRights(fds)];
            let fd = control.as_fd().as_raw_fd();
            if let Err(e) = sendmsg::<()>(fd, &iov, &cmsg, MsgFlags::empty(), None) {
                return format!("{sent},refused({})", e as i32);
            }
        }
        // faasd holds them now; ours go.
        "ok".into()
    }

    /// Fills `conn` toward a client that does not read, lingers, closes.
    pub fn stuff_and_linger(conn: TcpStream) {
        let secs = std::env::var("PROBE_LINGER_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40);
        fill(&conn);
        let _ = linger(&conn, secs);
        drop(conn);
    }
}

/// PROBE_LATER's mode, once PROBE_FROM has passed.
fn later_mode() -> Option<String> {
    let from: u128 = std::env::var("PROBE_FROM").ok()?.parse().ok()?;
    (nanos() / 1_000_000 >= from).then(|| std::env::var("PROBE_LATER").ok())?
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `faas_handler::fork_serve` with a start-up of `PROBE_SLEEP_MS` (a
/// slow import): each connection is answered by a fresh child that says
/// where it runs, which server started it and when.
fn fork_serve() {
    let init = || {
        std::thread::sleep(Duration::from_millis(sleep_ms()));
        format!("{}-{}", std::process::id(), nanos())
    };
    let result = faas_handler::fork_serve(init, |server, mut conn| {
        let _ = read_request_head(&mut conn);
        let more = match std::env::var_os("PROBE_INSPECT") {
            Some(_) => inspect(),
            None => where_am_i(),
        };
        let body = format!("server={server}\npid={}\n{more}", std::process::id());
        answer(&mut conn, &body);
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("probe: fork_serve: {e}");
        std::process::exit(1);
    }
}

/// How many processes it sees, which pid namespace it is in, and when
/// that namespace's first process started: a fresh sandbox has all three
/// its own.
fn where_am_i() -> String {
    let pidns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string());
    let init = std::fs::read_to_string("/proc/1/stat").unwrap_or_default();
    let started = init
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or("");
    format!(
        "procs={}\npidns={}\ninit_start={started}\n",
        visible_processes(),
        pidns.unwrap_or_default()
    )
}

fn inspect() -> String {
    let mut out = String::new();
    out += &format!("pid={}\n", std::process::id());
    out += &format!("uid={}\n", nix::unistd::getuid());
    out += &format!("gid={}\n", nix::unistd::getgid());
    let cwd = std::env::current_dir().map(|p| p.display().to_string());
    out += &format!("cwd={}\n", cwd.unwrap_or_else(|e| format!("error {e}")));
    // What an earlier container of the function may have left.
    out += &format!(
        "rootfs_seen={}\n",
        std::path::Path::new("/probe-write").exists()
    );
    out += &format!("rootfs_write={}\n", try_write("/probe-write"));
    for path in list_var("PROBE_WRITES") {
        out += &format!(
            "write.{path}={}\n",
            try_write(&format!("{path}/probe-write"))
        );
    }
    if let Some(mb) = std::env::var("PROBE_FILL_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        out += &format!("fill={}\n", try_fill("/probe-fill", mb));
    }
    out += &format!("tmp_write={}\n", try_write("/tmp/probe-write"));
    out += &format!("egress={}\n", try_egress());
    out += &format!("mount={}\n", try_mount());
    out += &format!("module={}\n", errno_of(try_load_module()));
    out += &format!("keyctl={}\n", errno_of(try_keyctl()));
    out += &format!("unshare_user={}\n", errno_of(try_unshare_user()));
    out += &where_am_i();
    out += &format!("chown_other={}\n", errno_of(try_chown_other()));
    out += &format!("setuid_unmapped={}\n", errno_of(try_setuid_unmapped()));
    out += &format!("raw_socket={}\n", errno_of(try_raw_socket()));
    out += &format!("mknod={}\n", errno_of(try_mknod()));
    out += &format!("bind80={}\n", errno_of(try_bind_80()));
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    out += &format!(
        "uid_map={}\n",
        uid_map.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for field in ["CapEff", "NoNewPrivs", "Seccomp"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(str::trim)
            .unwrap_or("<absent>");
        out += &format!("{field}={value}\n");
    }
    for name in list_var("PROBE_ENV") {
        out += &format!(
            "env.{name}={}\n",
            std::env::var(&name).unwrap_or_else(|_| "<unset>".into())
        );
    }
    for path in list_var("PROBE_FILES") {
        let content = std::fs::read_to_string(&path)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "<missing>".into());
        out += &format!("file.{path}={content}\n");
        if let Ok(m) = std::fs::metadata(&path) {
            use std::os::unix::fs::MetadataExt;
            out += &format!(
                "meta.{path}={}:{}:{:o}\n",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            );
        }
        let writable = std::fs::OpenOptions::new().append(true).open(&path).is_ok();
        out += &format!("writable.{path}={writable}\n");
    }
    out
}

fn errno_of(r: nix::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("denied({})", e as i32),
    }
}

/// A file of ours given to another id of the container (CAP_CHOWN).
fn try_chown_other() -> nix::Result<()> {
    let path = "/tmp/probe-chown";
    std::fs::write(path, b"x").map_err(|_| nix::errno::Errno::EIO)?;
    let id = Some(nix::unistd::Uid::from_raw(4242));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(4242)))
}

/// An id outside the container's mapping: EINVAL whatever the capability.
/// Run in a child, so the probe keeps its own id.
fn try_setuid_unmapped() -> nix::Result<()> {
    // SAFETY: the child only calls setuid and _exit.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let code = match nix::unistd::setuid(nix::unistd::Uid::from_raw(70_000)) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: leaving the forked child at once.
            #[allow(unsafe_code)]
            unsafe {
                nix::libc::_exit(code)
            }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            nix::sys::wait::WaitStatus::Exited(_, code) => Err(nix::errno::Errno::from_raw(code)),
            _ => Err(nix::errno::Errno::ECHILD),
        },
    }
}

/// A raw socket (NET_RAW is not in the set).
fn try_raw_socket() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Icmp,
    )
    .map(drop)
}

/// A device node (MKNOD is not in the set).
fn try_mknod() -> nix::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        "/tmp/probe-null",
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
}

/// Port 80 inside the container, as whatever user the probe is.
fn try_bind_80() -> nix::Result<()> {
    std::net::TcpListener::bind("127.0.0.1:80")
        .map(drop)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn try_mount() -> String {
    let target = "/tmp/probe-mount";
    let _ = std::fs::create_dir_all(target);
    errno_of(nix::mount::mount(
        Some("none"),
        target,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ))
}

/// `init_module` with an empty image: EPERM without CAP_SYS_MODULE (or
/// seccomp), EINVAL/ENOEXEC if the kernel got as far as reading it.
fn try_load_module() -> nix::Result<()> {
    let image = [0u8; 64];
    // SAFETY: a valid buffer of the given length and a NUL-terminated
    // parameter string; the kernel only reads them.
    #[allow(unsafe_code)]
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// `keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create)`: any
/// user may, unless seccomp forbids the kernel keyrings.
fn try_keyctl() -> nix::Result<()> {
    // SAFETY: integer arguments only.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_keyctl, 0, -3, 1) };
    nix::errno::Errno::result(rc).map(drop)
}

/// A nested user namespace needs no capability, only seccomp stops it.
fn try_unshare_user() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
}

/// Processes this handler can see in /proc.
fn visible_processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// Forks children that sleep until the container ends, until refused.
fn fork_until_refused() -> (u32, i32) {
    let mut forked = 0;
    loop {
        // SAFETY: the child only sleeps and never returns into Rust code
        // that could touch state shared with the parent's threads.
        #[allow(unsafe_code)]
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Ok(nix::unistd::ForkResult::Parent { .. }) => forked += 1,
            Err(e) => return (forked, e as i32),
        }
        if forked >= 10_000 {
            return (forked, 0);
        }
    }
}

/// Touches memory in 8 MiB steps until the kernel kills us.
fn hog_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 8 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn list_var(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Writes `mb` MiB to `path`.
fn try_fill(path: &str, mb: usize) -> String {
    let chunk = vec![7u8; 1 << 20];
    let written = std::fs::File::create(path).and_then(|mut f| {
        for _ in 0..mb {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    match written {
        Ok(()) => "ok".into(),
        Err(e) => format!("denied({})", e.raw_os_error().unwrap_or(0)),
    }
}

fn try_write(path: &str) -> String {
    match std::fs::write(path, b"x") {
        Ok(()) => "ok".into(),
        Err(e) => format!("denied({})", e.raw_os_error().unwrap_or(0)),
    }
}

/// Tries the address in PROBE_EGRESS (a loopback listener the test runs on the host).
fn try_egress() -> String {
    let Ok(target) = std::env::var("PROBE_EGRESS") else {
        return "untested".into();
    };
    let Ok(addr) = target.parse::<SocketAddr>() else {
        return "bad-address".into();
    };
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => "connected".into(),
        Err(e) => format!("failed({})", e.raw_os_error().unwrap_or(0)),
    }
}

fn sleep_ms() -> u64 {
    std::env::var("PROBE_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn answer(conn: &mut TcpStream, body: &str) {
    let _ = conn.write_all(response(body).as_bytes());
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// The request's path without its leading `/`.
fn read_request_path(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string()
}

/// Its IPv6 addresses on eth0, and a datagram to every node on that link.
fn ipv6_out(port: &str) -> String {
    let inet6: Vec<String> = std::fs::read_to_string("/proc/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(5) == Some("eth0"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let multicast = (|| {
        let port: u16 = port.parse().map_err(|_| "bad-port".to_string())?;
        let index =
            nix::net::if_::if_nametoindex("eth0").map_err(|e| format!("failed({})", e as i32))?;
        let sock = std::net::UdpSocket::bind("[::]:0")
            .map_err(|e| format!("failed({})", e.raw_os_error().unwrap_or(0)))?;
        let all_nodes =
            std::net::SocketAddrV6::new("ff02::1".parse().map_err(|_| "addr")?, port, 0, index);
        sock.send_to(b"probe", all_nodes)
            .map(|_| "sent".to_string())
            .map_err(|e| format!("failed({})", e.raw_os_error().unwrap_or(0)))
    })();
    format!(
        "inet6={}\nmulticast={}",
        inet6.join(","),
        multicast.unwrap_or_else(|e| e)
    )
}

/// Connects to `target` (IP:PORT) and reads what the server says first.
fn connect_out(target: &str) -> String {
    let Ok(addr) = target.parse::<SocketAddr>() else {
        return format!("bad-address({target})");
    };
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut said = Vec::new();
            let _ = (&mut s).take(256).read_to_end(&mut said);
            format!("connected {}", String::from_utf8_lossy(&said).trim())
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "failed(timeout)".into(),
        Err(e) => format!("failed({})", e.raw_os_error().unwrap_or(0)),
    }
}

/// The request head as text, up to and with its empty line.
fn read_head_text(conn: &mut TcpStream) -> String {
    let mut head = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn read_request_head(conn: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
