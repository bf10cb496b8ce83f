//! `--etcd`, `--node-name`, `--advertise-url` and etcd's TLS
//! (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`, the Kubernetes
//! API server's spelling; plain `http://` only with `--etcd-insecure`): a
//! node's part in a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `--etcd`, `--node-name`, `--advertise-url`, and how etcd is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub node: String,
    pub url: String,
    /// TLS to etcd (`https://` endpoints); `None` only with `--etcd-insecure`.
    pub tls: Option<EtcdTls>,
}

/// The files of etcd's TLS: the CA that signed etcd's certificate, and
/// this node's client certificate and key (for etcd's
/// `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The etcd flags as given.
#[derive(Debug, Default)]
pub(super) struct EtcdFlags {
    pub endpoints: Vec<String>,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub insecure: bool,
}

impl EtcdFlags {
    /// How etcd is reached: TLS for `https://`, plain for `http://` only
    /// when the operator said `--etcd-insecure`.
    fn tls(&self) -> Result<Option<EtcdTls>, String> {
        let https = self.endpoints.iter().all(|e| e.starts_with("https://"));
        let http = self.endpoints.iter().all(|e| e.starts_with("http://"));
        let identity = match (&self.certfile, &self.keyfile) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err("--etcd-certfile and --etcd-keyfile go together".into()),
        };
        match (https, http) {
            (true, _) => {
                if self.insecure {
                    return Err(
                        "--etcd-insecure is for http:// endpoints; these are https://".into(),
                    );
                }
                let ca = self.cafile.clone().ok_or(
                    "--etcd https://… needs --etcd-cafile (the CA that signed etcd's certificate)",
                )?;
                Ok(Some(EtcdTls { ca, identity }))
            }
            (_, true) => {
                if self.cafile.is_some() || identity.is_some() {
                    return Err(
                        "--etcd-cafile/--etcd-certfile/--etcd-keyfile need https:// endpoints"
                            .into(),
                    );
                }
                if !self.insecure {
                    return Err("--etcd over http:// lets anyone who reaches etcd read and change what every node runs: use https:// with --etcd-cafile (and --etcd-certfile/--etcd-keyfile), or say --etcd-insecure".into());
                }
                Ok(None)
            }
            _ => Err(
                "--etcd endpoints must all be https:// (or all http:// with --etcd-insecure)"
                    .into(),
            ),
        }
    }
}

/// A node name: a key segment in etcd and a label in `faas nodes`.
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn cluster_config(
    etcd: EtcdFlags,
    node: Option<String>,
    url: Option<String>,
    listen: SocketAddr,
) -> Result<Option<ClusterConfig>, String> {
    if etcd.endpoints.is_empty() {
        if node.is_some() || url.is_some() {
            return Err("--node-name and --advertise-url need --etcd".into());
        }
        if etcd.cafile.is_some()
            || etcd.certfile.is_some()
            || etcd.keyfile.is_some()
            || etcd.insecure
        {
            return Err(
                "--etcd-cafile, --etcd-certfile, --etcd-keyfile and --etcd-insecure need --etcd"
                    .into(),
            );
        }
        return Ok(None);
    }
    for e in &etcd.endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!("--etcd {e}: expected https://HOST:PORT"));
        }
    }
    let tls = etcd.tls()?;
    let node = match node {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| format!("--node-name not given and the host name is unknown: {e}"))?
            .trim()
            .to_string(),
    };
    if !valid_node_name(&node) {
        return Err(format!(
            "--node-name {node:?}: 1-63 letters, digits, '-', '_' or '.'"
        ));
    }
    let url = url.unwrap_or_else(|| format!("http://{listen}"));
    crate::client::http::Endpoint::parse(&url).map_err(|e| format!("--advertise-url {e}"))?;
    if url.starts_with("unix:") {
        return Err(format!("--advertise-url {url}: peers need an http:// URL"));
    }
    Ok(Some(ClusterConfig {
        endpoints: etcd.endpoints,
        node,
        url,
        tls,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    #[test]
    fn etcd_is_tls_unless_the_operator_says_insecure() {
        let tls = parse(&[
            "--etcd",
            "https://198.18.0.1:2379",
            "--etcd-cafile",
            "/ca.pem",
            "--etcd-certfile",
            "/n1.pem",
            "--etcd-keyfile",
            "/n1.key",
        ])
        .expect("tls")
        .cluster
        .expect("some");
        assert_eq!(
            tls.tls,
            Some(super::EtcdTls {
                ca: "/ca.pem".into(),
                identity: Some(("/n1.pem".into(), "/n1.key".into())),
            })
        );
        let refused = |args: &[&str], why: &str| {
            let e = parse(args).expect_err(why);
            assert!(e.contains(why), "{args:?}: {e}");
        };
        refused(&["--etcd", "http://e:2379"], "--etcd-insecure");
        refused(&["--etcd", "https://e:2379"], "--etcd-cafile");
        refused(
            &[
                "--etcd",
                "https://e:2379",
                "--etcd-cafile",
                "/ca",
                "--etcd-certfile",
                "/c",
            ],
            "go together",
        );
        refused(
            &["--etcd", "https://e:2379,http://f:2379", "--etcd-insecure"],
            "must all be https://",
        );
        refused(&["--etcd-cafile", "/ca"], "need --etcd");
        refused(
            &[
                "--etcd",
                "https://e:2379",
                "--etcd-cafile",
                "/ca",
                "--etcd-insecure",
            ],
            "http:// endpoints",
        );
        refused(
            &[
                "--etcd",
                "http://e:2379",
                "--etcd-insecure",
                "--insecure-no-token",
            ],
            "token",
        );
        let plain = parse(&["--etcd", "http://e:2379", "--etcd-insecure"])
            .expect("insecure")
            .cluster
            .expect("some");
        assert_eq!(plain.tls, None);
    }

    #[test]
    fn cluster_flags() {
        assert_eq!(parse(&[]).map(|c| c.cluster), Ok(None));
        let c = parse(&[
            "--etcd",
            "http://198.18.0.1:2379,http://198.18.0.2:2379",
            "--etcd-insecure",
            "--node-name",
            "n1",
            "--listen",
            "198.18.1.1:8080",
        ])
        .expect("cluster")
        .cluster
        .expect("some");
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.node, "n1");
        assert_eq!(c.url, "http://198.18.1.1:8080");
        assert!(parse(&["--node-name", "n1"]).is_err(), "needs --etcd");
        assert!(parse(&["--etcd", "198.18.0.1:2379"]).is_err());
        let insecure = |extra: &[&str]| {
            let mut args = vec!["--etcd", "http://e:2379", "--etcd-insecure"];
            args.extend_from_slice(extra);
            parse(&args)
        };
        assert!(insecure(&["--node-name", "a/b"]).is_err());
        assert!(insecure(&["--advertise-url", "unix:///x"]).is_err());
    }
}
