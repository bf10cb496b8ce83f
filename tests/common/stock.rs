//! Images as users have them, made from this machine's Debian packages
//! with their stock configuration files untouched, the way a Debian
//! bookworm image with those packages installed would hold them (the
//! program, its libraries, its /etc, users from /etc/passwd): nginx-light,
//! python3 (with python3-gunicorn and python3-uvicorn), busybox. Seconds
//! to make, nothing downloaded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use faasd::image::build::{Entry, ImageSpec, Layer, Layout, RunConfig};

/// Files and directories collected for one image, parents first.
#[derive(Default)]
pub struct Tree {
    entries: Vec<Entry>,
    seen: HashSet<String>,
}

impl Tree {
    fn parents(&mut self, rel: &str) {
        let mut parent = PathBuf::new();
        for part in Path::new(rel)
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            parent.push(part);
            let dir = parent.to_string_lossy().into_owned();
            if self.seen.insert(format!("{dir}/")) {
                self.entries.push(Entry::dir(&dir));
            }
        }
    }

    /// `path` of the host at the same path in the image (the bytes behind
    /// a symlink; an executable stays executable).
    pub fn file(&mut self, path: &str) -> &mut Self {
        let rel = path.trim_start_matches('/').to_string();
        if !self.seen.insert(rel.clone()) {
            return self;
        }
        self.parents(&rel);
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let exec = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false);
        self.entries.push(if exec {
            Entry::exe(&rel, data)
        } else {
            Entry::file(&rel, data)
        });
        self
    }

    /// A program and the libraries `ldd` names for it.
    pub fn program(&mut self, path: &str) -> &mut Self {
        self.file(path);
        let ldd = Command::new("ldd").arg(path).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let lib = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if lib.starts_with('/') {
                self.file(&lib);
            }
        }
        self
    }

    /// A directory of the host, whole (symlinks kept as symlinks), but
    /// for names in `skip`.
    pub fn tree(&mut self, dir: &str, skip: &[&str]) -> &mut Self {
        let rel = dir.trim_start_matches('/').to_string();
        if self.seen.insert(format!("{rel}/")) {
            self.parents(&rel);
            self.entries.push(Entry::dir(&rel));
        }
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(Result::ok)
            .collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let path = format!("{dir}/{name}");
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                let rel = path.trim_start_matches('/').to_string();
                if self.seen.insert(rel.clone()) {
                    self.entries.push(Entry::Symlink {
                        path: rel,
                        target: target.to_string_lossy().into_owned(),
                    });
                }
            } else if meta.is_dir() {
                self.tree(&path, skip);
            } else if meta.is_file() {
                self.file(&path);
            }
        }
        self
    }

    /// An empty directory.
    pub fn dir(&mut self, dir: &str) -> &mut Self {
        let rel = dir.trim_start_matches('/').to_string();
        if self.seen.insert(format!("{rel}/")) {
            self.parents(&rel);
            self.entries.push(Entry::dir(&rel));
        }
        self
    }

    /// A file with `data` at `path`.
    pub fn text(&mut self, path: &str, data: &str) -> &mut Self {
        let rel = path.trim_start_matches('/').to_string();
        if self.seen.insert(rel.clone()) {
            self.parents(&rel);
            self.entries.push(Entry::file(&rel, data));
        }
        self
    }

    /// A symlink at `path` to `target`.
    pub fn link(&mut self, path: &str, target: &str) -> &mut Self {
        let rel = path.trim_start_matches('/').to_string();
        if self.seen.insert(rel.clone()) {
            self.parents(&rel);
            self.entries.push(Entry::Symlink {
                path: rel,
                target: target.into(),
            });
        }
        self
    }

    /// Debian's base users and groups (root, nobody, www-data).
    pub fn users(&mut self) -> &mut Self {
        self.text(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .text(
            "/etc/group",
            "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n",
        )
        .dir("/tmp")
        .dir("/run")
    }

    pub fn image(&mut self, config: RunConfig, tag: &str) -> ImageSpec {
        ImageSpec {
            layers: vec![Layer {
                entries: std::mem::take(&mut self.entries),
                gzip: false,
            }],
            config,
            layout: Layout::Both,
            tag: tag.into(),
        }
    }
}

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: scripts/install-deps.sh installs {package}"
    );
}

