//! Changes to deploy options (`OptionsPatch`): what a deploy or update
//! names replaces that option, what it leaves out keeps its current value
//! (a new function starts from the defaults). Patches travel as a URL
//! query string.

use std::collections::BTreeMap;

use super::options::*;
use crate::api::units::parse_size;

/// Options a deploy or update names; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionsPatch {
    pub warm: Option<u32>,
    pub warm_max: Option<u32>,
    /// The whole environment (given means replaced).
    pub env: Option<BTreeMap<String, String>>,
    pub memory: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub reuse: Option<bool>,
    pub max_requests: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub concurrency: Option<u32>,
    pub all_cores: Option<bool>,
    pub kind: Option<HandlerKind>,
    pub server_first: Option<bool>,
    /// All the secrets (given means replaced).
    pub secrets: Option<Vec<SecretRef>>,
    pub egress: Option<bool>,
    /// The whole allow-list (given means replaced); giving one turns
    /// egress on unless `egress` says otherwise.
    pub egress_allow: Option<Vec<EgressRule>>,
    pub read_only: Option<bool>,
    pub scratch: Option<u64>,
    /// All the added capabilities (given means replaced).
    pub cap_add: Option<Vec<String>>,
    /// All the dropped ones (given means replaced).
    pub cap_drop: Option<Vec<String>>,
    pub fork: Option<bool>,
    /// All the host names (given means replaced).
    pub hosts: Option<Vec<super::host::HostName>>,
}

impl From<&DeployOptions> for OptionsPatch {
    fn from(o: &DeployOptions) -> Self {
        Self {
            warm: Some(o.warm),
            warm_max: Some(o.warm_max),
            env: Some(o.env.clone()),
            memory: Some(o.memory),
            timeout_secs: Some(o.timeout_secs),
            reuse: Some(o.reuse),
            max_requests: Some(o.max_requests),
            idle_timeout_secs: Some(o.idle_timeout_secs),
            concurrency: Some(o.concurrency),
            all_cores: Some(o.all_cores),
            kind: Some(o.kind),
            server_first: Some(o.server_first),
            secrets: Some(o.secrets.clone()),
            egress: Some(o.egress),
            egress_allow: Some(o.egress_allow.clone()),
            read_only: Some(o.read_only),
            scratch: Some(o.scratch),
            cap_add: Some(o.cap_add.clone()),
            cap_drop: Some(o.cap_drop.clone()),
            fork: Some(o.fork),
            hosts: Some(o.hosts.clone()),
        }
    }
}

impl DeployOptions {
    /// Every option, as a query string (without the `?`).
    pub fn to_query(&self) -> String {
        OptionsPatch::from(self).to_query()
    }

    /// A query applied to the defaults (a new function).
    pub fn from_query(query: &str) -> Result<Self, String> {
        OptionsPatch::from_query(query)?.apply(&Self::default())
    }
}

