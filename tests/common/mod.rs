//! Test environment for real-kernel tests: uniquely named namespaces and
//! stand-in containers, each removed by a `Drop` guard even when a test fails.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_pipe");

/// Fail loudly (never pass silently) when the test cannot run here.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap().to_string())
        })
        .unwrap();
    assert_eq!(
        uid, "0",
        "this test creates namespaces and links: run it as root"
    );
}

/// A short unique name: `prefix` + pid-derived + counter, at most 15 bytes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id() % 100_000;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1000;
    let s = format!("{prefix}{pid:x}{n:x}{t:x}");
    assert!(s.len() <= 15, "{s} too long");
    s
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(prefix: &str) -> Ns {
        require_root();
        let name = unique(prefix);
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS`, must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        must(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -j -n NAME ARGS` parsed.
    pub fn ipj(&self, args: &[&str]) -> serde_json::Value {
        let s = must(Command::new("ip").args(["-j", "-n", &self.name]).args(args));
        serde_json::from_str(if s.trim().is_empty() { "[]" } else { &s }).unwrap()
    }

    /// Link names in this namespace, sorted.
    pub fn links(&self) -> Vec<String> {
        link_names(&self.ipj(&["link", "show"]))
    }

    /// Run `pipe ARGS` with this namespace as the host.
    pub fn pipe(&self, args: &[&str]) -> Output {
        self.pipe_env(args, &[])
    }

    pub fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg(BIN).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// Run a command inside this namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test host: a network namespace of its own plus a private state directory
/// (PIPE_STATE_DIR), so tests run in parallel. The directory is removed on
/// drop, then the namespace (and the LAN namespace of `with_lan`).
pub struct Host {
    pub ns: Ns,
    pub state: String,
    /// Set on every `pipe` run besides PIPE_STATE_DIR (see `with_env`).
    env: Vec<(String, String)>,
    /// The LAN namespace behind the NIC of `with_lan`: it lives as long as the host.
    lan: Option<Ns>,
}

impl Host {
    /// A host namespace named from `prefix` (see `unique`) and its state dir.
    pub fn new(prefix: &str) -> Host {
        let ns = Ns::new(prefix);
        let state = format!("/tmp/pipe-test-state-{}", ns.name);
        Host {
            ns,
            state,
            env: Vec::new(),
            lan: None,
        }
    }

    /// Every `pipe` run also gets `key=value` (e.g. a DOCKER_HOST that leads nowhere).
    pub fn with_env(mut self, key: &str, value: &str) -> Host {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Give the host a "physical" NIC `parent`, up: a veth whose peer is up in a
    /// LAN namespace named from `lan_prefix`.
    pub fn with_lan(mut self, lan_prefix: &str, parent: &str) -> Host {
        let lan = Ns::new(lan_prefix);
        let peer = unique("ln");
        self.ns.ip(&[
            "link", "add", parent, "type", "veth", "peer", "name", &peer, "netns", &lan.name,
        ]);
        self.ns.ip(&["link", "set", parent, "up"]);
        lan.ip(&["link", "set", &peer, "up"]);
        self.lan = Some(lan);
        self
    }

    /// `pipe ARGS` in the host namespace with the host's state dir and
    /// environment plus `env`, its output captured.
    pub fn cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.path()))
            .arg(BIN)
            .args(args)
            .env("PIPE_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    pub fn pipe(&self, args: &[&str]) -> Output {
        self.pipe_env(args, &[])
    }

    pub fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run(&mut self.cmd(args, env))
    }

    /// Start `pipe ARGS` (nsenter execs pipe: the child's PID is pipe's).
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.cmd(args, env)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning pipe {args:?}: {e}"))
    }

    /// `pipe ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        pipe_ok(args, &self.pipe(args))
    }

    /// File names in the state dir's `sub` directory, sorted (none if it is missing).
    pub fn files(&self, sub: &str) -> Vec<String> {
        dir_names(&format!("{}/{sub}", self.state))
    }

    /// Every file in the records directory, temporary files included.
    pub fn records(&self) -> Vec<String> {
        self.files("attachments")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The stdout of `pipe ARGS` that ran as `o`, asserting it succeeded.
pub fn pipe_ok(args: &[&str], o: &Output) -> String {
    assert!(
        o.status.success(),
        "pipe {args:?}: {}{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The names in directory `d`, sorted (none if it is missing).
pub fn dir_names(d: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn link_names(v: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A stand-in container: `unshare --net sleep`, killed on drop, and its
/// /var/run/netns/PID link (made by pipe) removed.
pub struct Container {
    pub child: Child,
    pub pid: u32,
}

/// pipe's identity of the namespace at `path`: `DEV-INO` of its nsfs file.
pub fn ns_key(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    format!("{}-{}", md.dev(), md.ino())
}

impl Container {
    /// pipe's identity of this container's namespace (`DEV-INO`).
    pub fn key(&self) -> String {
        ns_key(&format!("/proc/{}/ns/net", self.pid))
    }

    /// The ownership tag pipe puts on this container's `ifname` (and its host end).
    pub fn tag(&self, ifname: &str) -> String {
        format!("pipe:{}:{ifname}", self.key())
    }

    /// The file name of pipe's record of this container's `ifname`.
    pub fn record(&self, ifname: &str) -> String {
        format!("{}@{ifname}.json", self.key())
    }

    pub fn new() -> Container {
        require_root();
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net sleep");
        let pid = child.id();
        // unshare execs sleep after entering the namespace: wait until it has.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..500 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if comm.trim() == "sleep" && ns.is_some() && ns.as_ref() != Some(&own) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let c = Container { child, pid };
        c.ip(&["link", "set", "lo", "up"]);
        c
    }

    pub fn pid_s(&self) -> String {
        self.pid.to_string()
    }

    pub fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    pub fn nsenter(&self, args: &[&str]) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path()))
            .args(args))
    }

    pub fn ip(&self, args: &[&str]) -> String {
        must(
            Command::new("nsenter")
                .arg(format!("--net={}", self.ns_path()))
                .arg("ip")
                .args(args),
        )
    }

    pub fn ipj(&self, args: &[&str]) -> serde_json::Value {
        let s = must(
            Command::new("nsenter")
                .arg(format!("--net={}", self.ns_path()))
                .args(["ip", "-j"])
                .args(args),
        );
        serde_json::from_str(if s.trim().is_empty() { "[]" } else { &s }).unwrap()
    }

    pub fn links(&self) -> Vec<String> {
        link_names(&self.ipj(&["link", "show"]))
    }

    /// `ip -j route show` plus `ip -j -6 route show`, as text for comparisons.
    pub fn routes(&self) -> String {
        format!(
            "{}{}",
            self.ip(&["-j", "route", "show"]),
            self.ip(&["-j", "-6", "route", "show", "table", "main"])
        )
    }

    pub fn ping(&self, addr: &str) -> bool {
        self.nsenter(&["ping", "-c1", "-W2", addr]).status.success()
    }

    pub fn netns_link(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.pid))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let link = self.netns_link();
        // symlink_metadata: the link is a symlink that dangles once the process is gone.
        if link.symlink_metadata().is_ok() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(format!("/run/pipe/netns/{}", self.pid));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a failed run: exit `code`, one stderr line starting with `pipe: `.
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err} stdout: {}",
        stdout(o)
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("pipe: note:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line of error expected: {err:?}");
    assert!(lines[0].starts_with("pipe: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

/// A link as `ip -j -d link show dev NAME` reports it.
pub fn link(j: &serde_json::Value) -> &serde_json::Value {
    &j.as_array().expect("array")[0]
}
