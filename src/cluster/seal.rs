//! What makes a function's record in etcd, or a request from one node to
//! another, a node's own: an HMAC-SHA256 keyed by the cluster token (every
//! node's `--token-file`), which nothing but the nodes (and the operators
//! who hold the token anyway) has. etcd's TLS and client certificates keep
//! strangers out of etcd; this keeps whoever gets into etcd (a stolen
//! etcd certificate, an etcd operator) from making nodes run an image or
//! hand a function a secret, and lets a node fetch an archive from a peer
//! without ever sending the token to an address read from etcd.
//!
//! - A spec is stored as `faasd-spec-v1 <mac>\n<spec JSON>`, the MAC over
//!   those JSON bytes exactly (so nodes of different versions agree).
//! - A registry login is stored as `faasd-login-v1 <hex>`: a random
//!   nonce and the login's JSON encrypted and authenticated with
//!   XChaCha20-Poly1305 under a key of its own, bound to its etcd key: etcd
//!   (and its backups) never hold a registry password in the clear.
//! - An archive fetch carries `X-Faas-Peer: node=N;ts=T;mac=M`, the MAC
//!   over the request, the fetching node and the time: good for that one
//!   archive, for `PEER_SKEW` either side of `ts`.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::Spec;

type HmacSha256 = Hmac<Sha256>;

const SPEC_HEADER: &str = "faasd-spec-v1 ";
const LOGIN_HEADER: &str = "faasd-login-v1 ";
/// How far a peer request's time may be from ours (clock skew, retries).
const PEER_SKEW: u64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("{0}: not signed by a node of this cluster (written by something else, or by a faasd before records were signed: faas rm it and deploy it again)")]
    Unsigned(String),
    #[error("{0}: its signature does not match (changed outside faasd, or another cluster's token): faas rm it and deploy it again")]
    Forged(String),
    #[error("{0}: {1}")]
    Malformed(String, String),
    #[error("peer credential: {0}")]
    Peer(&'static str),
}

