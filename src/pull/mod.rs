//! Pulling images from a registry, the OCI distribution API through
//! `oci-client` (its auth flows: anonymous, basic, bearer token): a
//! reference is resolved to one image manifest for the wanted platform
//! and its config; the layers the layer store lacks are downloaded
//! concurrently, each verified against its digest as it streams, into
//! files the unpacker takes in order as they complete (`source.rs`).
//! Credentials are `credentials.rs`; where blobs go, `download.rs`.

pub mod credentials;
mod download;
pub mod platform;
pub mod progress;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

pub use credentials::Credentials;
pub use download::Progress;
pub use platform::Platform;
pub use source::Pulled;

/// The image config is read into memory: refused above this.
const MAX_CONFIG: i64 = 4 << 20;
/// Layers downloaded at once.
const CONCURRENT: usize = 4;

/// What can go wrong pulling; each a line a `docker pull` user reads.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("{registry}: authentication required or refused (401); log in with `faas registry login {registry}`{}", if *.logged_in { " again: the stored credentials were refused" } else { "" })]
    Unauthorized { registry: String, logged_in: bool },
    #[error("{reference}: access denied (403)")]
    Denied { reference: String },
    #[error("{reference}: {what} not found in the registry")]
    NotFound { reference: String, what: String },
    #[error("{reference} has no image for {wanted} (it has {})", .have.join(", "))]
    Platform {
        reference: String,
        wanted: String,
        have: Vec<String>,
    },
    #[error("{what} {digest}: the bytes the registry sent do not match the digest ({detail})")]
    Digest {
        what: String,
        digest: String,
        detail: String,
    },
    #[error("{what} is {size} bytes, over the {limit} limit ({max})")]
    TooLarge {
        what: String,
        size: u64,
        limit: &'static str,
        max: u64,
    },
    #[error("pulling {reference} took longer than {}s (faasd --pull-timeout)", .after.as_secs())]
    Timeout { reference: String, after: Duration },
    #[error("{registry}: {detail}")]
    Registry {
        registry: String,
        detail: String,
        /// Whether trying again may help (a reset, a timeout, 429, 5xx).
        transient: bool,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// Whether trying again may help (a reset, a timeout, 429, 5xx).
    fn transient(&self) -> bool {
        match self {
            PullError::Registry { transient, .. } => *transient,
            _ => false,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::Reference { .. } => "reference",
            PullError::Unauthorized { .. } | PullError::Denied { .. } => "auth",
            PullError::NotFound { .. } => "not_found",
            PullError::Platform { .. } => "platform",
            PullError::Digest { .. } => "digest",
            PullError::TooLarge { .. } => "limit",
            PullError::Timeout { .. } => "timeout",
            PullError::Registry { .. } | PullError::Invalid(_) => "registry",
            PullError::Io { .. } => "store",
        }
    }
}

/// faasd's registry settings.
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// `--insecure-registry`: hosts reached over plain HTTP.
    pub insecure: Vec<String>,
    /// `--registry-ca`: PEM certificates trusted besides the system's.
    pub ca_pem: Vec<u8>,
    /// `--pull-timeout`: one whole pull.
    pub timeout: Duration,
    /// `--max-upload`: the most a pull downloads.
    pub max_bytes: u64,
}

/// A reference resolved to one image: what a deploy records and pulls.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference as given, normalised (`docker.io/library/nginx:latest`).
    pub reference: String,
    /// The image manifest's digest (of the platform's manifest, where the
    /// reference names an index).
    pub digest: String,
    pub config: Vec<u8>,
    pub layers: Vec<OciDescriptor>,
    at: Reference,
}

/// Pulls images; one for the daemon.
pub struct Puller {
    client: Client,
    credentials: Arc<Credentials>,
    timeout: Duration,
    max_bytes: u64,
    /// `--insecure-registry` hosts, as references name them.
    insecure: Vec<String>,
}

