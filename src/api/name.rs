//! Function names: DNS-label-like, because they become container ids, file
//! names and URL path segments.

use std::fmt;

use serde::{Deserialize, Serialize};

const MAX_LEN: usize = 63;

/// A validated function name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("function name is empty")]
    Empty,
    #[error("function name is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("function name {0:?} may only contain lower-case letters, digits and '-'")]
    BadCharacter(String),
    #[error("function name {0:?} must start and end with a letter or digit")]
    BadEdge(String),
}

impl FunctionName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(NameError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(NameError::BadCharacter(s.to_string()));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::BadEdge(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for FunctionName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<FunctionName> for String {
    fn from(n: FunctionName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "hello", "hello-world-2", "0abc", &"x".repeat(63)] {
            assert!(FunctionName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(FunctionName::parse(""), Err(NameError::Empty));
        assert_eq!(
            FunctionName::parse(&"x".repeat(64)),
            Err(NameError::TooLong)
        );
        for bad in ["Hello", "a_b", "a.b", "../x", "a/b", "a b", "é"] {
            assert!(
                matches!(FunctionName::parse(bad), Err(NameError::BadCharacter(_))),
                "{bad}"
            );
        }
        for bad in ["-a", "a-"] {
            assert!(
                matches!(FunctionName::parse(bad), Err(NameError::BadEdge(_))),
                "{bad}"
            );
        }
    }
}
