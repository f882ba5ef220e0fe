//! The Debian package (issue 15): `contrib/deb/build.sh` packs the test build of `pipe`, dpkg
//! installs it into a throwaway root (`dpkg --root`, its own package database; the machine's
//! own root and dpkg database are never touched), every file is checked against the
//! repository, and a purge leaves the root as it was.
//!
//! Needs root (dpkg chowns to root) and dpkg-deb: the Debian test machines have both.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pipe");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

fn must(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "pipe-deb-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every path under `root` (relative, with "/" for directories and "-> target" for links).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if m.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, format!("{:o}", m.permissions().mode() & 0o7777));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn gunzip(p: &Path) -> Vec<u8> {
    let o = run(Command::new("gzip").arg("-dc").arg(p));
    assert!(o.status.success(), "gzip -dc {}", p.display());
    o.stdout
}

fn require_root() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "this test installs a package with dpkg: run it as root"
    );
}

#[test]
fn deb_installs_every_file_into_a_throwaway_root_and_purges_clean() {
    require_root();
    let tmp = TempDir::new();
    let out = tmp.0.join("out");
    let deb = must(
        Command::new(format!("{ROOT}/contrib/deb/build.sh"))
            .args(["--fast", "--binary", BIN, "--out"])
            .arg(&out),
    );
    let deb = PathBuf::from(deb.trim());
    assert!(deb.is_file(), "build.sh printed {deb:?}");

    // The control file: no dependency beyond the C runtime, iproute2 recommended.
    let field = |f: &str| must(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(f));
    assert_eq!(field("Package").trim(), "pipe");
    let depends = field("Depends");
    for d in depends.trim().split(", ") {
        let name = d.split_whitespace().next().unwrap_or_default();
        assert!(
            ["libc6", "libgcc-s1"].contains(&name),
            "Depends: {depends} (only the C runtime is allowed)"
        );
    }
    assert!(depends.contains("libc6 (>= 2."), "Depends: {depends}");
    assert_eq!(field("Recommends").trim(), "iproute2");

    // A throwaway root with an empty package database.
    let root = tmp.0.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let before = tree(&root);
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .arg("--log=/dev/null")
            // Maintainer scripts run on this machine with DPKG_ROOT set (they then do nothing)
            // instead of in a chroot without a shell; libc6 is not in the empty database.
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--force-not-root",
            ])
            .args(args);
        c
    };
    must(dpkg(&["-i", deb.to_str().unwrap()]).env("PATH", std::env::var("PATH").unwrap()));

    // Every file, exactly.
    let installed = tree(&root);
    let new: Vec<(&String, &String)> = installed
        .iter()
        .filter(|(p, _)| !before.contains_key(*p) && !p.starts_with("var/lib/dpkg"))
        .collect();
    let mut man: Vec<String> = std::fs::read_dir(format!("{ROOT}/man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    man.sort();
    assert!(man.len() >= 9, "man pages: {man:?}");
    let mut want: BTreeMap<String, String> = [
        ("usr/bin/pipe", "755"),
        ("usr/lib/cni/pipe", "-> ../../bin/pipe"),
        ("usr/share/bash-completion/completions/pipe", "644"),
        ("usr/share/zsh/vendor-completions/_pipe", "644"),
        ("usr/share/fish/vendor_completions.d/pipe.fish", "644"),
        ("lib/systemd/system/pipe-watch.service", "644"),
        ("lib/systemd/system/pipe-gc.service", "644"),
        ("lib/systemd/system/pipe-gc.timer", "644"),
        ("etc/pipe/attachments.toml", "644"),
        ("usr/share/doc/pipe/README.md.gz", "644"),
        ("usr/share/doc/pipe/copyright", "644"),
        ("usr/share/doc/pipe/changelog.Debian.gz", "644"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    for m in &man {
        want.insert(format!("usr/share/man/man1/{m}.gz"), "644".into());
    }
    let got_files: BTreeMap<String, String> = new
        .iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    assert_eq!(got_files, want, "the package's files and modes");
    for (p, _) in &new {
        let m = std::fs::metadata(root.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{p} is not root:root");
    }

    // Contents: the binary, the generated pages and scripts, the unit, the conffile.
    let same = |installed: &str, repo: &str| {
        assert_eq!(
            std::fs::read(root.join(installed)).unwrap(),
            std::fs::read(format!("{ROOT}/{repo}")).unwrap(),
            "{installed} differs from {repo}"
        );
    };
    // The binary, stripped of debug information.
    let stripped = tmp.0.join("pipe.stripped");
    must(
        Command::new("strip")
            .args(["--strip-debug", "-o"])
            .arg(&stripped)
            .arg(BIN),
    );
    assert_eq!(
        std::fs::read(root.join("usr/bin/pipe")).unwrap(),
        std::fs::read(&stripped).unwrap(),
        "usr/bin/pipe is not the built binary"
    );
    same(
        "usr/share/bash-completion/completions/pipe",
        "completions/pipe.bash",
    );
    same(
        "usr/share/zsh/vendor-completions/_pipe",
        "completions/_pipe",
    );
    same(
        "usr/share/fish/vendor_completions.d/pipe.fish",
        "completions/pipe.fish",
    );
    same(
        "lib/systemd/system/pipe-watch.service",
        "contrib/pipe-watch.service",
    );
    same(
        "lib/systemd/system/pipe-gc.service",
        "contrib/pipe-gc.service",
    );
    same("lib/systemd/system/pipe-gc.timer", "contrib/pipe-gc.timer");
    same("etc/pipe/attachments.toml", "contrib/attachments.toml");
    for m in &man {
        assert_eq!(
            gunzip(&root.join(format!("usr/share/man/man1/{m}.gz"))),
            std::fs::read(format!("{ROOT}/man/{m}")).unwrap(),
            "{m}"
        );
    }
    for verb in ["detach", "gc", "watch", "apply", "link", "route"] {
        assert!(man.contains(&format!("pipe-{verb}.1")), "no pipe-{verb}(1)");
    }
    let cni = std::fs::canonicalize(root.join("usr/lib/cni/pipe")).unwrap();
    assert_eq!(
        cni,
        std::fs::canonicalize(root.join("usr/bin/pipe")).unwrap()
    );
    // The installed binary runs, and the unit starts it from where the package put it.
    let v = must(Command::new(root.join("usr/bin/pipe")).arg("--version"));
    assert!(v.starts_with("pipe "), "{v}");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/pipe-watch.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/pipe watch "), "{unit}");
    // The example attachments file is valid and attaches nothing.
    let o = run(Command::new(BIN)
        .args(["apply", "--dry-run"])
        .arg(root.join("etc/pipe/attachments.toml")));
    assert!(
        o.status.success(),
        "pipe apply --dry-run of the example: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // dpkg knows it all: the file list and the conffile.
    let listed = must(&mut dpkg(&["-L", "pipe"]));
    for p in want.keys() {
        assert!(
            listed.lines().any(|l| l == format!("/{p}")),
            "dpkg -L lacks /{p}: {listed}"
        );
    }
    let conf = must(
        Command::new("dpkg-query")
            .arg(format!("--root={}", root.display()))
            .args(["-W", "-f=${Conffiles}", "pipe"]),
    );
    assert!(conf.contains("/etc/pipe/attachments.toml "), "{conf}");

    // Purge: nothing of the package is left, not even its directories.
    must(&mut dpkg(&["--purge", "pipe"]));
    let after: BTreeMap<String, String> = tree(&root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("var/lib/dpkg/"))
        .collect();
    let before: BTreeMap<String, String> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with("var/lib/dpkg/"))
        .collect();
    assert_eq!(after, before, "purge left something behind");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: pipe"), "{status}");
}
