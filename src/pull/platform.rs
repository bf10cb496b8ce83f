//! The platform an image index is resolved for: `--platform os/arch[/variant]`
//! as docker writes it, by default this machine's (linux/amd64 here).

use std::fmt;

use oci_client::manifest::ImageIndexEntry;

use super::PullError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// This machine's, named as Go (and so every image index) names it.
    fn default() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?}: write os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
            )),
        }
    }
}

impl Platform {
    /// The digest of the entry of `entries` for this platform; an error
    /// naming the platforms there are where none is.
    pub fn pick(&self, reference: &str, entries: &[ImageIndexEntry]) -> Result<String, PullError> {
        let mut have = Vec::new();
        for entry in entries {
            let Some(p) = &entry.platform else { continue };
            let theirs = Platform {
                os: p.os.to_string(),
                architecture: p.architecture.to_string(),
                variant: p.variant.clone(),
            };
            if self.matches(&theirs) {
                return Ok(entry.digest.clone());
            }
            // Attestation manifests (buildx) carry "unknown/unknown".
            if theirs.os != "unknown" {
                have.push(theirs.to_string());
            }
        }
        Err(PullError::Platform {
            reference: reference.into(),
            wanted: self.to_string(),
            have,
        })
    }

    /// A variant asked for must be the entry's; none asked takes any.
    fn matches(&self, theirs: &Platform) -> bool {
        self.os == theirs.os
            && self.architecture == theirs.architecture
            && (self.variant.is_none() || self.variant == theirs.variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_platforms() {
        let p: Platform = "linux/arm64/v8".parse().expect("parses");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        assert!("linux/../x".parse::<Platform>().is_err());
        assert_eq!(Platform::default().to_string(), "linux/amd64");
    }

    #[test]
    fn picks_the_entry_or_names_what_there_is() {
        let entry = |arch: &str, variant: Option<&str>, digest: &str| {
            serde_json::from_value::<ImageIndexEntry>(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": 1,
                "platform": {"os": "linux", "architecture": arch, "variant": variant},
            }))
            .expect("entry")
        };
        let entries = vec![
            entry("arm64", Some("v8"), "sha256:a"),
            entry("amd64", None, "sha256:b"),
        ];
        let amd: Platform = "linux/amd64".parse().expect("parses");
        assert_eq!(amd.pick("x", &entries).expect("found"), "sha256:b");
        let arm: Platform = "linux/arm64".parse().expect("parses");
        assert_eq!(arm.pick("x", &entries).expect("found"), "sha256:a");
        let riscv: Platform = "linux/riscv64".parse().expect("parses");
        let e = riscv.pick("app", &entries).expect_err("none");
        assert_eq!(
            e.to_string(),
            "app has no image for linux/riscv64 (it has linux/arm64/v8, linux/amd64)"
        );
    }
}
