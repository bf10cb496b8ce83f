//! The data plane: one listener on `IP:80` per function; every accepted
//! connection gets a fresh container from the runtime and is handed over.
//! Knows nothing about images, HTTP routing or netlink.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::name::FunctionName;
use crate::runtime::{Function, Runtime};

pub mod acceptor;
pub mod listener;
pub mod respond;

/// The function a listener serves; swapped atomically on redeploy.
pub type FunctionRef = Arc<ArcSwap<Function>>;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Served {
    ip: Ipv4Addr,
    stop: watch::Sender<bool>,
}

/// Handle through which the control side adds and removes listeners.
pub struct Dataplane {
    rt: Arc<Runtime>,
    port: u16,
    served: Mutex<HashMap<FunctionName, Served>>,
}

impl Dataplane {
    pub fn new(rt: Arc<Runtime>, port: u16) -> Self {
        Self {
            rt,
            port,
            served: Mutex::new(HashMap::new()),
        }
    }

    /// Starts serving `func` on `ip` (replacing any earlier listener of it).
    pub fn serve(
        &self,
        name: &FunctionName,
        ip: Ipv4Addr,
        func: FunctionRef,
    ) -> Result<(), DataplaneError> {
        self.stop(name);
        let addr = std::net::SocketAddr::from((ip, self.port));
        let listener =
            listener::bind(addr).map_err(|source| DataplaneError::Listen { addr, source })?;
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| DataplaneError::Listen { addr, source })?;
        tokio::spawn(acceptor::run(listener, Arc::clone(&self.rt), func, stopped));
        self.lock().insert(name.clone(), Served { ip, stop });
        Ok(())
    }

    /// Stops accepting for `name`; connections already accepted finish.
    pub fn stop(&self, name: &FunctionName) -> Option<Ipv4Addr> {
        let served = self.lock().remove(name)?;
        served.stop.send_replace(true);
        Some(served.ip)
    }

    /// Stops every listener.
    pub fn stop_all(&self) {
        for (_, served) in self.lock().drain() {
            served.stop.send_replace(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FunctionName, Served>> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }
}