impl OptionsPatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with this patch's options in place, validated.
    pub fn apply(&self, base: &DeployOptions) -> Result<DeployOptions, String> {
        let pick = |p: Option<u64>, b: u64| p.unwrap_or(b);
        let out = DeployOptions {
            warm: self.warm.unwrap_or(base.warm),
            warm_max: self.warm_max.unwrap_or(base.warm_max),
            env: self.env.clone().unwrap_or_else(|| base.env.clone()),
            memory: pick(self.memory, base.memory),
            timeout_secs: pick(self.timeout_secs, base.timeout_secs),
            reuse: self.reuse.unwrap_or(base.reuse),
            max_requests: self.max_requests.unwrap_or(base.max_requests),
            idle_timeout_secs: pick(self.idle_timeout_secs, base.idle_timeout_secs),
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            all_cores: self.all_cores.unwrap_or(base.all_cores),
            kind: self.kind.unwrap_or(base.kind),
            server_first: self.server_first.unwrap_or(base.server_first),
            secrets: self.secrets.clone().unwrap_or_else(|| base.secrets.clone()),
            egress: self.egress.unwrap_or(
                base.egress || self.egress_allow.as_ref().is_some_and(|a| !a.is_empty()),
            ),
            egress_allow: self
                .egress_allow
                .clone()
                .unwrap_or_else(|| base.egress_allow.clone()),
            read_only: self.read_only.unwrap_or(base.read_only),
            scratch: pick(self.scratch, base.scratch),
            cap_add: self.cap_add.clone().unwrap_or_else(|| base.cap_add.clone()),
            cap_drop: self
                .cap_drop
                .clone()
                .unwrap_or_else(|| base.cap_drop.clone()),
            fork: self.fork.unwrap_or(base.fork),
            hosts: self.hosts.clone().unwrap_or_else(|| base.hosts.clone()),
        };
        out.validate()?;
        Ok(out)
    }

    /// The named options as a query string (without the `?`). An empty
    /// environment or secret list that is given travels as `env=` or
    /// `secret=` (cleared, not kept).
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        };
        put("warm", self.warm.map(|v| v.to_string()));
        put("warm_max", self.warm_max.map(|v| v.to_string()));
        put("memory", self.memory.map(|v| v.to_string()));
        put("timeout", self.timeout_secs.map(|v| v.to_string()));
        put("reuse", self.reuse.map(|v| v.to_string()));
        put("max_requests", self.max_requests.map(|v| v.to_string()));
        put(
            "idle_timeout",
            self.idle_timeout_secs.map(|v| v.to_string()),
        );
        put("concurrency", self.concurrency.map(|v| v.to_string()));
        put("all_cores", self.all_cores.map(|v| v.to_string()));
        match self.kind {
            None => {}
            Some(HandlerKind::ContainerPort(port)) => put("container_port", Some(port.to_string())),
            Some(kind) => put("kind", Some(kind.to_string())),
        }
        put("server_first", self.server_first.map(|v| v.to_string()));
        match &self.env {
            Some(env) if env.is_empty() => put("env", Some(String::new())),
            Some(env) => {
                for (k, v) in env {
                    put("env", Some(format!("{k}={v}")));
                }
            }
            None => {}
        }
        put("egress", self.egress.map(|v| v.to_string()));
        match &self.egress_allow {
            Some(a) if a.is_empty() => put("egress_allow", Some(String::new())),
            Some(a) => {
                for r in a {
                    put("egress_allow", Some(r.to_string()));
                }
            }
            None => {}
        }
        match &self.secrets {
            Some(s) if s.is_empty() => put("secret", Some(String::new())),
            Some(s) => {
                for r in s {
                    put("secret", Some(r.to_string()));
                }
            }
            None => {}
        }
        put("read_only", self.read_only.map(|v| v.to_string()));
        put("fork", self.fork.map(|v| v.to_string()));
        put("scratch", self.scratch.map(|v| v.to_string()));
        match &self.hosts {
            Some(h) if h.is_empty() => put("host", Some(String::new())),
            Some(h) => {
                for name in h {
                    put("host", Some(name.to_string()));
                }
            }
            None => {}
        }
        for (key, list) in [("cap_add", &self.cap_add), ("cap_drop", &self.cap_drop)] {
            match list {
                Some(l) if l.is_empty() => put(key, Some(String::new())),
                Some(l) => {
                    for cap in l {
                        put(key, Some(cap.clone()));
                    }
                }
                None => {}
            }
        }
        q.finish()
    }

    /// Decodes a query string; unknown keys and malformed values are errors
    /// so a typo never silently changes nothing.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut p = Self::default();
        let mut kind: Option<HandlerKind> = None;
        let mut port: Option<u16> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "kind" => kind = Some(parse_kind(&value)?),
                "container_port" => {
                    port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid container port {value:?} (1-65535)"))?,
                    )
                }
                "server_first" => p.server_first = Some(parse_bool("server_first", &value)?),
                "warm" => p.warm = Some(number("warm count", &value)?),
                "warm_max" => p.warm_max = Some(number("warm-max count", &value)?),
                "memory" => p.memory = Some(parse_size(&value)?),
                "timeout" => p.timeout_secs = Some(number("timeout (seconds)", &value)?),
                "reuse" => p.reuse = Some(parse_bool("reuse", &value)?),
                "all_cores" => p.all_cores = Some(parse_bool("all_cores", &value)?),
                "max_requests" => p.max_requests = Some(number("max_requests", &value)?),
                "idle_timeout" => {
                    p.idle_timeout_secs = Some(number("idle timeout (seconds)", &value)?)
                }
                "concurrency" => p.concurrency = Some(number("concurrency", &value)?),
                "env" => {
                    let env = p.env.get_or_insert_with(BTreeMap::new);
                    if !value.is_empty() {
                        let (k, v) = parse_env(&value)?;
                        env.insert(k, v);
                    }
                }
                "secret" => {
                    let secrets = p.secrets.get_or_insert_with(Vec::new);
                    if !value.is_empty() {
                        let s = SecretRef::parse(&value)?;
                        if secrets.iter().any(|t| t.name == s.name) {
                            return Err(format!("secret {} named twice", s.name));
                        }
                        secrets.push(s);
                    }
                }
                "egress" => p.egress = Some(parse_bool("egress", &value)?),
                "read_only" => p.read_only = Some(parse_bool("read_only", &value)?),
                "fork" => p.fork = Some(parse_bool("fork", &value)?),
                "scratch" => p.scratch = Some(parse_size(&value)?),
                "host" => {
                    let hosts = p.hosts.get_or_insert_with(Vec::new);
                    for host in super::host::parse_list(&value)? {
                        if !hosts.contains(&host) {
                            hosts.push(host);
                        }
                    }
                }
                "cap_add" | "cap_drop" => {
                    let list = if key == "cap_add" {
                        p.cap_add.get_or_insert_with(Vec::new)
                    } else {
                        p.cap_drop.get_or_insert_with(Vec::new)
                    };
                    if !value.is_empty() {
                        let cap = super::caps::parse(&value)?;
                        if !list.contains(&cap) {
                            list.push(cap);
                        }
                    }
                }
                "egress_allow" => {
                    let allow = p.egress_allow.get_or_insert_with(Vec::new);
                    if !value.is_empty() {
                        allow.push(EgressRule::parse(&value)?);
                    }
                }
                other => return Err(format!("unknown deploy option {other:?}")),
            }
        }
        p.kind = combine_kind(kind, port)?;
        Ok(p)
    }
}

