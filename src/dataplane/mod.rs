//! The data plane: `--cores N` threads, each its own io_uring runtime
//! (tokio-uring), owning the listeners of the function addresses sharded
//! to it. The control side talks to them through channels only: it binds
//! listeners (`listener`) and sends them over; the cores accept and route
//! each connection to the runtime (`core`). Knows nothing about images,
//! HTTP routing or netlink.
//!
//! Sharding: a function's listener lives on the core with the fewest
//! listeners; when functions go, one listener moves from the fullest core
//! to the emptiest if they differ by more than one. An `all_cores`
//! function gets one SO_REUSEPORT listener on every core instead.
//!
//! Shared listeners (`--shared-listen`, `shared`) take each one core in
//! turn; they route by host name through `routes`, rebuilt whenever the
//! functions served change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Notify};

use crate::api::name::FunctionName;
use crate::runtime::{Function, Runtime};

pub mod core;
mod handover;
pub mod listener;
pub mod routes;
pub mod shared;
pub mod sniff;

pub use shared::SharedConfig;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting data-plane core {core}: {source}")]
    Core {
        core: usize,
        #[source]
        source: std::io::Error,
    },
}

/// What the cores know of one function: its current version (swapped on
/// redeploy) and its concurrency accounting, shared by all its listeners.
pub struct Served {
    pub func: ArcSwap<Function>,
    inflight: AtomicU32,
    /// Woken when a connection finishes, for acceptors held at the limit.
    freed: Notify,
    /// Some acceptor waits on `freed` (spares the common case the wake-up).
    held_back: AtomicBool,
}

impl Served {
    pub fn new(func: Arc<Function>) -> Arc<Self> {
        Arc::new(Self {
            func: ArcSwap::new(func),
            inflight: AtomicU32::new(0),
            freed: Notify::new(),
            held_back: AtomicBool::new(false),
        })
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }
}

/// A connection being served; dropping it frees its concurrency slot.
pub struct Inflight {
    served: Arc<Served>,
}

impl Inflight {
    pub fn new(served: &Arc<Served>) -> Self {
        served.inflight.fetch_add(1, Ordering::AcqRel);
        Self {
            served: Arc::clone(served),
        }
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.served.inflight.fetch_sub(1, Ordering::AcqRel);
        if self.served.held_back.load(Ordering::Acquire) {
            self.served.freed.notify_waiters();
        }
    }
}

/// What every core needs: the runtime, the control runtime for anything
/// slow, and the queue deadline.
pub struct Ctx {
    pub rt: Arc<Runtime>,
    pub control: tokio::runtime::Handle,
    pub queue_timeout: Duration,
    /// The shared listeners' routes.
    pub shared: shared::Shared,
}

enum Command {
    Listen {
        name: FunctionName,
        listener: TcpListener,
        served: Arc<Served>,
    },
    /// Accept on a shared listener (`--shared-listen`), routing by host.
    Shared {
        listener: TcpListener,
    },
    /// Stop after the next accepted connection (a rebalancing move).
    Release {
        name: FunctionName,
    },
    Stop,
}

struct Core {
    tx: mpsc::UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Entry {
    ip: IpAddr,
    served: Arc<Served>,
    /// (core, our copy of that core's listener)
    listeners: Vec<(usize, TcpListener)>,
    /// A listener no core accepts on: the function's own servers do
    /// (socket activation).
    handed: Option<TcpListener>,
    /// The core accepting on `handed` while no server of the function is
    /// up (`stand_in`).
    standing_in: Option<usize>,
}

/// How a function's address is listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// One SO_REUSEPORT listener per core instead of one on one core.
    pub all_cores: bool,
    /// Accept a connection only once the client has sent something.
    pub defer_accept: bool,
    /// No core accepts: the listener is handed to the function's
    /// long-lived servers (socket activation).
    pub handed: bool,
}

/// Handle through which the control side adds and removes listeners.
pub struct Dataplane {
    cores: Vec<Core>,
    port: u16,
    entries: Mutex<HashMap<FunctionName, Entry>>,
    ctx: Arc<Ctx>,
    /// Our copies of the shared listeners (one per address).
    shared: Vec<TcpListener>,
    default_host: Option<FunctionName>,
    /// Function listeners take SO_REUSEPORT too: a shared listener on a
    /// wildcard address has their port, and Linux lets a wildcard and a
    /// specific listener share a port only if both ask (the specific one
    /// still gets its address's connections).
    beside_wildcard: bool,
}

