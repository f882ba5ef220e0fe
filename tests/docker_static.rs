//! The static binary (issue 15): `pipe` built with `+crt-static` on the gnu target runs inside a
//! busybox-only container of the test Docker Engine, where `pipe --wait` waits for the interface
//! that the host's `pipe` then attaches. The dynamic build, as a control, cannot run there.
//!
//! The static build is the documented one (README "Static binary") in the debug profile, with
//! the VM tier's target directory and settings (target/vm-build), so each build is reused by the
//! other; PIPE_STATIC_BIN names a ready binary instead. Needs the test Engine of
//! tests/docker/up.sh (netns dockerhost); fails with the reason when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pipe");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NETNS: &str = "dockerhost";
const IMAGE: &str = "local/busybox:latest";
const SOCKET: &str = "/var/run/docker.sock";
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{SOCKET}"))
        .args(args))
}

fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_string()
}

fn require_docker() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    assert!(
        uid,
        "this test starts containers and creates links: run it as root"
    );
    if let Ok(r) = std::env::var("PIPE_DOCKER_UNAVAILABLE")
        && !r.trim().is_empty()
    {
        panic!("Docker test Engine unavailable: {}", r.trim());
    }
    if let Ok(r) = std::fs::read_to_string(format!("{ROOT}/target/docker-unavailable")) {
        panic!(
            "Docker test Engine unavailable: {} (recorded by tests/docker/up.sh)",
            r.trim()
        );
    }
    let start = "start it with tests/docker/up.sh (./tests/run.sh does)";
    assert!(Path::new(SOCKET).exists(), "{SOCKET} is missing; {start}");
    assert!(
        Path::new(&format!("/var/run/netns/{NETNS}")).exists(),
        "netns {NETNS} is missing; {start}"
    );
    let o = docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    assert!(
        o.status.success(),
        "image {IMAGE} is missing; {start}: {}",
        text(&o.stderr)
    );
}

/// The static pipe: PIPE_STATIC_BIN, or built as the README says (debug profile).
fn static_pipe() -> PathBuf {
    if let Some(p) = std::env::var_os("PIPE_STATIC_BIN") {
        return p.into();
    }
    let dir = format!("{ROOT}/target/vm-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t = Instant::now();
    let o = run(Command::new(cargo)
        .current_dir(ROOT)
        .args(["build", "--bin", "pipe", "--target", TRIPLE])
        // The VM tier's settings, so that both share one build.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &dir)
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env("CARGO_TERM_COLOR", "never"));
    assert!(
        o.status.success(),
        "static build failed: {}",
        text(&o.stderr)
    );
    eprintln!("static build: {:.1} s", t.elapsed().as_secs_f64());
    PathBuf::from(format!("{dir}/{TRIPLE}/debug/pipe"))
}

/// An ELF without an interpreter or NEEDED libraries.
fn assert_static(p: &Path) {
    let o = run(Command::new("readelf").args(["-l", "-d"]).arg(p));
    assert!(
        o.status.success(),
        "readelf {}: {}",
        p.display(),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    assert!(
        !out.contains("INTERP") && !out.contains("(NEEDED)"),
        "{} is not static:\n{out}",
        p.display()
    );
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_micros()
        % 0x1000;
    format!(
        "{prefix}{:x}{:x}{t:03x}",
        std::process::id() % 0x10000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container, a bridge in dockerhost and a state directory, removed on drop.
struct Guard {
    containers: Vec<String>,
    bridge: String,
    state: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
            let _ = std::fs::remove_file(format!("/var/run/netns/{c}"));
        }
        let _ = run(Command::new("ip").args(["-n", NETNS, "link", "del", "dev", &self.bridge]));
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[test]
fn static_pipe_wait_runs_in_a_busybox_only_container() {
    require_docker();
    let pipe = static_pipe();
    assert_static(&pipe);
    let name = unique("pst");
    let control = format!("{name}d");
    let mut g = Guard {
        containers: vec![name.clone(), control.clone()],
        bridge: unique("brst"),
        state: std::env::temp_dir().join(format!("pipe-static-{name}")),
    };
    let mount = |p: &Path| format!("{}:/pipe:ro", p.display());

    // Control: the image has no C library, so the dynamic build cannot even start there.
    let o = docker(&[
        "run",
        "--name",
        &control,
        "--net=none",
        "-v",
        &mount(Path::new(BIN)),
        IMAGE,
        "/pipe",
        "--version",
    ]);
    assert!(
        !o.status.success(),
        "the dynamic pipe ran in the busybox image: the image is not busybox-only"
    );
    g.containers.retain(|c| c != &control);
    let _ = docker(&["rm", "-f", &control]);

    // The static one waits inside the container for eth1...
    docker_ok(&[
        "run",
        "-d",
        "--net=none",
        "--name",
        &name,
        "-v",
        &mount(&pipe),
        IMAGE,
        "/pipe",
        "--wait",
        "-i",
        "eth1",
        "--timeout",
        "60",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let state = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(
        state,
        "running 0",
        "pipe --wait did not wait: {}",
        text(&docker(&["logs", &name]).stderr)
    );

    // ...until the host attaches it.
    let t = Instant::now();
    let o = run(Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{NETNS}"))
        .args([BIN, &g.bridge, &name, "10.77.0.2/24"])
        .env("PIPE_STATE_DIR", &g.state)
        .env_remove("DOCKER_HOST"));
    assert!(
        o.status.success(),
        "attach failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let code = docker_ok(&["wait", &name]);
    let logs = docker(&["logs", &name]);
    let out = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
    assert_eq!(
        code, "0",
        "pipe --wait in the container exited {code}: {out}"
    );
    assert!(out.contains("eth1 ready with 10.77.0.2"), "{out}");
    eprintln!(
        "attach to --wait exit: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
