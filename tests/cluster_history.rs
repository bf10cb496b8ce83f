//! The history checker (#27): clients deploy, update, roll back, remove
//! and read functions through random nodes while a nemesis crashes faasd
//! nodes, kills etcd members and cuts nodes off from etcd or from their
//! peers. Every operation's invocation, completion and result is
//! recorded, then checked: nothing acknowledged lost, nothing refused
//! taken, no read older than the revision it carried, no address held by
//! two functions at once, every node on one state within 5 s of the
//! nemesis' end.
//!
//! Seeded: `FAAS_HISTORY_SEED=N` replays a run's choices (each run prints
//! its seed; the suite's is 27, `random` takes a new one),
//! `FAAS_HISTORY_SECS` sets its length (45 s in the suite; longer runs are
//! in `docs/network.md`). The history is written out, one line
//! per operation, whether the checks pass or not.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use faasd::api::{DeployOptions, FunctionInfo, OptionsPatch};
use faasd::client::revisions::Revisions;
use faasd::client::{Client, ClientError};

/// The functions the clients fight over: few, so that they collide.
const NAMES: [&str; 4] = ["h0", "h1", "h2", "h3"];
const CLIENTS: usize = 3;
const NODES: usize = 3;
/// Every node on one state within this of the nemesis' end (#27).
const CONVERGE: Duration = Duration::from_secs(5);

#[test]
fn a_history_under_faults_loses_nothing_acknowledged() {
    // The suite replays one history (27); `random` explores.
    let seed = match std::env::var("FAAS_HISTORY_SEED").ok().as_deref() {
        None | Some("") => 27,
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        Some(n) => n.parse().expect("FAAS_HISTORY_SEED: a number, or random"),
    };
    let secs: u64 = std::env::var("FAAS_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    println!("history seed {seed}, {secs} s (FAAS_HISTORY_SEED={seed} replays it)");
    assert!(
        which("iptables").is_some(),
        "iptables not found: scripts/install-deps.sh installs it"
    );
    let mut sim = Sim::start_full(NODES, 3, &[]);
    sim.wait_members();
    let urls: Vec<String> = sim.nodes.iter().map(|n| n.faasd.unix_url()).collect();
    let images = Arc::new(vec![
        image_bytes(&hello_image()),
        image_bytes(&which_image("a")),
        image_bytes(&which_image("b")),
    ]);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let users = tempfile::tempdir().expect("tempdir");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let user = User {
                id,
                rng: Rng::new(seed ^ ((id as u64 + 1) * 0x5851_f42d)),
                urls: urls.clone(),
                images: Arc::clone(&images),
                revisions: Revisions::at(&users.path().join(format!("c{id}"))),
                t0,
            };
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || user.run(&stop))
        })
        .collect();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples, urls) = (Arc::clone(&stop), Arc::clone(&samples), urls.clone());
        std::thread::spawn(move || sample(&urls, &stop, &samples, t0))
    };

    let mut nemesis = Nemesis {
        rng: Rng::new(seed),
        log: Vec::new(),
        t0,
    };
    let end = t0 + Duration::from_secs(secs);
    while Instant::now() < end {
        nemesis.strike(&mut sim, end);
    }
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<Op> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    ops.sort_by_key(|o| o.start);
    sampler.join().expect("sampler");

    // The nemesis has healed all it did; from here every node must agree.
    let healed = Instant::now();
    let mut last;
    let converged = loop {
        last = urls
            .iter()
            .map(|u| state_of(&Client::new(u)))
            .collect::<Vec<_>>();
        if last.iter().all(|s| s.is_some() && *s == last[0]) {
            break Some(healed.elapsed());
        }
        if healed.elapsed() > CONVERGE * 6 {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
    let mut violations = check(&ops, last[0].as_ref(), &samples);
    match converged {
        Some(took) if took <= CONVERGE => {}
        Some(took) => violations.push(format!("the nodes took {took:?} to agree")),
        None => violations.push(format!("the nodes never agreed: {last:?}")),
    }
    let path = write_history(seed, &ops, &nemesis.log, &violations);
    let count = |kind: Kind, f: fn(&Outcome) -> bool| {
        ops.iter()
            .filter(|o| o.kind == kind && f(&o.outcome))
            .count()
    };
    let acked = |o: &Outcome| matches!(o, Outcome::Done { .. });
    let unknown = |o: &Outcome| matches!(o, Outcome::Unknown(_));
    println!(
        "MEASURE history {} ops in {secs} s ({} faults): deploy {} acked, update {}, rollback {}, rm {}, read {}; {} unknown; {} address samples; converged in {:?}; history at {}",
        ops.len(),
        nemesis.log.len() / 2,
        count(Kind::Deploy, acked),
        count(Kind::Update, acked),
        count(Kind::Rollback, acked),
        count(Kind::Remove, acked),
        count(Kind::Read, acked),
        ops.iter().filter(|o| unknown(&o.outcome)).count(),
        samples.len(),
        converged,
        path.display()
    );
    let writes = ops
        .iter()
        .filter(|o| o.kind != Kind::Read && acked(&o.outcome))
        .count();
    assert!(
        writes > secs as usize / 2,
        "too few acknowledged writes to say anything: {writes}\n{}",
        sim.context()
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations (history in {}):\n{}\n{}",
        violations.len(),
        path.display(),
        violations.join("\n"),
        sim.context()
    );
}

/// A small deterministic generator (xorshift64*): the seed decides every
/// choice of the clients and of the nemesis.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deploy,
    Update,
    Rollback,
    Remove,
    Read,
}

