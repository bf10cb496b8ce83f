//! Wire types of the control API, shared by `faas` and `faasd`, and the
//! query-string encoding of deploy options.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::units::parse_size;

/// Default per-function memory limit.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Default per-connection handler timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default number of pre-started containers (used once the pool lands).
pub const DEFAULT_WARM: u32 = 2;

/// Settings chosen at deploy time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOptions {
    pub warm: u32,
    pub env: BTreeMap<String, String>,
    pub memory: u64,
    pub timeout_secs: u64,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            warm: DEFAULT_WARM,
            env: BTreeMap::new(),
            memory: DEFAULT_MEMORY,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

impl DeployOptions {
    /// Encodes the options as a URL query string (without the `?`).
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("warm", &self.warm.to_string());
        q.append_pair("memory", &self.memory.to_string());
        q.append_pair("timeout", &self.timeout_secs.to_string());
        for (k, v) in &self.env {
            q.append_pair("env", &format!("{k}={v}"));
        }
        q.finish()
    }

    /// Decodes a query string; unknown keys and malformed values are errors
    /// so a typo never silently deploys with defaults.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut opts = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "warm" => {
                    opts.warm = value
                        .parse()
                        .map_err(|_| format!("invalid warm count {value:?}"))?
                }
                "memory" => opts.memory = parse_size(&value)?,
                "timeout" => {
                    opts.timeout_secs = value
                        .parse()
                        .map_err(|_| format!("invalid timeout {value:?} (seconds)"))?
                }
                "env" => {
                    let (k, v) = parse_env(&value)?;
                    opts.env.insert(k, v);
                }
                other => return Err(format!("unknown deploy option {other:?}")),
            }
        }
        opts.validate()?;
        Ok(opts)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.memory < 4 << 20 {
            return Err(format!("memory limit {} is below 4M", self.memory));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 3600 {
            return Err(format!(
                "timeout {}s must be within 1..=3600",
                self.timeout_secs
            ));
        }
        if self.warm > 256 {
            return Err(format!("warm count {} is above 256", self.warm));
        }
        Ok(())
    }
}

/// Splits `KEY=VALUE`; the key must be a plain environment variable name.
pub fn parse_env(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("environment entry {kv:?} is not KEY=VALUE"))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("invalid environment variable name {k:?}"));
    }
    if v.contains('\0') {
        return Err(format!("environment value for {k} contains a NUL byte"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Request counters of one function since faasd started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStats {
    pub requests: u64,
    pub handed_over: u64,
    pub failed: u64,
    pub cold_starts: u64,
    pub warm_starts: u64,
    pub inflight: u64,
}

/// What `faas inspect` and `faas list` show of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub ip: Ipv4Addr,
    pub image_id: String,
    pub version: u64,
    pub deployed_at: u64,
    pub options: DeployOptions,
    pub command: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stats: FunctionStats,
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
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
            ..Default::default()
        };
        opts.env.insert("GREETING".into(), "a=b & c".into());
        assert_eq!(DeployOptions::from_query(&opts.to_query()), Ok(opts));
    }

    #[test]
    fn query_refuses_nonsense() {
        assert!(DeployOptions::from_query("warm=-1").is_err());
        assert!(DeployOptions::from_query("memory=1").is_err());
        assert!(DeployOptions::from_query("timeout=0").is_err());
        assert!(DeployOptions::from_query("colour=blue").is_err());
        assert!(DeployOptions::from_query("env=NOEQUALS").is_err());
        assert!(DeployOptions::from_query("env=1BAD%3Dx").is_err());
        assert_eq!(DeployOptions::from_query(""), Ok(DeployOptions::default()));
        assert_eq!(
            DeployOptions::from_query("memory=64M").map(|o| o.memory),
            Ok(64 << 20)
        );
    }
}
