//! How `faas` prints what faasd answers: tables for people, JSON or YAML
//! for programs. The YAML is written from the JSON value (strings quoted
//! as JSON strings, which YAML reads the same), so no YAML library is
//! needed to emit it.

use faasd::api::{FunctionInfo, NodeInfo, SecretInfo};
use serde::Serialize;
use serde_json::Value;

use crate::cli::Format;

/// `value` as JSON or YAML (tables are the caller's).
pub fn structured(value: &impl Serialize, format: Format) -> anyhow::Result<String> {
    let v = serde_json::to_value(value)?;
    Ok(match format {
        Format::Yaml => yaml(&v),
        Format::Json | Format::Table => format!("{}\n", serde_json::to_string_pretty(&v)?),
    })
}

pub fn functions_table(all: &[FunctionInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<15} {:>7} {:>9} {:>7} {:>5} {:>5}  IMAGE\n",
        "NAME", "IP", "VERSION", "REQUESTS", "FAILED", "WARM", "COLD"
    );
    for f in all {
        let image = f.image_id.strip_prefix("sha256:").unwrap_or(&f.image_id);
        out.push_str(&format!(
            "{:<24} {:<15} {:>7} {:>9} {:>7} {:>5} {:>5}  {}\n",
            f.name,
            f.ip,
            f.version,
            f.stats.requests,
            f.stats.failed,
            f.stats.warm_starts,
            f.stats.cold_starts,
            &image[..image.len().min(12)]
        ));
    }
    out
}

pub fn nodes_table(all: &[NodeInfo]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = format!("{:<24} {:<32} {:>9}\n", "NAME", "URL", "UP (S)");
    for n in all {
        out.push_str(&format!(
            "{:<24} {:<32} {:>9}\n",
            n.name,
            n.url,
            now.saturating_sub(n.since)
        ));
    }
    out
}

pub fn secrets_table(all: &[SecretInfo]) -> String {
    let mut out = format!("{:<32} {:>7}  USED BY\n", "NAME", "BYTES");
    for s in all {
        out.push_str(&format!(
            "{:<32} {:>7}  {}\n",
            s.name,
            s.bytes,
            if s.used_by.is_empty() {
                "-".to_string()
            } else {
                s.used_by.join(",")
            }
        ));
    }
    out
}

/// Block-style YAML of a JSON value.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn write_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        nested(v, indent, out);
    }
}

fn write_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // The first key on the dash's line, the rest under it.
                let mut first = String::new();
                write_map(m, indent + 2, &mut first);
                out.push(' ');
                out.push_str(first.trim_start());
            }
            _ => nested(v, indent, out),
        }
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection below.
fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(a, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // JSON's quoting is YAML's double-quoted style.
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_of_nested_values() {
        let v = json!({
            "name": "f",
            "options": {"warm": 2, "env": {"A B": "x\ny"}, "secrets": []},
            "versions": [{"version": 2, "current": true}, {"version": 1, "current": false}],
            "ip": null
        });
        assert_eq!(
            yaml(&v),
            "ip: null\nname: \"f\"\noptions:\n  env:\n    \"A B\": \"x\\ny\"\n  secrets: []\n  warm: 2\n\
             versions:\n  - current: true\n    version: 2\n  - current: false\n    version: 1\n"
        );
    }
}
