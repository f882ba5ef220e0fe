//! Issue 11: bad input never panics or hangs, and every error is one clear line.
mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run the binary with a deadline (a hang is a failure, not a stuck test).
fn pipe_in(ns: Option<&Ns>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("/usr/bin/nsenter");
            c.arg(format!("--net={}", ns.path())).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("pipe {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn pipe(args: &[&str]) -> Output {
    pipe_in(None, args, &[])
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn huge_numbers_are_usage_errors_not_panics() {
    for args in [
        &["--timeout", "1e30", "-n", "br1", "1", "0/0"][..],
        &["--timeout", "18446744073709551616", "br1", "1", "0/0"],
        &["detach", "--timeout", "1e30", "1"],
        &["link", "--timeout", "1e30", "1", "0/0", "2", "0/0"],
        &["--wait", "--timeout", "1e30"],
        &["--timeout", "86401", "br1", "1", "0/0"],
        &[
            "--rate",
            "99999999999999999999tbit",
            "-n",
            "br1",
            "1",
            "0/0",
        ],
        &["--mtu", "67", "br1", "1", "0/0"],
        &["--mtu", "65536", "br1", "1", "0/0"],
        &["--mtu", "1000", "br1", "1", "fd00::1/64"],
        &["br1", "1", "0/0", "@4095"],
    ] {
        assert_fails(&pipe(args), 2, "");
    }
    let o = pipe(&["--timeout", "1e30", "br1", "1", "0/0"]);
    assert_fails(&o, 2, "0 to 86400");
}

#[test]
fn fifos_and_devices_never_block() {
    let d = tmpdir("bififo");
    let fifo = d.join("f");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let f = fifo.to_str().unwrap();
    assert_fails(&pipe(&["-n", "br1", f, "0/0"]), 2, "FIFO");
    assert_fails(&pipe(&["-n", "tc", f, "qdisc", "show"]), 2, "FIFO");
    assert_fails(&pipe(&["apply", f]), 2, "FIFO");
    assert_fails(&pipe(&["-n", "apply", "/dev/zero"]), 2, "character device");
    assert_fails(&pipe(&["watch", "--once", "--file", f]), 1, "FIFO");
    // A FIFO under /var/run/netns, given by name.
    let name = unique("bif");
    let p = format!("/var/run/netns/{name}");
    std::fs::create_dir_all("/var/run/netns").unwrap();
    assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
    let o = pipe(&["-n", "br1", &name, "0/0"]);
    let _ = std::fs::remove_file(&p);
    assert_fails(&o, 2, "FIFO");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn clap_errors_keep_their_content_on_one_line() {
    assert_fails(
        &pipe(&["br1", "web"]),
        2,
        "missing ADDR[@GATEWAY] (usage: pipe ",
    );
    assert_fails(&pipe(&["detach"]), 2, "missing GUEST");
    assert_fails(
        &pipe(&["link", "a", "1.1.1.1/32", "b"]),
        2,
        "missing ADDR_B",
    );
    assert_fails(
        &pipe(&["--macvlan-mode", "foo", "eth0", "1", "0/0"]),
        2,
        "bridge, private, vepa, passthru",
    );
    assert_fails(&pipe(&["--wait", "br1", "x", "1.2.3.4/24"]), 2, "HOST_IF");
    assert_fails(&pipe(&["--save", "x"]), 2, "pipe apply FILE");
    assert_fails(&pipe(&["--restore"]), 2, "pipe watch");
}

#[test]
fn control_characters_are_escaped_and_json_errors_are_objects() {
    let o = pipe(&["-n", "br1", "a\nb\x1b[2J", "0/0"]);
    assert_fails(&o, 1, "a\\nb\\u{1b}[2J");
    let o = pipe(&["--json", "br1", "web"]);
    assert_fails(&o, 2, "missing");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["kind"], "usage");
    assert!(v["error"].as_str().unwrap().contains("missing"));
    let o = pipe(&[
        "--json",
        "--state-dir",
        "/dev/null",
        "-n",
        "br1",
        "1",
        "0/0",
    ]);
    assert_fails(&o, 2, "state directory /dev/null");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["exit_code"], 2);
}

/// A relative state directory would tie the records to the working
/// directory (a later gc elsewhere would not see them): refused, and nothing
/// is created where pipe was run, not even by a dry run.
#[test]
fn a_relative_state_dir_is_refused_and_nothing_is_created() {
    let cwd = tmpdir("birel");
    for (args, env) in [
        (&["-n", "gc", "--state-dir", "rel"][..], None),
        (&["--state-dir", "rel", "br1", "1", "0/0"][..], None),
        (&["-n", "list"][..], Some("rel")),
        (&["-n", "br1", "1", "10.0.0.2/24"][..], Some("./rel")),
    ] {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(&cwd).stdin(Stdio::null());
        if let Some(v) = env {
            c.env("PIPE_STATE_DIR", v);
        }
        let o = c.output().unwrap();
        assert_fails(&o, 2, "is a relative path; give an absolute one");
        let left: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // An absolute one is created with its missing parents, 0700.
    let deep = cwd.join("a/b/state");
    let o = pipe(&["gc", "--state-dir", deep.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(&deep).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    std::fs::remove_dir_all(&cwd).unwrap();
}

/// A directory removed when the test ends, passed or failed.
struct TmpDir(std::path::PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file and directory under `d`, relative to it, sorted.
fn tree(d: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(d, d, &mut v);
    v.sort();
    v
}

/// A host namespace, a stand-in container, and a state directory path (not
/// created) under a directory removed when the test ends.
fn state_case(tag: &str) -> (Ns, Container, String, TmpDir, std::path::PathBuf) {
    let h = Ns::new(tag);
    let c = Container::new();
    let pid = c.pid_s();
    let tmp = TmpDir(tmpdir(tag));
    let sd = tmp.0.join("state");
    (h, c, pid, tmp, sd)
}

/// A dry run (and `list`, which only reads) creates nothing: not the state
/// directory when there is none, and no lock file or record in one that
/// exists. Each still answers from the records it finds.
#[test]
fn dry_runs_and_list_create_nothing_in_the_state_dir() {
    let (h, _c, pid, tmp, sd) = state_case("bidr");
    let sds = sd.to_str().unwrap().to_string();
    let file = tmp.0.join("attach.toml");
    std::fs::write(
        &file,
        format!("[[attach]]\ncontainer = \"{pid}\"\nhost = \"brbidr\"\naddr = \"10.9.0.3/24\"\n"),
    )
    .unwrap();
    let env = [("PIPE_STATE_DIR", sds.as_str())];
    let dry: Vec<Vec<&str>> = vec![
        vec!["-n", "-i", "eth2", "brbidr", &pid, "10.9.0.2/24"],
        vec!["-n", "detach", &pid, "-i", "eth2"],
        vec!["-n", "gc"],
        vec!["list"],
        vec!["-n", "apply", file.to_str().unwrap()],
        vec!["-n", "link", &pid, "10.8.0.1/30", &pid, "10.8.0.2/30"],
    ];
    for args in &dry {
        let o = pipe_in(Some(&h), args, &env);
        assert!(!sd.exists(), "{args:?} created {sds}: {}", stderr(&o));
    }
    // A real attach makes the directory; the dry runs then leave it as it is.
    let o = pipe_in(
        Some(&h),
        &["--no-netns-link", "brbidr", &pid, "10.9.0.4/24"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = tree(&sd);
    assert!(
        before.iter().any(|p| p.starts_with("attachments/")),
        "no record after an attach: {before:?}"
    );
    for args in &dry {
        let o = pipe_in(Some(&h), args, &env);
        assert_eq!(tree(&sd), before, "{args:?} changed {sds}: {}", stderr(&o));
    }
    // The dry runs still read the record: a dry detach of eth1 plans its removal.
    let o = pipe_in(Some(&h), &["-n", "detach", &pid], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("record"), "{}", stdout(&o));
    assert_eq!(tree(&sd), before);
    let o = pipe_in(Some(&h), &["detach", &pid], &env);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A detach refused because nothing is there and a first attach that fails
/// leave no lock file behind, and a detach that removes an attachment takes
/// its lock file with its record.
#[test]
fn detach_leaves_no_lock_file_behind() {
    let (h, _c, pid, _tmp, sd) = state_case("bidl");
    let env = [("PIPE_STATE_DIR", sd.to_str().unwrap())];
    // (shared.lock, the host-wide lock of shared objects, is one fixed file.)
    let files = |sub: &str| -> Vec<String> {
        match std::fs::read_dir(sd.join(sub)) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "shared.lock")
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let o = pipe_in(Some(&h), &["detach", &pid, "-i", "eth7"], &env);
    assert_fails(&o, 1, "nothing to detach");
    assert!(files("locks").is_empty(), "{:?}", files("locks"));
    // A first attach refused after taking its lock (no such host interface).
    let o = pipe_in(
        Some(&h),
        &[
            "--no-netns-link",
            "-i",
            "eth8",
            "nosuchif0",
            &pid,
            "10.9.1.5/24",
        ],
        &env,
    );
    assert_fails(&o, 1, "nosuchif0");
    assert!(files("locks").is_empty(), "{:?}", files("locks"));

    let o = pipe_in(
        Some(&h),
        &["--no-netns-link", "brbidl", &pid, "10.9.1.4/24"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files("attachments").len(), 1, "{:?}", files("attachments"));
    let o = pipe_in(Some(&h), &["detach", &pid], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        files("attachments").is_empty(),
        "{:?}",
        files("attachments")
    );
    assert!(files("locks").is_empty(), "{:?}", files("locks"));
}

#[test]
fn global_options_before_a_verb_and_dry_run_json() {
    let h = Ns::new("bih");
    let c = Container::new();
    let sd = tmpdir("bisd");
    let sds = sd.to_str().unwrap();
    let o = pipe_in(Some(&h), &["--state-dir", sds, "-n", "gc"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = pipe_in(Some(&h), &["--json", "-n", "--state-dir", sds, "gc"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"removed\""));
    let pid = c.pid_s();
    let o = pipe_in(Some(&h), &["-n", "--state-dir", sds, "detach", &pid], &[]);
    assert!(!stderr(&o).contains("required"), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = pipe_in(
        Some(&h),
        &[
            "-n",
            "route",
            &pid,
            "replace",
            "-6",
            "default",
            "via",
            "2001:db8::1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ip -6 route replace default via 2001:db8::1"),
        "{}",
        stdout(&o)
    );
    // The fallback printed for a refused form is valid ip syntax (-6 first).
    let o = pipe_in(
        Some(&h),
        &[
            "route",
            &pid,
            "replace",
            "-6",
            "default",
            "via",
            "2001:db8::1",
            "mtu",
            "1400",
        ],
        &[],
    );
    assert_fails(
        &o,
        2,
        "ip -6 route replace default via 2001:db8::1 mtu 1400",
    );
    // --dry-run --json: the plan as one JSON object.
    let o = pipe_in(
        Some(&h),
        &[
            "--state-dir",
            sds,
            "-n",
            "--json",
            "br1",
            &pid,
            "10.9.0.2/24",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let ops: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"CreateBridge") && ops.contains(&"CreateVeth"),
        "{v}"
    );
    assert_eq!(h.links(), ["lo"], "a dry run changes nothing");
    std::fs::remove_dir_all(&sd).unwrap();
}

#[test]
fn disabled_ipv6_is_explained() {
    let h = Ns::new("bih");
    let c = Container::new();
    c.nsenter(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    let sd = tmpdir("bisd");
    let sds = sd.to_str().unwrap();
    let o = pipe_in(
        Some(&h),
        &["--state-dir", sds, "br1", &c.pid_s(), "2001:db8::5/64"],
        &[],
    );
    assert_fails(&o, 1, "--sysctl net.ipv6.conf.all.disable_ipv6=0");
    assert_eq!(h.links(), ["lo"]);
    assert_eq!(c.links(), ["lo"]);
    std::fs::remove_dir_all(&sd).unwrap();
}

#[test]
fn dual_stack_output_and_bridge_mtu_kept() {
    let h = Ns::new("bih");
    let c = Container::new();
    let sd = tmpdir("bisd");
    let sds = sd.to_str().unwrap();
    h.ip(&["link", "add", "br2", "type", "bridge"]);
    h.ip(&["link", "set", "br2", "up"]);
    let pid = c.pid_s();
    let o = pipe_in(
        Some(&h),
        &[
            "--state-dir",
            sds,
            "-i",
            "eth2",
            "br2",
            &pid,
            "10.2.0.7/16@10.2.0.1,2001:db8:2::7/64@2001:db8:2::1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(line.contains("10.2.0.7/16,2001:db8:2::7/64"), "{line}");
    assert!(line.contains("via 10.2.0.1,2001:db8:2::1"), "{line}");
    let o = pipe_in(
        Some(&h),
        &[
            "--state-dir",
            sds,
            "--json",
            "--mtu",
            "1400",
            "-i",
            "eth3",
            "br2",
            &pid,
            "10.3.0.7/16",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["addresses"], serde_json::json!(["10.3.0.7/16"]));
    let br = h.ipj(&["link", "show", "dev", "br2"]);
    assert_eq!(link(&br)["mtu"], 1500, "the bridge keeps its MTU");
    let e3 = c.ipj(&["link", "show", "dev", "eth3"]);
    assert_eq!(link(&e3)["mtu"], 1400);
    std::fs::remove_dir_all(&sd).unwrap();
}

#[test]
fn rollback_of_a_link_already_gone_is_not_a_failure() {
    let h = Ns::new("bih");
    let c = Container::new();
    let sd = tmpdir("bisd");
    let sds = sd.to_str().unwrap().to_string();
    let pid = c.pid_s();
    let path = h.path();
    let t = std::thread::spawn(move || {
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg(format!("--net={path}"))
            .arg(BIN)
            .args(["--state-dir", &sds, "br1", &pid, "dhcp"])
            .env("PIPE_DHCP_TIMEOUT", "4");
        cmd.output().unwrap()
    });
    // While pipe waits for a lease, the container's end goes away (and the
    // host end with it): the rollback finds the veth already gone.
    let t0 = Instant::now();
    while !c.links().contains(&"eth1".to_string()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "eth1 never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.ip(&["link", "del", "eth1"]);
    let o = t.join().unwrap();
    assert_fails(&o, 1, "DHCP");
    assert!(!stderr(&o).contains("could not undo"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("by hand"), "{}", stderr(&o));
    assert_eq!(h.links(), ["lo"], "the bridge pipe created is gone too");
    std::fs::remove_dir_all(sd).unwrap();
}

#[test]
fn apply_dry_run_checks_every_entry() {
    let h = Ns::new("bih");
    let c = Container::new();
    let sd = tmpdir("bisd");
    let f = sd.join("a.toml");
    std::fs::write(
        &f,
        format!(
            "[[attach]]\ncontainer = \"{p}\"\nhost = \"br1\"\naddr = \"10.0.0.2/24\"\n\n\
             [[attach]]\ncontainer = \"999999999\"\nhost = \"br1\"\naddr = \"10.0.0.3/24\"\n\n\
             [[attach]]\ncontainer = \"{p}\"\nhost = \"nosuchif0\"\naddr = \"10.0.0.4/24\"\nifname = \"eth4\"\n",
            p = c.pid
        ),
    )
    .unwrap();
    let o = pipe_in(
        Some(&h),
        &[
            "--state-dir",
            sd.to_str().unwrap(),
            "-n",
            "apply",
            f.to_str().unwrap(),
        ],
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("999999999 eth1"), "{err}");
    assert!(err.contains("eth4") && err.contains("nosuchif0"), "{err}");
    assert!(err.contains("2 of 3 attachments would fail"), "{err}");
    assert_eq!(h.links(), ["lo"]);
    std::fs::remove_dir_all(&sd).unwrap();
}