/// The keys, derived from the cluster token: one per use, so a MAC made
/// for one purpose is never good for another.
#[derive(Clone)]
pub struct Seal {
    spec: [u8; 32],
    peer: [u8; 32],
    login: [u8; 32],
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Seal {
    pub fn new(token: &str) -> Self {
        let derive = |purpose: &[u8]| -> [u8; 32] {
            mac(token.as_bytes(), &[purpose])
                .finalize()
                .into_bytes()
                .into()
        };
        Self {
            spec: derive(b"faasd spec v1"),
            peer: derive(b"faasd peer v1"),
            login: derive(b"faasd registry login v1"),
        }
    }

    /// A registry login (its JSON) as stored under `key`, encrypted.
    pub fn seal_login(&self, key: &str, login: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = XChaCha20Poly1305::new(&self.login.into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: login,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| SealError::Malformed(key.into(), "encrypting".into()))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        Ok(format!("{LOGIN_HEADER}{}", hex(&body)).into_bytes())
    }

    /// The login stored under `key`, if a node of this cluster wrote it.
    pub fn open_login(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, SealError> {
        let body = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix(LOGIN_HEADER))
            .ok_or_else(|| SealError::Unsigned(key.into()))?;
        let body = unhex(body).ok_or_else(|| SealError::Forged(key.into()))?;
        if body.len() < 24 {
            return Err(SealError::Forged(key.into()));
        }
        let (nonce, sealed) = body.split_at(24);
        XChaCha20Poly1305::new(&self.login.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| SealError::Forged(key.into()))
    }

    /// `spec` as stored in etcd, signed.
    pub fn seal_spec(&self, spec: &Spec) -> Vec<u8> {
        let body = super::keys::encode(spec);
        let tag = hex(&mac(&self.spec, &[&body]).finalize().into_bytes());
        let mut out = format!("{SPEC_HEADER}{tag}\n").into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// The spec stored under `key`, if a node of this cluster wrote it.
    pub fn open_spec(&self, key: &str, value: &[u8]) -> Result<Spec, SealError> {
        let newline = value.iter().position(|&b| b == b'\n');
        let (head, body) = match newline {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => return Err(SealError::Unsigned(key.into())),
        };
        let tag = std::str::from_utf8(head)
            .ok()
            .and_then(|h| h.strip_prefix(SPEC_HEADER))
            .ok_or_else(|| SealError::Unsigned(key.into()))?;
        let tag = unhex(tag).ok_or_else(|| SealError::Forged(key.into()))?;
        mac(&self.spec, &[body])
            .verify_slice(&tag)
            .map_err(|_| SealError::Forged(key.into()))?;
        super::keys::decode(key, body).map_err(|e| SealError::Malformed(key.into(), e))
    }

    /// The credential node `node` fetches archive `digest` with at `now`
    /// (seconds since the epoch).
    pub fn credential(&self, node: &str, digest: &str, now: u64) -> String {
        let ts = now.to_string();
        let tag = hex(&self.peer_mac(node, digest, &ts).finalize().into_bytes());
        format!("node={node};ts={ts};mac={tag}")
    }

    /// The node a credential for `digest` comes from, if it is good now.
    pub fn check_credential(
        &self,
        credential: &str,
        digest: &str,
        now: u64,
    ) -> Result<String, SealError> {
        let field = |name: &str| {
            credential
                .split(';')
                .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
                .ok_or(SealError::Peer("incomplete"))
        };
        let (node, ts, tag) = (field("node")?, field("ts")?, field("mac")?);
        let at: u64 = ts.parse().map_err(|_| SealError::Peer("bad time"))?;
        if at.abs_diff(now) > PEER_SKEW {
            return Err(SealError::Peer("expired"));
        }
        let tag = unhex(tag).ok_or(SealError::Peer("bad mac"))?;
        self.peer_mac(node, digest, ts)
            .verify_slice(&tag)
            .map_err(|_| SealError::Peer("wrong mac"))?;
        Ok(node.to_string())
    }

    /// The MAC of node `node` fetching archive `digest` at `ts`.
    fn peer_mac(&self, node: &str, digest: &str, ts: &str) -> HmacSha256 {
        let parts: [&[u8]; 6] = [
            b"GET /v1/archives/",
            digest.as_bytes(),
            b"\n",
            node.as_bytes(),
            b"\n",
            ts.as_bytes(),
        ];
        mac(&self.peer, &parts)
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::name::FunctionName;
    use crate::api::DeployOptions;

    fn spec() -> Spec {
        Spec {
            name: FunctionName::parse("web").expect("name"),
            ip: "198.18.100.1".parse().expect("ip"),
            image_id: "sha256:aa".into(),
            archive: "b".repeat(64),
            archives: Default::default(),
            pulled: Default::default(),
            options: DeployOptions::default(),
            origin: "deploy".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn a_login_is_never_in_the_clear_and_opens_only_under_its_key() {
        let seal = Seal::new("cluster-token");
        let login = br#"{"username":"ci","password":"hunter2-secret"}"#;
        let sealed = seal
            .seal_login("/faasd/registries/ghcr.io", login)
            .expect("seal");
        let text = String::from_utf8(sealed.clone()).expect("utf8");
        assert!(
            !text.contains("hunter2") && !text.contains("ci\""),
            "{text}"
        );
        assert_ne!(
            sealed,
            seal.seal_login("/faasd/registries/ghcr.io", login)
                .expect("seal")
        );
        assert_eq!(
            seal.open_login("/faasd/registries/ghcr.io", &sealed)
                .expect("open"),
            login.to_vec()
        );
        assert!(seal
            .open_login("/faasd/registries/evil.io", &sealed)
            .is_err());
        assert!(Seal::new("other")
            .open_login("/faasd/registries/ghcr.io", &sealed)
            .is_err());
        assert!(seal.open_login("/faasd/registries/ghcr.io", login).is_err());
    }

    #[test]
    fn a_spec_opens_only_with_its_clusters_token_and_unchanged() {
        let seal = Seal::new("cluster-token");
        let sealed = seal.seal_spec(&spec());
        assert_eq!(seal.open_spec("k", &sealed), Ok(spec()));
        assert!(matches!(
            Seal::new("other-token").open_spec("k", &sealed),
            Err(SealError::Forged(_))
        ));
        let text = String::from_utf8(sealed).expect("utf8");
        let changed = text.replace("\"warm\":2", "\"warm\":9");
        assert_ne!(changed, text);
        assert!(matches!(
            seal.open_spec("k", changed.as_bytes()),
            Err(SealError::Forged(_))
        ));
        let unsigned = crate::cluster::keys::encode(&spec());
        assert!(matches!(
            seal.open_spec("k", &unsigned),
            Err(SealError::Unsigned(_))
        ));
    }

    #[test]
    fn a_peer_credential_is_good_for_its_archive_and_a_while() {
        let seal = Seal::new("cluster-token");
        let digest = "c".repeat(64);
        let cred = seal.credential("n2", &digest, 1_000_000);
        assert!(!cred.contains("cluster-token"));
        assert_eq!(
            seal.check_credential(&cred, &digest, 1_000_100),
            Ok("n2".into())
        );
        let other = "d".repeat(64);
        assert!(seal.check_credential(&cred, &other, 1_000_000).is_err());
        assert!(seal
            .check_credential(&cred, &digest, 1_000_000 + 301)
            .is_err());
        assert!(Seal::new("x")
            .check_credential(&cred, &digest, 1_000_000)
            .is_err());
        let renamed = cred.replace("node=n2", "node=n3");
        assert!(seal.check_credential(&renamed, &digest, 1_000_000).is_err());
    }
}