fn number<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("invalid {what} {value:?}"))
}

fn parse_kind(value: &str) -> Result<HandlerKind, String> {
    match value {
        "control-socket" => Ok(HandlerKind::ControlSocket),
        "stdio" => Ok(HandlerKind::Stdio),
        "socket-activation" => Ok(HandlerKind::SocketActivation),
        "container-port" => Err("kind container-port needs container_port=N".into()),
        other => Err(format!(
            "unknown handler kind {other:?} (control-socket, stdio, socket-activation, or container_port=N)"
        )),
    }
}

/// `kind=` and `container_port=` together name one kind at most.
fn combine_kind(
    kind: Option<HandlerKind>,
    port: Option<u16>,
) -> Result<Option<HandlerKind>, String> {
    match (kind, port) {
        (k, None) => Ok(k),
        (None | Some(HandlerKind::ControlSocket), Some(p)) => {
            Ok(Some(HandlerKind::ContainerPort(p)))
        }
        (Some(k), Some(_)) => Err(format!(
            "--container-port and --{k} exclude each other: choose one handler kind"
        )),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid {key} {value:?} (true or false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let mut opts = DeployOptions {
            warm: 0,
            memory: 64 << 20,
            timeout_secs: 5,
            reuse: true,
            max_requests: 7,
            idle_timeout_secs: 9,
            concurrency: 3,
            all_cores: true,
            kind: HandlerKind::ContainerPort(8080),
            server_first: true,
            secrets: vec![SecretRef::parse("db-password=PGPASSWORD").expect("secret")],
            read_only: true,
            scratch: 8 << 20,
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        opts.env.insert("GREETING".into(), "a=b & c".into());
        assert_eq!(DeployOptions::from_query(&opts.to_query()), Ok(opts));
    }

    #[test]
    fn a_patch_changes_what_it_names_and_keeps_the_rest() {
        let mut base = DeployOptions {
            warm: 5,
            reuse: true,
            kind: HandlerKind::ContainerPort(8080),
            secrets: vec![SecretRef::parse("token").expect("secret")],
            ..Default::default()
        };
        base.env.insert("A".into(), "1".into());
        let patch = OptionsPatch::from_query("warm=1&memory=64M").expect("patch");
        let got = patch.apply(&base).expect("apply");
        assert_eq!((got.warm, got.memory), (1, 64 << 20));
        assert_eq!(got.env, base.env);
        assert_eq!(got.kind, base.kind);
        assert_eq!(got.secrets, base.secrets);
        assert!(got.reuse);
        // Given means replaced, an empty value means cleared.
        let cleared = OptionsPatch::from_query("env=&secret=&kind=control-socket")
            .expect("patch")
            .apply(&base)
            .expect("apply");
        assert!(cleared.env.is_empty() && cleared.secrets.is_empty());
        assert_eq!(cleared.kind, HandlerKind::ControlSocket);
        assert!(OptionsPatch::from_query("").expect("empty").is_empty());
        assert!(OptionsPatch::from_query("secret=a&secret=a=B").is_err());
        assert!(DeployOptions::from_query("secret=a=X&secret=b=X").is_err());
        // The query round-trips, the cleared lists included.
        let p = OptionsPatch {
            env: Some(BTreeMap::new()),
            secrets: Some(Vec::new()),
            reuse: Some(false),
            ..Default::default()
        };
        assert_eq!(OptionsPatch::from_query(&p.to_query()), Ok(p));
        // A patch that makes the whole invalid is refused.
        let stdio = OptionsPatch::from_query("kind=stdio").expect("patch");
        assert!(stdio.apply(&base).is_err(), "stdio with reuse");
    }

    #[test]
    fn query_refuses_nonsense() {
        assert!(DeployOptions::from_query("warm=-1").is_err());
        assert!(DeployOptions::from_query("memory=1").is_err());
        assert!(DeployOptions::from_query("timeout=0").is_err());
        assert!(DeployOptions::from_query("colour=blue").is_err());
        assert!(DeployOptions::from_query("env=NOEQUALS").is_err());
        assert!(DeployOptions::from_query("reuse=maybe").is_err());
        assert!(DeployOptions::from_query("concurrency=0").is_err());
        assert!(DeployOptions::from_query("env=1BAD%3Dx").is_err());
        assert_eq!(DeployOptions::from_query(""), Ok(DeployOptions::default()));
        assert_eq!(
            DeployOptions::from_query("memory=64M").map(|o| o.memory),
            Ok(64 << 20)
        );
    }

    #[test]
    fn handler_kinds_and_their_bad_combinations() {
        let kind = |q: &str| DeployOptions::from_query(q).map(|o| o.kind);
        assert_eq!(kind(""), Ok(HandlerKind::ControlSocket));
        assert_eq!(kind("kind=stdio"), Ok(HandlerKind::Stdio));
        assert_eq!(
            kind("kind=socket-activation"),
            Ok(HandlerKind::SocketActivation)
        );
        assert_eq!(
            kind("container_port=8080"),
            Ok(HandlerKind::ContainerPort(8080))
        );
        for bad in [
            "kind=stdio&reuse=true",
            "container_port=0",
            "container_port=70000",
            "kind=socket-activation&container_port=80",
            "kind=socket-activation&reuse=true",
            "kind=socket-activation&warm=0",
            "kind=fast",
            "warm=4&warm_max=2",
            "warm_max=300",
            "kind=socket-activation&warm=1&warm_max=4",
            "container_port=80&reuse=true&warm=1&warm_max=4",
        ] {
            let e = DeployOptions::from_query(bad).expect_err(bad);
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let follows = DeployOptions::from_query("warm=2&warm_max=16").expect("warm_max");
        assert_eq!(follows.pool_bounds(), (2, 16));
        assert_eq!(DeployOptions::default().pool_bounds(), (2, 2));
        let reuse = DeployOptions::from_query("reuse=true").expect("reuse");
        assert!(reuse.defers_accept());
        let banner = DeployOptions::from_query("reuse=true&server_first=true").expect("banner");
        assert!(!banner.defers_accept());
        assert!(!DeployOptions::default().defers_accept());
    }

    #[test]
    fn egress_rules_and_their_patch() {
        let r = EgressRule::parse("10.1.2.9/24:5432").expect("rule");
        assert_eq!(r.to_string(), "10.1.2.0/24:5432", "truncated to its prefix");
        assert_eq!(
            EgressRule::parse("10.1.2.3").expect("host").to_string(),
            "10.1.2.3/32"
        );
        for bad in [
            "10.1.2.0/24:0",
            "10.1.2.0/33",
            "fd00::/64",
            "x",
            "10.0.0.0/8:http",
        ] {
            assert!(EgressRule::parse(bad).is_err(), "{bad}");
        }
        // A list alone turns egress on; with egress=false it is an error.
        let o = DeployOptions::from_query("egress_allow=10.0.0.0%2F8%3A5432").expect("allow");
        assert!(o.egress);
        assert_eq!(o.egress_allow.len(), 1);
        assert!(DeployOptions::from_query("egress=false&egress_allow=10.0.0.0/8").is_err());
        let back = DeployOptions::from_query(&o.to_query()).expect("round trip");
        assert_eq!(back, o);
        // An empty list given clears it (egress stays on).
        let cleared = OptionsPatch::from_query("egress_allow=")
            .expect("clear")
            .apply(&o)
            .expect("apply");
        assert!(cleared.egress && cleared.egress_allow.is_empty());
    }
}