impl Dataplane {
    /// Starts `cores` data-plane threads; fails if io_uring is unavailable.
    pub fn start(
        cores: usize,
        port: u16,
        ctx: Ctx,
        shared: &SharedConfig,
    ) -> Result<Self, DataplaneError> {
        let ctx = Arc::new(ctx);
        let mut started = Vec::with_capacity(cores);
        for index in 0..cores {
            let (tx, rx) = mpsc::unbounded_channel();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let ctx = Arc::clone(&ctx);
            let thread = std::thread::Builder::new()
                .name(format!("faasd-core-{index}"))
                .spawn(move || core::run(index, rx, ctx, ready_tx))
                .map_err(|source| DataplaneError::Core {
                    core: index,
                    source,
                })?;
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("core thread died at start")));
            ready.map_err(|source| DataplaneError::Core {
                core: index,
                source,
            })?;
            started.push(Core {
                tx,
                thread: Mutex::new(Some(thread)),
            });
        }
        let mut plane = Self {
            cores: started,
            port,
            entries: Mutex::new(HashMap::new()),
            ctx,
            shared: Vec::new(),
            default_host: shared.default_host.clone(),
            beside_wildcard: shared
                .listen
                .iter()
                .any(|a| a.ip().is_unspecified() && a.port() == port),
        };
        for addr in &shared.listen {
            plane.listen_shared(*addr)?;
        }
        Ok(plane)
    }

    /// A shared listener on `addr`, on one core (the next in turn), holding
    /// a connection back until its first bytes are there. One core, as a
    /// function's own listener: measured on 2 cores, a listener on every
    /// core took CPU the handlers and clients needed (0.86 of the own
    /// address's throughput against 0.96; docs/performance.md).
    fn listen_shared(&mut self, addr: SocketAddr) -> Result<(), DataplaneError> {
        let bind_err = |source| DataplaneError::Listen { addr, source };
        let core = self.shared.len() % self.cores.len();
        let listener = listener::bind_shared(addr).map_err(bind_err)?;
        let copy = listener.try_clone().map_err(bind_err)?;
        self.send(core, Command::Shared { listener: copy });
        self.shared.push(listener);
        tracing::info!(%addr, core, "shared listener: routing by HTTP Host and TLS server name");
        Ok(())
    }

    /// Rebuilds the shared listeners' routes from the functions served
    /// now: their `--host` names, and `--default-host`.
    pub fn reroute(&self) {
        let entries = self.lock();
        self.reroute_locked(&entries);
    }

    fn reroute_locked(&self, entries: &HashMap<FunctionName, Entry>) {
        let funcs: Vec<_> = entries
            .values()
            .map(|e| (e.served.func.load_full(), Arc::clone(&e.served)))
            .collect();
        let names = funcs
            .iter()
            .flat_map(|(f, served)| f.options.hosts.iter().map(move |h| (h, Arc::clone(served))));
        // A function whose servers accept on their own listener cannot be
        // given a routed connection.
        let default = self
            .default_host
            .as_ref()
            .and_then(|name| entries.get(name))
            .filter(|e| e.handed.is_none())
            .map(|e| Arc::clone(&e.served));
        self.ctx
            .shared
            .routes
            .store(Arc::new(routes::Routes::build(names, default)));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FunctionName, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving `name` on `ip`, on the least loaded core (or on all);
    /// or, for a handed listener, returns a copy of it for the function's
    /// servers.
    pub fn serve(
        &self,
        name: &FunctionName,
        ip: IpAddr,
        served: Arc<Served>,
        how: Listening,
    ) -> Result<Option<OwnedFd>, DataplaneError> {
        self.stop(name);
        let addr = SocketAddr::from((ip, self.port));
        let bind_err = |source| DataplaneError::Listen { addr, source };
        let mut entries = self.lock();
        if how.handed {
            let listener =
                listener::bind(addr, self.beside_wildcard, how.defer_accept).map_err(bind_err)?;
            let copy = OwnedFd::from(listener.try_clone().map_err(bind_err)?);
            entries.insert(
                name.clone(),
                Entry {
                    ip,
                    served,
                    listeners: Vec::new(),
                    handed: Some(listener),
                    standing_in: None,
                },
            );
            self.reroute_locked(&entries);
            return Ok(Some(copy));
        }
        let cores: Vec<usize> = if how.all_cores {
            (0..self.cores.len()).collect()
        } else {
            vec![least_loaded(&entries, self.cores.len())]
        };
        let mut listeners = Vec::with_capacity(cores.len());
        for core in cores {
            let reuse_port = how.all_cores || self.beside_wildcard;
            let listener = listener::bind(addr, reuse_port, how.defer_accept).map_err(bind_err)?;
            let copy = listener.try_clone().map_err(bind_err)?;
            self.send(
                core,
                Command::Listen {
                    name: name.clone(),
                    listener: copy,
                    served: Arc::clone(&served),
                },
            );
            listeners.push((core, listener));
        }
        entries.insert(
            name.clone(),
            Entry {
                ip,
                served,
                listeners,
                handed: None,
                standing_in: None,
            },
        );
        self.reroute_locked(&entries);
        Ok(None)
    }

    /// While a socket-activated function's servers keep failing, a core
    /// accepts on its handed listener, so clients hear why (503, from the
    /// runtime) instead of waiting in the backlog; `false` lets go again
    /// (the accept already in flight still takes one connection).
    pub fn stand_in(&self, name: &FunctionName, on: bool) {
        let mut entries = self.lock();
        let loads = core_loads(&entries, self.cores.len());
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        match (on, entry.standing_in) {
            (true, None) => {
                let Some(copy) = entry.handed.as_ref().and_then(|l| l.try_clone().ok()) else {
                    return;
                };
                let core = argmin(&loads).unwrap_or(0);
                entry.standing_in = Some(core);
                self.send(
                    core,
                    Command::Listen {
                        name: name.clone(),
                        listener: copy,
                        served: Arc::clone(&entry.served),
                    },
                );
            }
            (false, Some(core)) => {
                entry.standing_in = None;
                self.send(core, Command::Release { name: name.clone() });
            }
            _ => {}
        }
    }

    /// A copy of `name`'s handed listener (a redeploy keeps it).
    /// The TCP port functions serve on.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handed(&self, name: &FunctionName) -> Option<OwnedFd> {
        let entries = self.lock();
        let listener = entries.get(name)?.handed.as_ref()?;
        listener.try_clone().ok().map(OwnedFd::from)
    }

    /// Stops accepting for `name`. Connections already accepted finish;
    /// those still in the kernel's backlog are refused.
    pub fn stop(&self, name: &FunctionName) -> Option<IpAddr> {
        let entry = {
            let mut entries = self.lock();
            let entry = entries.remove(name)?;
            self.reroute_locked(&entries);
            entry
        };
        for (_, listener) in &entry.listeners {
            close_listener(listener);
        }
        if let Some(listener) = &entry.handed {
            close_listener(listener);
        }
        self.rebalance();
        Some(entry.ip)
    }

    /// Stops every listener and every core.
    pub fn shutdown(&self) {
        for listener in &self.shared {
            close_listener(listener);
        }
        self.ctx.shared.routes.store(Arc::default());
        for (_, entry) in self.lock().drain() {
            for (_, listener) in &entry.listeners {
                close_listener(listener);
            }
            if let Some(listener) = &entry.handed {
                close_listener(listener);
            }
        }
        for core in &self.cores {
            let _ = core.tx.send(Command::Stop);
        }
        for core in &self.cores {
            let thread = core.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }

    /// Moves one single-core listener from the fullest to the emptiest core
    /// while they differ by more than one.
    fn rebalance(&self) {
        let mut entries = self.lock();
        loop {
            let loads = core_loads(&entries, self.cores.len());
            let (Some(max), Some(min)) = (argmax(&loads), argmin(&loads)) else {
                return;
            };
            if loads[max] <= loads[min] + 1 {
                return;
            }
            let Some((name, entry)) = entries
                .iter_mut()
                .find(|(_, e)| e.listeners.len() == 1 && e.listeners[0].0 == max)
            else {
                return;
            };
            let Ok(copy) = entry.listeners[0].1.try_clone() else {
                return;
            };
            // The new core starts accepting before the old one lets go, on
            // the same socket: no connection waits unserved.
            self.send(
                min,
                Command::Listen {
                    name: name.clone(),
                    listener: copy,
                    served: Arc::clone(&entry.served),
                },
            );
            self.send(max, Command::Release { name: name.clone() });
            entry.listeners[0].0 = min;
            tracing::debug!(function = %name, from = max, to = min, "moved listener");
        }
    }

    fn send(&self, core: usize, cmd: Command) {
        if self.cores[core].tx.send(cmd).is_err() {
            tracing::error!(core, "data-plane core is gone");
        }
    }
}

/// Makes every pending and future accept on the socket fail, so the cores
/// drop it (closing our copy alone would not: an accept in flight in
/// io_uring holds the socket open).
fn close_listener(listener: &TcpListener) {
    let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Read);
}

fn core_loads(entries: &HashMap<FunctionName, Entry>, cores: usize) -> Vec<usize> {
    let mut loads = vec![0; cores];
    for entry in entries.values() {
        for (core, _) in &entry.listeners {
            loads[*core] += 1;
        }
    }
    loads
}

fn least_loaded(entries: &HashMap<FunctionName, Entry>, cores: usize) -> usize {
    argmin(&core_loads(entries, cores)).unwrap_or(0)
}

fn argmin(v: &[usize]) -> Option<usize> {
    v.iter()
        .enumerate()
        .min_by_key(|(i, n)| (**n, *i))
        .map(|(i, _)| i)
}

fn argmax(v: &[usize]) -> Option<usize> {
    v.iter()
        .enumerate()
        .max_by_key(|(i, n)| (**n, usize::MAX - *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_extremes_stably() {
        assert_eq!(argmin(&[2, 1, 1]), Some(1));
        assert_eq!(argmax(&[2, 3, 3]), Some(1));
        assert_eq!(argmin(&[]), None);
    }
}