/// A function's state as the checker tells them apart: the marker its
/// environment carries (`W`, unique per write), or absent.
type State = Option<String>;

#[derive(Debug, Clone)]
enum Outcome {
    /// Acknowledged (a read: answered): the state it answered, and the
    /// revision that recorded a change.
    Done { state: State, revision: Option<i64> },
    /// faasd said no, and that nothing changed.
    Refused(String),
    /// No answer that says whether it happened.
    Unknown(String),
}

struct Op {
    client: usize,
    node: usize,
    kind: Kind,
    name: &'static str,
    /// What a deploy or update writes.
    marker: Option<String>,
    /// The revision the request carried (`X-Faas-Min-Revision`).
    carried: Option<i64>,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

/// One client: a user of `faas` keeping its revisions, through random
/// nodes.
struct User {
    id: usize,
    rng: Rng,
    urls: Vec<String>,
    images: Arc<Vec<Vec<u8>>>,
    revisions: Revisions,
    t0: Instant,
}

impl User {
    fn run(mut self, stop: &AtomicBool) -> Vec<Op> {
        let clients: Vec<Client> = self
            .urls
            .iter()
            .map(|u| Client::new(u).with_revisions(self.revisions.clone()))
            .collect();
        let mut ops = Vec::new();
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            let node = self.rng.below(clients.len());
            let name = NAMES[self.rng.below(NAMES.len())];
            let kind = match self.rng.below(20) {
                0..=6 => Kind::Read,
                7..=10 => Kind::Update,
                11..=14 => Kind::Deploy,
                15..=16 => Kind::Rollback,
                _ => Kind::Remove,
            };
            seq += 1;
            let marker =
                matches!(kind, Kind::Deploy | Kind::Update).then(|| format!("c{}-{seq}", self.id));
            let carried = self.revisions.for_url(&self.urls[node]).map(|(_, at)| at);
            let start = self.t0.elapsed();
            let outcome = self.call(&clients[node], kind, name, marker.as_deref());
            ops.push(Op {
                client: self.id,
                node,
                kind,
                name,
                marker,
                carried,
                start,
                end: self.t0.elapsed(),
                outcome,
            });
            std::thread::sleep(self.rng.millis(0, 60));
        }
        ops
    }

