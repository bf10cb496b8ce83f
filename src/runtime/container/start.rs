//! Starting a container: its bundle (config.json, the control socket,
//! the output pipe), `runc run`, and waiting until the handler connected
//! to `/control.sock`; the cold-start phases are split from what runc
//! leaves behind.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener as StdListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::control::ControlListener;
use super::{io, End, Guard, Ready, Started};
use crate::metrics::Phase;
use crate::runtime::reaper::Exit;
use crate::runtime::sandbox::cgroup;
use crate::runtime::sandbox::spec::{render, SpecInput};
use crate::runtime::{logs, Function, Runc, Runtime, RuntimeError};

/// How long a supervisor waits for the start watcher's event.
const PHASE_WAIT_STEP: Duration = Duration::from_millis(5);
const PHASE_WAIT_STEPS: u32 = 40;

impl Runtime {
    /// Starts a fresh container for `func` and waits until its handler has
    /// connected to `/control.sock`.
    pub async fn start(self: &Arc<Self>, func: &Arc<Function>) -> Result<Ready, RuntimeError> {
        if *self.stopping.borrow() {
            return Err(RuntimeError::ShuttingDown);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{seq}", func.name, self.run);
        let bundle = self.bundles_dir().join(&id);
        self.live.fetch_add(1, Ordering::AcqRel);
        let mut guard = Guard {
            rt: Arc::clone(self),
            func: Arc::clone(func),
            id,
            bundle,
            pid: None,
            exit: None,
            exited: None,
            started: None,
        };
        match guard.launch().await {
            Ok((control, listener)) => Ok(Ready {
                guard,
                control,
                listener,
            }),
            Err(e) => {
                tokio::spawn(guard.finish(End::Kill("start failed")));
                Err(e)
            }
        }
    }
}

impl Guard {
    async fn launch(&mut self) -> Result<(UnixStream, Option<ControlListener>), RuntimeError> {
        let ledger = &self.func.ledger;
        let t0 = Instant::now();
        let listener = self.prepare_bundle()?;
        let (output, runc_output) = logs::pipe().map_err(io("creating output pipe"))?;
        ledger.phase(Phase::Bundle, t0.elapsed());
        // Bounded: a burst of runc processes can exhaust memory. The permit
        // is held until the handler is up, which is what costs.
        let t1 = Instant::now();
        let _permit = self
            .rt
            .starts
            .acquire()
            .await
            .map_err(|_| RuntimeError::ShuttingDown)?;
        ledger.phase(Phase::StartSlot, t1.elapsed());
        let t2 = Instant::now();
        let spawned = SystemTime::now();
        let (pid, exit) = self.rt.runc.run(&self.id, &self.bundle, runc_output)?;
        tokio::spawn(logs::collect(
            output,
            Arc::clone(&self.func.logs),
            self.id.clone(),
        ));
        self.pid = Some(pid);
        let exit = self.exit.insert(exit);
        let connect_timeout = self.rt.config.connect_timeout;
        let control = tokio::select! {
            accepted = listener.accept() => accepted.map_err(io("accepting the handler"))?,
            ended = exit => {
                self.exit = None;
                let exit = ended.unwrap_or(Exit::Signal(0));
                return Err(match Runc::failure(&self.bundle) {
                    Some(reason) => RuntimeError::Start { id: self.id.clone(), reason },
                    None => RuntimeError::HandlerExited { id: self.id.clone(), exit },
                });
            },
            _ = tokio::time::sleep(connect_timeout) => return Err(RuntimeError::ConnectTimeout {
                id: self.id.clone(),
                secs: connect_timeout.as_secs_f64(),
            }),
        };
        self.started = Some(Started {
            spawned,
            created: self.created_at(),
            connected: spawned + t2.elapsed(),
        });
        // One-shot: the listener goes, so a second connect is refused.
        let listener = self.func.options.reuse.then_some(listener);
        Ok((control, listener))
    }

    fn prepare_bundle(&self) -> Result<ControlListener, RuntimeError> {
        std::fs::create_dir(&self.bundle).map_err(io("creating bundle"))?;
        let sock = self.bundle.join("control.sock");
        let listener = StdListener::bind(&sock).map_err(io("binding control socket"))?;
        // The handler may run as any user of its image.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("control socket"))?;
        let listener = ControlListener::new(listener).map_err(io("control socket"))?;
        let cgroup = cgroup::runc_path(&self.rt.cgroup_scope, &self.id);
        let spec = render(&SpecInput {
            function: self.func.name.as_str(),
            rootfs: &self.rt.view.path(&self.func.rootfs.path),
            control_sock: &self.rt.view.path(&sock),
            image: &self.func.image,
            options: &self.func.options,
            cgroup: &cgroup,
            id_base: self.func.id_base,
        });
        let bytes = serde_json::to_vec(&spec).map_err(|e| io("rendering spec")(e.into()))?;
        std::fs::write(self.bundle.join("config.json"), bytes)
            .map_err(io("writing config.json"))?;
        Ok(listener)
    }
}

impl Guard {
    /// runc's creation time from its `state.json` (one small read).
    fn created_at(&self) -> Option<SystemTime> {
        let state = std::fs::read(self.rt.runc.root().join(&self.id).join("state.json")).ok()?;
        let v = serde_json::from_slice::<serde_json::Value>(&state).ok()?;
        v["created"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    }

    /// Splits the start at the moments runc leaves behind: its `created`
    /// time, and the removal of `exec.fifo` (seen by `phases`, whose task
    /// may not have read the event yet: we give it a little while).
    pub(super) async fn record_phases(&mut self) {
        let Some(Started {
            spawned,
            created: Some(created),
            connected,
        }) = self.started.take()
        else {
            return;
        };
        let Some(times) = self.rt.start_times.clone() else {
            return;
        };
        let mut started = times.take(&self.id);
        for _ in 0..PHASE_WAIT_STEPS {
            if started.is_some() {
                break;
            }
            tokio::time::sleep(PHASE_WAIT_STEP).await;
            started = times.take(&self.id);
        }
        let Some(started) = started else { return };
        // The watcher stamps the removal when it reads the event; the
        // handler may have connected first.
        let started = started.min(connected);
        if !(spawned <= created && created <= started) {
            return;
        }
        let between = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
        let m = &self.func.ledger;
        m.phase(Phase::RuntimeCreate, between(spawned, created));
        m.phase(Phase::RuntimeStart, between(created, started));
        m.phase(Phase::HandlerConnect, between(started, connected));
    }
}
