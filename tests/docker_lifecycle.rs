//! Lifecycle against real Docker Engines: `pipe watch`, detach and gc of Docker containers.
//!
//! Each test starts a private dockerd of its own, inside a network namespace
//! of its own, with its own --data-root, --exec-root, socket and pidfile: the
//! dockerd-restart test stops and starts its daemon, which must never happen
//! to the shared test Engine (tests/docker/up.sh), and no test here depends on
//! another. `pipe watch` runs in the daemon's namespace (where the host ends
//! of the containers' interfaces live) with DOCKER_HOST pointing at it.
//!
//! When dockerd is missing or does not come up, every test here FAILS with
//! the reason (never passes silently). ./tests/run.sh installs docker.io.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "local/busybox:latest";

/// A private Docker Engine in its own network namespace.
struct Daemon {
    ns: Ns,
    root: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn sock(&self) -> String {
        format!("{}/docker.sock", self.root.display())
    }

    fn host(&self) -> String {
        format!("unix://{}", self.sock())
    }

    fn start() -> Daemon {
        require_root();
        assert!(
            Path::new("/usr/sbin/dockerd").exists() || which("dockerd"),
            "dockerd is not installed: apt-get install docker.io (./tests/run.sh does)"
        );
        let ns = Ns::new("wd");
        // Short paths: containerd's socket lives under the exec root (108-byte limit).
        let root = PathBuf::from(format!("/run/pw-{}", ns.name));
        std::fs::create_dir_all(&root).unwrap();
        let mut d = Daemon {
            ns,
            root,
            child: None,
        };
        d.spawn();
        d.import_image();
        d
    }