    fn call(&mut self, client: &Client, kind: Kind, name: &str, marker: Option<&str>) -> Outcome {
        let env = || {
            marker
                .map(|m| [("W".to_string(), m.to_string())].into())
                .unwrap_or_default()
        };
        let answered = match kind {
            Kind::Deploy => {
                let image = &self.images[self.rng.below(self.images.len())];
                let options = DeployOptions {
                    env: env(),
                    ..Default::default()
                };
                client.deploy(name, &options, image.as_slice())
            }
            Kind::Update => client.update(
                name,
                &OptionsPatch {
                    env: Some(env()),
                    ..Default::default()
                },
            ),
            Kind::Rollback => client.rollback(name, None),
            Kind::Read => client.inspect(name),
            Kind::Remove => {
                return match client.remove(name) {
                    Ok(revision) => Outcome::Done {
                        state: None,
                        revision,
                    },
                    Err(e) => failed(kind, e),
                }
            }
        };
        match answered {
            Ok(info) => Outcome::Done {
                state: marker_of(&info),
                revision: info.revision,
            },
            Err(e) => failed(kind, e),
        }
    }
}

fn marker_of(info: &FunctionInfo) -> State {
    info.options.env.get("W").cloned()
}

/// What an error says of the change: refused (faasd says nothing
/// changed), or unknown (no answer, or faasd cannot say).
fn failed(kind: Kind, e: ClientError) -> Outcome {
    match &e {
        ClientError::Api { status: 404, .. } if kind == Kind::Read => Outcome::Done {
            state: None,
            revision: None,
        },
        // The connection was refused (a crashed node): nothing was sent.
        ClientError::Transport { message, .. } if message.contains("connection refused") => {
            Outcome::Refused(e.to_string())
        }
        ClientError::Api { message, .. } if message.contains("etcd may hold the change") => {
            Outcome::Unknown(e.to_string())
        }
        ClientError::Api {
            status: 400..=499 | 503,
            ..
        } => Outcome::Refused(e.to_string()),
        _ => Outcome::Unknown(e.to_string()),
    }
}

/// Every node's function list, sampled in rounds while the history runs.
struct Sample {
    at: Duration,
    node: usize,
    held: Vec<(String, IpAddr)>,
}