impl Puller {
    pub fn new(config: PullConfig, credentials: Arc<Credentials>) -> Result<Self, PullError> {
        let mut extra = Vec::new();
        if !config.ca_pem.is_empty() {
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: config.ca_pem,
            });
        }
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            extra_root_certificates: extra,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(config.timeout.min(Duration::from_secs(60))),
            user_agent: concat!("faasd/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        Ok(Self {
            client,
            credentials,
            timeout: config.timeout,
            max_bytes: config.max_bytes,
            insecure: config.insecure,
        })
    }

    /// Parses `reference` as docker does (`nginx` is
    /// `docker.io/library/nginx:latest`).
    pub fn parse(reference: &str) -> Result<Reference, PullError> {
        let trimmed = reference.trim();
        if trimmed.is_empty() || trimmed.len() > 512 || trimmed.contains(char::is_whitespace) {
            return Err(PullError::Reference {
                reference: reference.into(),
                reason: "not an image reference".into(),
            });
        }
        trimmed
            .parse::<Reference>()
            .map_err(|e| PullError::Reference {
                reference: reference.into(),
                reason: e.to_string(),
            })
    }

    /// Resolves `reference` to the manifest for `platform` and its config;
    /// with `digest`, to exactly that manifest (what was resolved before),
    /// still recorded under `reference`.
    pub async fn resolve(
        &self,
        reference: &str,
        digest: Option<&str>,
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let named = Self::parse(reference)?;
        let at = match digest {
            Some(d) => named.clone_with_digest(d.to_string()),
            None => named.clone(),
        };
        let mut resolved = self
            .bounded(&at, self.resolve_at(at.clone(), platform))
            .await?;
        resolved.reference = named.whole();
        Ok(resolved)
    }

    async fn resolve_at(&self, at: Reference, platform: &Platform) -> Result<Resolved, PullError> {
        let auth = self.login(&at).await?;
        let (manifest, digest) = self
            .retrying(|| self.client.pull_manifest(&at, &auth), &at, "manifest")
            .await?;
        let (manifest, digest) = match manifest {
            OciManifest::Image(m) => (m, digest),
            OciManifest::ImageIndex(index) => {
                let chosen = platform.pick(&at.whole(), &index.manifests)?;
                let by_digest = at.clone_with_digest(chosen.clone());
                match self
                    .retrying(
                        || self.client.pull_manifest(&by_digest, &auth),
                        &at,
                        "manifest",
                    )
                    .await?
                {
                    (OciManifest::Image(m), _) => (m, chosen),
                    (OciManifest::ImageIndex(_), _) => {
                        return Err(PullError::Invalid(format!(
                            "{}: the index entry for {platform} is another index",
                            at.whole()
                        )))
                    }
                }
            }
        };
        if manifest.config.size > MAX_CONFIG {
            return Err(PullError::TooLarge {
                what: format!("{}'s config", at.whole()),
                size: manifest.config.size.max(0) as u64,
                limit: "config",
                max: MAX_CONFIG as u64,
            });
        }
        let config = self
            .retrying(
                || async {
                    let mut config = download::Capped {
                        bytes: Vec::new(),
                        // A descriptor without a size gets the most we read.
                        max: match manifest.config.size {
                            n if n > 0 => n as usize,
                            _ => MAX_CONFIG as usize,
                        },
                    };
                    self.client
                        .pull_blob(&at, &manifest.config, &mut config)
                        .await
                        .map(|()| config.bytes)
                },
                &at,
                "config",
            )
            .await?;
        Ok(Resolved {
            reference: at.whole(),
            digest,
            config,
            layers: manifest.layers,
            at,
        })
    }

    /// Starts downloading into `dir` the layers of `resolved` that `wanted`
    /// marks; returns the layers for the unpacker and the future that
    /// drives the downloads (dropping it stops them). `--max-upload`
    /// bounds the downloaded total.
    pub fn fetch(
        self: &Arc<Self>,
        resolved: &Resolved,
        wanted: &[bool],
        dir: &Path,
    ) -> Result<
        (
            Pulled,
            impl std::future::Future<Output = Result<(), PullError>>,
        ),
        PullError,
    > {
        let total: u64 = resolved
            .layers
            .iter()
            .zip(wanted)
            .filter(|(_, w)| **w)
            .map(|(l, _)| l.size.max(0) as u64)
            .sum();
        if total > self.max_bytes {
            return Err(PullError::TooLarge {
                what: format!("{}'s layers", resolved.reference),
                size: total,
                limit: "--max-upload",
                max: self.max_bytes,
            });
        }
        let progress = Arc::new(Progress::new(&resolved.layers, wanted));
        let (pulled, jobs) =
            source::Pulled::new(dir, &resolved.layers, wanted, Arc::clone(&progress))?;
        let puller = Arc::clone(self);
        let at = resolved.at.clone();
        let driving = async move {
            // The client keeps the token (or basic login) for the blobs.
            puller.login(&at).await?;
            download::all(&puller, &at, jobs, CONCURRENT).await
        };
        let timeout = self.timeout;
        let reference = resolved.reference.clone();
        let ends = download::EndAll(progress);
        let bounded = async move {
            let _ends = ends;
            tokio::time::timeout(timeout, driving)
                .await
                .map_err(|_| PullError::Timeout {
                    reference,
                    after: timeout,
                })?
        };
        Ok((pulled, bounded))
    }

    /// Authenticates for pulls from `at`'s repository with the stored
    /// credentials for its registry, if any (a bearer challenge is
    /// answered by a token for the repository's pull scope).
    async fn login(&self, at: &Reference) -> Result<RegistryAuth, PullError> {
        let auth = self
            .credentials
            .auth(at.registry())
            .map_err(|e| PullError::Invalid(e.to_string()))?;
        let logged_in = !matches!(auth, RegistryAuth::Anonymous);
        match self.client.auth(at, &auth, RegistryOperation::Pull).await {
            Ok(_) => Ok(auth),
            Err(oci_client::errors::OciDistributionError::AuthenticationFailure(_)) => {
                Err(PullError::Unauthorized {
                    registry: at.registry().into(),
                    logged_in,
                })
            }
            Err(e) => Err(classify(e, at, "registry", logged_in)),
        }
    }

    async fn bounded<T>(
        &self,
        at: &Reference,
        work: impl std::future::Future<Output = Result<T, PullError>>,
    ) -> Result<T, PullError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| PullError::Timeout {
                reference: at.whole(),
                after: self.timeout,
            })?
    }

    /// Runs `call` again after a transient failure, backing off.
    async fn retrying<T, F>(
        &self,
        mut call: impl FnMut() -> F,
        at: &Reference,
        what: &str,
    ) -> Result<T, PullError>
    where
        F: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        let logged_in = self.credentials.has(at.registry());
        let mut delay = Duration::from_millis(250);
        for attempt in 0.. {
            match call().await.map_err(|e| classify(e, at, what, logged_in)) {
                Err(e) if e.transient() && attempt < 3 => {
                    tracing::warn!(reference = %at.whole(), error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    /// The host `reference` names, if faasd reaches it over plain HTTP
    /// (`--insecure-registry`): said with every pull from it.
    pub fn plain_http(&self, reference: &str) -> Option<String> {
        let at = Self::parse(reference).ok()?;
        let host = at.resolve_registry().to_ascii_lowercase();
        self.insecure.contains(&host).then_some(host)
    }

    /// The stored credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// One line for what oci-client reports.
fn classify(
    e: oci_client::errors::OciDistributionError,
    at: &Reference,
    what: &str,
    logged_in: bool,
) -> PullError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    let registry = at.registry().to_string();
    let reference = at.whole();
    let one_line = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => PullError::Unauthorized {
            registry,
            logged_in,
        },
        E::ImageManifestNotFoundError(_) => PullError::NotFound {
            reference,
            what: what.into(),
        },
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                PullError::NotFound {
                    reference,
                    what: what.into(),
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                PullError::Unauthorized {
                    registry,
                    logged_in,
                }
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                PullError::Denied { reference }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                PullError::Registry {
                    registry,
                    detail: format!("{what}: 429 too many requests"),
                    transient: true,
                }
            } else {
                PullError::Registry {
                    registry,
                    detail: one_line(format!("{what}: {envelope}")),
                    transient: false,
                }
            }
        }
        E::ServerError { code, message, .. } => match code {
            401 => PullError::Unauthorized {
                registry,
                logged_in,
            },
            403 => PullError::Denied { reference },
            404 => PullError::NotFound {
                reference,
                what: what.into(),
            },
            _ => PullError::Registry {
                registry,
                detail: one_line(format!("{what}: HTTP {code} {message}")),
                transient: code == 429 || code >= 500,
            },
        },
        E::DigestError(d) => PullError::Digest {
            what: what.into(),
            digest: reference,
            detail: one_line(d.to_string()),
        },
        E::RequestError(r) => {
            let mut detail = r.to_string();
            let mut source = std::error::Error::source(&r);
            while let Some(s) = source {
                detail = format!("{detail}: {s}");
                source = s.source();
            }
            PullError::Registry {
                registry,
                detail: one_line(format!("{what}: {detail}")),
                transient: true,
            }
        }
        // A `download::Bounded` writer refused bytes past the limit, or
        // the disk is full.
        E::IoError(io) => PullError::Invalid(one_line(format!("{what}: {io}"))),
        other => PullError::Registry {
            registry,
            detail: one_line(format!("{what}: {other}")),
            transient: false,
        },
    }
}

/// Trusts `path`'s PEM certificates (`--registry-ca`), checked now.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, PullError> {
    let pem = std::fs::read(path).map_err(|source| PullError::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(PullError::Invalid(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(pem)
}
