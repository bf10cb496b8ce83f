//! Resolving the image's `User` (`name`, `uid`, `name:group`, `uid:gid`)
//! to numeric ids with the image's own `/etc/passwd` and `/etc/group`.

use std::path::Path;

use super::fsops::Root;
use super::ImageError;

/// Resolves `spec` against the unpacked root filesystem.
pub fn resolve(spec: &str, root: &Root) -> Result<(u32, u32), ImageError> {
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let read = |p: &str| {
        root.read_file(Path::new(p))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    resolve_with(spec, &read("etc/passwd"), &read("etc/group"))
}

/// Pure part of [`resolve`]: the file contents are given.
pub fn resolve_with(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), ImageError> {
    let unknown = || ImageError::UnknownUser(spec.to_string());
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(passwd, |f| f.get(2) == Some(&user)).and_then(|f| num(f.get(3))),
        ),
        Err(_) => {
            let fields = lookup(passwd, |f| f.first() == Some(&user)).ok_or_else(unknown)?;
            (num(fields.get(2)).ok_or_else(unknown)?, num(fields.get(3)))
        }
    };
    let gid = match grp {
        None => primary_gid.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(group, |f| f.first() == Some(&g))
                .and_then(|f| num(f.get(2)))
                .ok_or_else(unknown)?,
        },
    };
    Ok((uid, gid))
}

fn lookup(file: &str, pred: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

fn num(field: Option<&&str>) -> Option<u32> {
    field.and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn resolves_users() {
        let r = |s| resolve_with(s, PASSWD, GROUP).ok();
        assert_eq!(r("0"), Some((0, 0)));
        assert_eq!(r("app"), Some((1000, 1001)));
        assert_eq!(r("1000"), Some((1000, 1001)));
        assert_eq!(r("4242"), Some((4242, 4242)));
        assert_eq!(r("app:staff"), Some((1000, 50)));
        assert_eq!(r("65534:65534"), Some((65534, 65534)));
        assert_eq!(r("ghost"), None);
        assert_eq!(r("app:ghosts"), None);
    }
}