fn sample(urls: &[String], stop: &AtomicBool, into: &Mutex<Vec<Sample>>, t0: Instant) {
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();
    while !stop.load(Ordering::Relaxed) {
        for (node, c) in clients.iter().enumerate() {
            if let Ok(list) = c.list() {
                let held = list.into_iter().map(|f| (f.name, f.ip)).collect();
                let at = t0.elapsed();
                into.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Sample { at, node, held });
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node's whole state: each function's marker and address.
fn state_of(client: &Client) -> Option<BTreeMap<String, (State, IpAddr)>> {
    let list = client.list().ok()?;
    Some(
        list.iter()
            .map(|f| (f.name.clone(), (marker_of(f), f.ip)))
            .collect(),
    )
}

/// Crashes, kills and cuts, one at a time: each held a few seconds, then
/// healed.
struct Nemesis {
    rng: Rng,
    log: Vec<(Duration, String)>,
    t0: Instant,
}

impl Nemesis {
    fn strike(&mut self, sim: &mut Sim, end: Instant) {
        std::thread::sleep(self.rng.millis(500, 2500));
        let hold = self.rng.millis(2000, 6000);
        // Healed by the end, so the end measures convergence alone.
        let hold = hold.min(end.saturating_duration_since(Instant::now()));
        let node = self.rng.below(sim.nodes.len());
        match self.rng.below(4) {
            0 => {
                self.note(format!("crash n{} (kill -9)", node + 1));
                sim.nodes[node].faasd.crash();
                std::thread::sleep(hold);
                sim.nodes[node].faasd.spawn();
                self.note(format!("n{} started again", node + 1));
            }
            1 => {
                let member = self.rng.below(sim.etcd.len());
                let leader = if sim.etcd[member].leads() {
                    " (the leader)"
                } else {
                    ""
                };
                self.note(format!("kill -9 etcd {}{leader}", sim.etcd[member].name()));
                sim.etcd[member].stop();
                std::thread::sleep(hold);
                sim.etcd[member].spawn();
                self.note(format!("etcd {} started again", sim.etcd[member].name()));
            }
            kind => {
                let from = if kind == 2 { Cut::Etcd } else { Cut::Peers };
                self.note(format!("cut n{} from {from:?}", node + 1));
                sim.nodes[node].cut(from, true);
                std::thread::sleep(hold);
                sim.nodes[node].cut(from, false);
                self.note(format!("n{} healed from {from:?}", node + 1));
            }
        }
    }

    fn note(&mut self, what: String) {
        self.log.push((self.t0.elapsed(), what));
    }
}

/// What a write may have left as its function's state, if it happened.
#[derive(Debug, PartialEq)]
enum Leaves {
    Exactly(State),
    /// An unanswered rollback: some earlier version's state.
    Earlier,
}

fn leaves(op: &Op) -> Leaves {
    match (&op.outcome, op.kind) {
        (Outcome::Done { state, .. }, _) => Leaves::Exactly(state.clone()),
        (_, Kind::Deploy | Kind::Update) => Leaves::Exactly(op.marker.clone()),
        (_, Kind::Remove) => Leaves::Exactly(None),
        _ => Leaves::Earlier,
    }
}

/// Every property the history must have; a readable line per violation.
fn check(
    ops: &[Op],
    last: Option<&BTreeMap<String, (State, IpAddr)>>,
    samples: &[Sample],
) -> Vec<String> {
    let mut out = Vec::new();
    let index: BTreeMap<*const Op, usize> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| (o as *const Op, i))
        .collect();
    let id = |o: &Op| format!("#{}", index[&(o as *const Op)]);
    // A refused change's marker is seen nowhere.
    let refused: BTreeSet<&str> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Refused(_)))
        .filter_map(|o| o.marker.as_deref())
        .collect();
    let mut seen: Vec<(String, &str)> = Vec::new();
    for o in ops {
        if let Outcome::Done { state: Some(m), .. } = &o.outcome {
            seen.push((id(o), m));
        }
        // An acknowledged deploy or update answers the state it wrote.
        if let (Some(m), Outcome::Done { state, .. }) = (&o.marker, &o.outcome) {
            if state.as_ref() != Some(m) {
                out.push(format!("{} {:?} {m} answered {state:?}", id(o), o.kind));
            }
        }
    }
    for name in NAMES {
        let on: Vec<&Op> = ops.iter().filter(|o| o.name == name).collect();
        let writes: Vec<&Op> = on
            .iter()
            .copied()
            .filter(|o| o.kind != Kind::Read)
            .collect();
        let mut acked: Vec<(i64, &Op)> = writes
            .iter()
            .filter_map(|o| match o.outcome {
                Outcome::Done {
                    revision: Some(r), ..
                } => Some((r, *o)),
                _ => None,
            })
            .collect();
        acked.sort_by_key(|(r, _)| *r);
        for w in acked.windows(2) {
            if w[0].0 == w[1].0 {
                out.push(format!(
                    "{} and {} both acknowledged at revision {}",
                    id(w[0].1),
                    id(w[1].1),
                    w[0].0
                ));
            }
        }
        let unknown: Vec<&Op> = writes
            .iter()
            .copied()
            .filter(|o| matches!(o.outcome, Outcome::Unknown(_)))
            .collect();
        let markers: BTreeSet<&str> = writes
            .iter()
            .filter(|o| !matches!(o.outcome, Outcome::Refused(_)))
            .filter_map(|o| o.marker.as_deref())
            .collect();
        // Whether `state` may follow the last acknowledged write `after`
        // (none: the start) by `until`.
        let allowed = |state: &State, after: Option<(i64, &Op)>, until: Duration| {
            let fits = |l: Leaves| match l {
                Leaves::Exactly(s) => s == *state,
                Leaves::Earlier => state.as_deref().is_some_and(|m| markers.contains(m)),
            };
            let base = match after {
                Some((_, a)) => fits(leaves(a)),
                None => state.is_none(),
            };
            let floor = after.map_or(i64::MIN, |(r, _)| r);
            let start = after.map_or(Duration::ZERO, |(_, a)| a.start);
            base || acked
                .iter()
                .any(|(r, w)| *r > floor && w.start < until && fits(leaves(w)))
                || unknown
                    .iter()
                    .any(|u| u.start < until && u.end > start && fits(leaves(u)))
        };
        // Nothing acknowledged lost: the end is the last acknowledged
        // write's state, or one a write that may have come after it left.
        if let Some(last) = last {
            let end = last.get(name).map(|(s, _)| s.clone()).unwrap_or(None);
            if let Some(m) = end.as_deref().filter(|m| refused.contains(m)) {
                out.push(format!("{name} ends as {m}, written by a refused change"));
            }
            let after = acked.last().copied();
            if !allowed(&end, after, Duration::MAX) {
                out.push(format!(
                    "{name} ends as {end:?}; the last acknowledged write was {}",
                    after.map_or("none".into(), |(r, a)| format!("{} at revision {r}", id(a)))
                ));
            }
        }
        // A read carrying revision M answers a state no older than M's.
        for r in on.iter().filter(|o| o.kind == Kind::Read) {
            let (Outcome::Done { state, .. }, Some(m)) = (&r.outcome, r.carried) else {
                continue;
            };
            let after = acked.iter().copied().rfind(|(rev, _)| *rev <= m);
            if !allowed(state, after, r.end) {
                out.push(format!(
                    "{} read {name} as {state:?} carrying revision {m}; the last write acknowledged by then was {}",
                    id(r),
                    after.map_or("none".into(), |(rev, a)| format!("{} at revision {rev}", id(a)))
                ));
            }
        }
    }
    for (op, m) in &seen {
        if refused.contains(m) {
            out.push(format!("{op} saw {m}, written by a refused change"));
        }
    }
    // No address held by two functions at once: within one node's list,
    // and across the nodes' lists of one round (sampled within ~10 ms).
    let mut rounds: Vec<&[Sample]> = Vec::new();
    let mut from = 0;
    for i in 1..=samples.len() {
        if i == samples.len() || samples[i].node <= samples[i - 1].node {
            rounds.push(&samples[from..i]);
            from = i;
        }
    }
    for round in rounds {
        let mut holders: BTreeMap<IpAddr, BTreeSet<(String, usize)>> = BTreeMap::new();
        for s in round {
            for (name, ip) in &s.held {
                holders
                    .entry(*ip)
                    .or_default()
                    .insert((name.clone(), s.node));
            }
        }
        for (ip, who) in holders {
            let names: BTreeSet<&String> = who.iter().map(|(n, _)| n).collect();
            if names.len() > 1 {
                out.push(format!(
                    "at {:?}: {ip} held by {}",
                    round[0].at,
                    who.iter()
                        .map(|(n, node)| format!("{n} on n{}", node + 1))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    out
}

/// The history, readable: the nemesis' steps and every operation in
/// order of invocation, then what was violated.
fn write_history(
    seed: u64,
    ops: &[Op],
    nemesis: &[(Duration, String)],
    violations: &[String],
) -> PathBuf {
    let mut text = format!("# seed {seed}\n# nemesis\n");
    for (at, what) in nemesis {
        let _ = writeln!(text, "{:>9.3}s  {what}", at.as_secs_f64());
    }
    text += "# operations: #index start..end client node op name [carried] -> outcome\n";
    for (i, o) in ops.iter().enumerate() {
        let outcome = match &o.outcome {
            Outcome::Done { state, revision } => format!("ok {state:?} rev {revision:?}"),
            Outcome::Refused(why) => format!("refused: {why}"),
            Outcome::Unknown(why) => format!("unknown: {why}"),
        };
        let _ = writeln!(
            text,
            "#{i:<5} {:>8.3}..{:<8.3} c{} n{} {:?} {} {} [{}] -> {outcome}",
            o.start.as_secs_f64(),
            o.end.as_secs_f64(),
            o.client,
            o.node + 1,
            o.kind,
            o.name,
            o.marker.as_deref().unwrap_or("-"),
            o.carried.map_or("-".into(), |c| c.to_string()),
        );
    }
    text += "# violations\n";
    for v in violations {
        text += v;
        text.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("history-{seed}.txt"));
    std::fs::write(&path, text).expect("writing the history");
    path
}

/// The checker itself catches what it is for: made-up histories with one
/// violation each (and their sound twins).
mod checker {
    use super::*;

    fn op(kind: Kind, name: &'static str, marker: Option<&str>, at: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node: 0,
            kind,
            name,
            marker: marker.map(str::to_string),
            carried: None,
            start: Duration::from_secs(at),
            end: Duration::from_secs(at) + Duration::from_millis(500),
            outcome,
        }
    }

    fn done(state: Option<&str>, revision: i64) -> Outcome {
        Outcome::Done {
            state: state.map(str::to_string),
            revision: Some(revision),
        }
    }

    fn ends(pairs: &[(&str, &str)]) -> BTreeMap<String, (State, IpAddr)> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (n, m))| {
                let ip: IpAddr = format!("198.18.100.{}", i + 1).parse().expect("ip");
                (n.to_string(), (Some(m.to_string()), ip))
            })
            .collect()
    }

    fn history() -> Vec<Op> {
        vec![
            op(Kind::Deploy, "h0", Some("a"), 0, done(Some("a"), 10)),
            op(Kind::Update, "h0", Some("b"), 2, done(Some("b"), 12)),
        ]
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let ops = history();
        assert!(check(&ops, Some(&ends(&[("h0", "b")])), &[]).is_empty());
        let lost = check(&ops, Some(&ends(&[("h0", "a")])), &[]);
        assert!(lost.iter().any(|v| v.contains("h0 ends as")), "{lost:?}");
        let gone = check(&ops, Some(&ends(&[])), &[]);
        assert_eq!(gone.len(), 1, "{gone:?}");
    }

    #[test]
    fn a_write_that_may_have_happened_may_be_the_end() {
        let mut ops = history();
        ops.push(op(
            Kind::Update,
            "h0",
            Some("u"),
            3,
            Outcome::Unknown("crash".into()),
        ));
        assert!(check(&ops, Some(&ends(&[("h0", "u")])), &[]).is_empty());
        ops.push(op(
            Kind::Update,
            "h0",
            Some("r"),
            4,
            Outcome::Refused("503".into()),
        ));
        let taken = check(&ops, Some(&ends(&[("h0", "r")])), &[]);
        assert!(taken.iter().any(|v| v.contains("refused")), "{taken:?}");
    }

    #[test]
    fn a_read_older_than_its_revision_is_caught() {
        let mut ops = history();
        let mut read = op(Kind::Read, "h0", None, 4, done(Some("a"), 0));
        read.carried = Some(12);
        ops.push(read);
        let stale = check(&ops, None, &[]);
        assert!(
            stale.iter().any(|v| v.contains("carrying revision 12")),
            "{stale:?}"
        );
        ops[2].carried = Some(11);
        assert!(check(&ops, None, &[]).is_empty(), "revision 11 is before b");
    }

    #[test]
    fn one_address_held_by_two_functions_is_caught() {
        let ip: IpAddr = "198.18.100.1".parse().expect("ip");
        let sample = |node, name: &str| Sample {
            at: Duration::ZERO,
            node,
            held: vec![(name.to_string(), ip)],
        };
        let same = [sample(0, "h0"), sample(1, "h0")];
        assert!(check(&[], None, &same).is_empty());
        let two = [sample(0, "h0"), sample(1, "h1")];
        let caught = check(&[], None, &two);
        assert!(
            caught
                .iter()
                .any(|v| v.contains("held by h0 on n1, h1 on n2")),
            "{caught:?}"
        );
    }
}