/// Debian's nginx-light with its stock /etc/nginx, run as the official
/// image runs it (`nginx -g 'daemon off;'`, EXPOSE 80, as root: the
/// master, whose workers are www-data).
pub fn nginx() -> ImageSpec {
    need("/usr/sbin/nginx", "nginx-light");
    let mut t = Tree::default();
    t.program("/usr/sbin/nginx")
        .tree("/etc/nginx", &[])
        .tree("/usr/share/nginx", &[])
        .dir("/var/lib/nginx")
        .dir("/var/log/nginx")
        .tree("/var/www/html", &[])
        .users();
    for modules in ["/usr/lib/nginx", "/usr/share/nginx/modules-available"] {
        if Path::new(modules).is_dir() {
            t.tree(modules, &[]);
        }
    }
    t.image(
        RunConfig {
            entrypoint: vec![],
            cmd: vec!["/usr/sbin/nginx".into(), "-g".into(), "daemon off;".into()],
            exposed: vec!["80/tcp".into()],
            ..Default::default()
        },
        "nginx-light:bookworm",
    )
}

/// Debian's python3 with its standard library and, from its packages,
/// gunicorn and uvicorn (and what they import), files of the test's own
/// in `/app`.
pub fn python(app: &[(&str, &str)], config: RunConfig, tag: &str) -> ImageSpec {
    need("/usr/bin/python3.11", "python3-minimal");
    let mut t = Tree::default();
    t.program("/usr/bin/python3.11")
        .tree(
            "/usr/lib/python3.11",
            &[
                "config-3.11-x86_64-linux-gnu",
                "test",
                "idlelib",
                "tkinter",
                "turtledemo",
                "ensurepip",
                "distutils",
                "lib2to3",
                "pydoc_data",
            ],
        )
        .users();
    for lib in ["/usr/lib/python3.11/lib-dynload"] {
        // Extension modules' own libraries.
        for entry in std::fs::read_dir(lib).expect("lib-dynload").flatten() {
            let path = entry.path().to_string_lossy().into_owned();
            if path.ends_with(".so") {
                t.program(&path);
            }
        }
    }
    for package in dist_packages() {
        let dir = format!("/usr/lib/python3/dist-packages/{package}");
        if Path::new(&dir).is_dir() {
            t.tree(&dir, &["__pycache__"]);
        } else if Path::new(&format!("{dir}.py")).is_file() {
            t.file(&format!("{dir}.py"));
        }
    }
    t.link("/usr/bin/python3", "python3.11");
    for (path, text) in app {
        t.text(path, text);
    }
    t.image(config, tag)
}

/// The top-level packages of Debian's dist-packages that gunicorn and
/// uvicorn (their workers, loops and protocols) import, as this machine's
/// Python finds them.
fn dist_packages() -> Vec<String> {
    need(
        "/usr/lib/python3/dist-packages/gunicorn",
        "python3-gunicorn",
    );
    need("/usr/lib/python3/dist-packages/uvicorn", "python3-uvicorn");
    let script = "import sys, importlib\n\
for m in ['uvicorn', 'uvicorn.main', 'uvicorn.loops.auto', 'uvicorn.loops.asyncio', \
'uvicorn.protocols.http.auto', 'uvicorn.protocols.http.h11_impl', 'uvicorn.protocols.websockets.auto', \
'uvicorn.lifespan.on', 'uvicorn.lifespan.off', 'gunicorn.app.wsgiapp', 'gunicorn.workers.sync', \
'gunicorn.glogging', 'gunicorn.arbiter']:\n    importlib.import_module(m)\n\
tops = set()\n\
for m in list(sys.modules.values()):\n    f = getattr(m, '__file__', None) or ''\n    \
if '/dist-packages/' in f:\n        tops.add(f.split('/dist-packages/')[1].split('/')[0].removesuffix('.py'))\n\
print('\\n'.join(sorted(tops)))\n";
    let out = Command::new("/usr/bin/python3.11")
        .args(["-c", script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