    /// Start dockerd (again) with the same directories.
    fn spawn(&mut self) {
        let r = self.root.display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{r}/dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path()))
            .args([
                "dockerd",
                "--host",
                &self.host(),
                "--data-root",
                &format!("/var/lib/pw-{}", self.ns.name),
                "--exec-root",
                &format!("{r}/x"),
                "--pidfile",
                &format!("{r}/docker.pid"),
                "--bridge=none",
                "--iptables=false",
                "--shutdown-timeout",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let o = self.docker_out(&["version", "--format", "{{.Server.Version}}"]);
            if o.status.success() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(format!("{r}/dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "private dockerd did not answer within 30 s: {}; log tail: {tail:?}",
                    stderr(&o).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop dockerd (SIGTERM, as systemd would) and wait until it has exited.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn import_image(&self) {
        let dir = self.root.join("img");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("a static /bin/busybox (apt-get install busybox-static)");
        for a in ["sh", "sleep", "ip"] {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        let tar = self.root.join("busybox.tar");
        must(Command::new("tar").args([
            "-C",
            &dir.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ]));
        self.docker(&["import", &tar.display().to_string(), IMAGE]);
    }

    fn docker_out(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args))
    }

    fn docker(&self, args: &[&str]) -> String {
        let o = self.docker_out(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn pid_of(&self, name: &str) -> u32 {
        self.docker(&["inspect", "--format", "{{.State.Pid}}", name])
            .trim()
            .parse()
            .unwrap()
    }

    fn state_dir(&self) -> String {
        format!("{}/state", self.root.display())
    }

    /// `pipe ARGS` in the daemon's namespace, against this daemon.
    fn pipe(&self, args: &[&str]) -> String {
        let o = self.ns.pipe_env(
            args,
            &[
                ("DOCKER_HOST", &self.host()),
                ("PIPE_STATE_DIR", &self.state_dir()),
            ],
        );
        pipe_ok(args, &o)
    }

    fn watch(&self, file: &str) -> Watch {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path()))
            .args([BIN, "watch", "--file", file])
            .env("DOCKER_HOST", self.host())
            .env("PIPE_STATE_DIR", self.state_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Watch { child, rx }
    }

    /// Run a container on a network with a unique name.
    fn run_on(&self, net: &str) -> String {
        let name = unique("wc");
        self.docker(&[
            "run", "-d", "--net", net, "--name", &name, IMAGE, "sleep", "1000",
        ]);
        name
    }

    /// Run a container (`--net=none`) with a unique name.
    fn run(&self, extra: &[&str]) -> String {
        let name = unique("wc");
        let mut args = vec!["run", "-d", "--net=none", "--name", &name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "1000"]);
        self.docker(&args);
        name
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker_out(&["ps", "-aq"]);
            let ids: Vec<String> = stdout(&ids).split_whitespace().map(String::from).collect();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids.iter().map(String::as_str));
                let _ = self.docker_out(&a);
            }
        }
        self.stop();
        // Links pipe made for this daemon's containers.
        if let Ok(rd) = std::fs::read_dir(format!("{}/netns", self.state_dir())) {
            for e in rd.flatten() {
                let _ = Command::new("ip")
                    .args(["netns", "del"])
                    .arg(e.file_name())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(format!("/var/lib/pw-{}", self.ns.name));
    }
}

fn which(p: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A running `pipe watch`, killed on drop; its output lines arrive on `rx`.
struct Watch {
    child: Child,
    rx: Receiver<String>,
}

impl Watch {
    /// The next stdout line containing all of `needles` (stderr lines are logged and skipped).
    fn line(&self, needles: &[&str], within: Duration) -> String {
        let t = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = within.checked_sub(t.elapsed()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    eprintln!("watch: {l}");
                    if !l.starts_with("stderr: ") && needles.iter().all(|n| l.contains(n)) {
                        return l;
                    }
                    seen.push(l);
                }
                Err(_) => break,
            }
        }
        panic!("no watch line with {needles:?} within {within:?}; saw {seen:?}");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ms figure of "... (12.3 ms after the start event)".
fn ms_after_start(line: &str) -> f64 {
    let i = line.find(" ms after the start event").expect(line);
    let start = line[..i].rfind('(').unwrap() + 1;
    line[start..i].parse().unwrap()
}

/// eth1 of a container: (MAC, IPv4 addresses).
fn eth1_of(pid: u32) -> (String, Vec<String>) {
    eth1_of_dev(pid, "eth1")
}

fn eth1_of_dev(pid: u32, dev: &str) -> (String, Vec<String>) {
    let o = must(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ip", "-j", "addr", "show", "dev", dev]),
    );
    let j: serde_json::Value = serde_json::from_str(&o).unwrap();
    let mac = j[0]["address"].as_str().unwrap().to_string();
    let addrs = j[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    (mac, addrs)
}

fn ports(ns: &Ns, br: &str) -> Vec<String> {
    link_names(&ns.ipj(&["link", "show", "master", br]))
}

fn empty_file(d: &Daemon) -> String {
    let f = format!("{}/attachments.toml", d.root.display());
    std::fs::write(&f, "# none\n").unwrap();
    f
}

#[test]
fn watch_reapplies_after_restart_and_stop_start() {
    let d = Daemon::start();
    let c = d.run(&[]);
    let br = unique("br");
    let out = d.pipe(&[&br, &c, "10.95.0.2/24@10.95.0.1", "--persist"]);
    let (mac, addrs) = eth1_of(d.pid_of(&c));
    assert!(out.contains(&mac), "{out}");
    assert_eq!(addrs, ["10.95.0.2/24"]);

    let w = d.watch(&empty_file(&d));
    // Catch-up at start: already attached, nothing changes.
    w.line(&[&c, "already attached"], Duration::from_secs(10));

    let mut times = Vec::new();
    for how in ["restart", "stop+start"] {
        if how == "restart" {
            d.docker(&["restart", "-t", "0", &c]);
        } else {
            d.docker(&["stop", "-t", "0", &c]);
            d.docker(&["start", &c]);
        }
        let l = w.line(&[&c, "after the start event"], Duration::from_secs(10));
        let ms = ms_after_start(&l);
        eprintln!("{how}: interface back {ms} ms after the start event");
        times.push(ms);
        let (mac2, addrs2) = eth1_of(d.pid_of(&c));
        assert_eq!(mac2, mac, "MAC changed across {how}");
        assert_eq!(addrs2, ["10.95.0.2/24"], "after {how}");
        // The old namespace's host end is gone: one port on the bridge.
        let t = Instant::now();
        while ports(&d.ns, &br).len() != 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(ports(&d.ns, &br).len(), 1, "{:?}", ports(&d.ns, &br));
    }
    for ms in &times {
        assert!(
            *ms < 1000.0,
            "re-attach took {ms} ms after the start event: {times:?}"
        );
    }
}

#[test]
fn watch_follows_the_attachments_file_and_catches_up() {
    let d = Daemon::start();
    let a = d.run(&[]);
    let b = unique("wc");
    let br = unique("br");
    let file = format!("{}/attachments.toml", d.root.display());
    std::fs::write(
        &file,
        format!(
            "[[attach]]\ncontainer = \"{a}\"\nhost = \"{br}\"\naddr = \"10.96.0.2/24\"\nmac = \"U:{a}\"\n\n\
             [[attach]]\ncontainer = \"{b}\"\nhost = \"{br}\"\naddr = \"10.96.0.3/24\"\nifname = \"eth2\"\n"
        ),
    )
    .unwrap();
    // --once: catch up and exit.
    let once = d.pipe(&["watch", "--once", "--file", &file]);
    assert!(once.contains(&a) && once.contains("10.96.0.2/24"), "{once}");
    let w = d.watch(&file);
    w.line(&[&a, "already attached"], Duration::from_secs(10));
    // A container that starts later gets its entry from the event.
    d.docker(&[
        "run",
        "-d",
        "--net=none",
        "--name",
        &b,
        IMAGE,
        "sleep",
        "1000",
    ]);
    let l = w.line(
        &[&b, "eth2", "after the start event"],
        Duration::from_secs(10),
    );
    eprintln!("new container: {l}");
    let o = must(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", d.pid_of(&b)))
            .args(["ip", "-br", "addr", "show", "dev", "eth2"]),
    );
    assert!(o.contains("10.96.0.3/24"), "{o}");
    // No MAC in the file: the one it got first comes back after a restart.
    let (mac_b, _) = eth1_of_dev(d.pid_of(&b), "eth2");
    d.docker(&["restart", "-t", "0", &b]);
    w.line(
        &[&b, "eth2", "after the start event"],
        Duration::from_secs(10),
    );
    assert_eq!(eth1_of_dev(d.pid_of(&b), "eth2").0, mac_b);
    // U:seed MAC from the file.
    let (mac, _) = eth1_of(d.pid_of(&a));
    let probe = Container::new();
    let want = stdout(
        &d.ns
            .pipe(&["--dry-run", &br, &probe.pid_s(), "0/0", &format!("U:{a}")]),
    );
    assert!(want.contains(&mac), "{mac} not in {want}");
    // A broken file is refused at start, naming the place.
    std::fs::write(&file, "[[attach]]\ncontainer = 1\n").unwrap();
    let o = d.ns.pipe_env(
        &["watch", "--file", &file],
        &[
            ("DOCKER_HOST", &d.host()),
            ("PIPE_STATE_DIR", &d.state_dir()),
        ],
    );
    assert_fails(&o, 2, "line 2");
}

#[test]
fn watch_catches_up_after_dockerd_restarts() {
    let mut d = Daemon::start();
    let c = d.run(&["--restart=always"]);
    let br = unique("br");
    d.pipe(&[&br, &c, "10.97.0.2/24", "--persist"]);
    let (mac, _) = eth1_of(d.pid_of(&c));
    let w = d.watch(&empty_file(&d));
    w.line(&[&c, "already attached"], Duration::from_secs(10));

    // The daemon goes away (its containers stop with it) and comes back,
    // restarting the container before or after watch has reconnected.
    d.stop();
    let t = Instant::now();
    d.spawn();
    let l = w.line(&[&c, "eth1"], Duration::from_secs(20));
    eprintln!(
        "after dockerd restart: {l} ({:?} after dockerd was started again)",
        t.elapsed()
    );
    let (mac2, addrs) = eth1_of(d.pid_of(&c));
    assert_eq!(mac2, mac);
    assert_eq!(addrs, ["10.97.0.2/24"]);
}

#[test]
fn gc_cleans_up_after_docker_kill_without_watch() {
    let d = Daemon::start();
    let c = d.run(&[]);
    let br = unique("br");
    let before = d.ns.links();
    d.pipe(&[&br, &c, "10.98.0.2/24"]);
    assert_eq!(ports(&d.ns, &br).len(), 1);
    // Killed with nobody watching: pipe's /var/run/netns link keeps the dead
    // namespace, and so the veth, alive until gc.
    d.docker(&["kill", &c]);
    let dry = d.pipe(&["gc", "--dry-run"]);
    assert!(
        dry.contains(&format!("would remove /var/run/netns/{c}")),
        "{dry}"
    );
    let out = d.pipe(&["gc"]);
    assert!(out.contains("removed record"), "{out}");
    assert!(out.contains(&format!("removed bridge {br}")), "{out}");
    assert!(!Path::new(&format!("/var/run/netns/{c}")).exists());
    assert_eq!(d.ns.links(), before);
    assert_eq!(d.pipe(&["gc"]).trim(), "nothing to clean up");
}

#[test]
fn detach_restores_a_docker_containers_default_route() {
    let d = Daemon::start();
    // A user-defined network gives the container eth0 and a default route, as usual.
    let net = unique("wn");
    d.docker(&[
        "network",
        "create",
        "--subnet",
        "10.99.7.0/24",
        "--gateway",
        "10.99.7.1",
        &net,
    ]);
    let c = d.run_on(&net);
    let pid = d.pid_of(&c);
    let routes = |pid: u32| {
        must(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{pid}/ns/net"))
                .args(["ip", "-j", "route", "show"]),
        )
    };
    let before_routes = routes(pid);
    assert!(before_routes.contains("10.99.7.1"), "{before_routes}");
    let before_links = d.ns.links();
    let br = unique("br");
    d.pipe(&[&br, &c, "10.99.8.2/24@10.99.8.1"]);
    assert!(routes(pid).contains("10.99.8.1"), "{}", routes(pid));
    let out = d.pipe(&["detach", &c]);
    assert!(out.contains("restored the previous default route"), "{out}");
    assert_eq!(routes(pid), before_routes);
    assert_eq!(d.ns.links(), before_links);
    assert!(!Path::new(&format!("/var/run/netns/{c}")).exists());
    d.docker(&["rm", "-f", &c]);
    d.docker(&["network", "rm", &net]);
}

#[test]
fn watch_applies_attachments_declared_in_labels_and_the_file_wins() {
    let d = Daemon::start();
    let br = unique("br");
    let file = empty_file(&d);
    let w = d.watch(&file);
    let c = d.run(&[
        "--label",
        &format!("pipe.eth1={br} 10.97.0.2/24"),
        "--label",
        &format!("pipe.eth2={br} 10.97.1.2/24 --mtu 1400"),
        "--label",
        &format!("pipe.eth3={br}"),
        "--label",
        "com.example.other=1",
    ]);
    w.line(
        &[&c, "eth1", "after the start event"],
        Duration::from_secs(10),
    );
    w.line(
        &[&c, "eth2", "after the start event"],
        Duration::from_secs(10),
    );
    let pid = d.pid_of(&c);
    assert_eq!(eth1_of(pid).1, ["10.97.0.2/24"]);
    assert_eq!(eth1_of_dev(pid, "eth2").1, ["10.97.1.2/24"]);
    let j: serde_json::Value = serde_json::from_str(&must(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ip", "-j", "link", "show", "dev", "eth2"]),
    ))
    .unwrap();
    assert_eq!(j[0]["mtu"], 1400);
    // The bad label (pipe.eth3: no ADDR) is skipped; the good ones are applied.
    let l = list_json(&d);
    assert_eq!(l.len(), 2, "{l:?}");

    // The file wins over a label for the same interface (label < --persist < file).
    std::fs::write(
        &file,
        format!("[[attach]]\ncontainer = \"{c}\"\nhost = \"{br}\"\naddr = \"10.97.0.9/24\"\n"),
    )
    .unwrap();
    d.docker(&["restart", "-t", "0", &c]);
    w.line(&[&c, "eth1", "10.97.0.9/24"], Duration::from_secs(10));
    w.line(
        &[&c, "eth2", "after the start event"],
        Duration::from_secs(10),
    );
    let pid = d.pid_of(&c);
    assert_eq!(eth1_of(pid).1, ["10.97.0.9/24"]);
    assert_eq!(eth1_of_dev(pid, "eth2").1, ["10.97.1.2/24"]);
    // --once catches up from labels too (already attached: no change).
    let once = d.pipe(&["watch", "--once", "--file", &file]);
    assert!(
        once.contains("already attached") && once.contains("eth2"),
        "{once}"
    );
}

fn list_json(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.pipe(&["list", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Debian's docker-compose (1.29, the Engine API through docker-py): the network
/// is declared next to the service, and `pipe watch` applies it.
#[test]
fn docker_compose_labels_are_applied_by_watch() {
    assert!(
        which("docker-compose"),
        "docker-compose is not installed: apt-get install docker-compose (./tests/run.sh does)"
    );
    let d = Daemon::start();
    let br = unique("br");
    let file = empty_file(&d);
    let w = d.watch(&file);
    let dir = d.root.join("compose");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"3\"\nservices:\n  web:\n    image: {IMAGE}\n    command: sleep 1000\n    network_mode: none\n    labels:\n      pipe.eth1: \"{br} 10.98.0.2/24\"\n"
        ),
    )
    .unwrap();
    let project = unique("cp");
    let compose = |args: &[&str]| {
        must(
            Command::new("docker-compose")
                .current_dir(&dir)
                .env("DOCKER_HOST", d.host())
                .args(["-p", &project])
                .args(args),
        )
    };
    compose(&["up", "-d"]);
    let name = format!("{project}_web_1");
    w.line(
        &[&name, "eth1", "after the start event"],
        Duration::from_secs(20),
    );
    assert_eq!(eth1_of(d.pid_of(&name)).1, ["10.98.0.2/24"]);
    compose(&["down", "-t", "0"]);
}

/// `-vv` logs what pipe asked the Engine and the fields it used, not the whole inspect JSON.
#[test]
fn verbose_logs_the_question_not_the_whole_inspect() {
    let d = Daemon::start();
    let c = d.run(&[]);
    let br = unique("br");
    let o = d.ns.pipe_env(
        &["-vv", "--dry-run", &br, &c, "10.99.0.2/24"],
        &[
            ("DOCKER_HOST", &d.host()),
            ("PIPE_STATE_DIR", &d.state_dir()),
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("inspect container {c} (fields used:")),
        "{err}"
    );
    assert!(err.contains("with PID"), "{err}");
    assert!(
        !err.contains("\"GraphDriver\"") && !err.contains("Decoded into string"),
        "the inspect JSON is dumped at -vv: {err}"
    );
    // -vvv (trace) still has the raw exchange for whoever needs it.
    let o = d.ns.pipe_env(
        &["-vvv", "--dry-run", &br, &c, "10.99.0.2/24"],
        &[
            ("DOCKER_HOST", &d.host()),
            ("PIPE_STATE_DIR", &d.state_dir()),
        ],
    );
    assert!(stderr(&o).contains("GraphDriver"), "{}", stderr(&o));
}
