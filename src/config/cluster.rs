//! `--etcd`, `--node-name`, `--advertise-url`: a node's part in a cluster.

use std::net::SocketAddr;

/// `--etcd`, `--node-name`, `--advertise-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub node: String,
    pub url: String,
}

/// A node name: a key segment in etcd and a label in `faas nodes`.
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn cluster_config(
    etcd: Vec<String>,
    node: Option<String>,
    url: Option<String>,
    listen: SocketAddr,
) -> Result<Option<ClusterConfig>, String> {
    if etcd.is_empty() {
        if node.is_some() || url.is_some() {
            return Err("--node-name and --advertise-url need --etcd".into());
        }
        return Ok(None);
    }
    for e in &etcd {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!("--etcd {e}: expected http://HOST:PORT"));
        }
    }
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
        endpoints: etcd,
        node,
        url,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    #[test]
    fn cluster_flags() {
        assert_eq!(parse(&[]).map(|c| c.cluster), Ok(None));
        let c = parse(&[
            "--etcd",
            "http://198.18.0.1:2379,http://198.18.0.2:2379",
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
        assert!(parse(&["--etcd", "http://e:2379", "--node-name", "a/b"]).is_err());
        assert!(parse(&["--etcd", "http://e:2379", "--advertise-url", "unix:///x"]).is_err());
    }
}
