//! DHCP against a real server (busybox udhcpd) in a test namespace: lease
//! obtained, renewed at T1, released on detach; the lease keeper exits with
//! the container; pipework's client spellings.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A host namespace with bridge `br`, and a DHCP server namespace whose
/// srv0 (10.NN.0.1/24) is a port of that bridge, running `busybox udhcpd`.
struct Server {
    host: Ns,
    _srv: Ns,
    br: String,
    child: Child,
    dir: std::path::PathBuf,
    state: String,
}

impl Server {
    fn new(net: u8, lease_secs: u32) -> Server {
        let host = Ns::new("ph");
        let srv = Ns::new("ps");
        let br = unique("br");
        host.ip(&["link", "add", &br, "type", "bridge"]);
        host.ip(&["link", "set", &br, "up"]);
        host.ip(&[
            "link", "add", "sv0", "type", "veth", "peer", "name", "srv0", "netns", &srv.name,
        ]);
        host.ip(&["link", "set", "sv0", "master", &br, "up"]);
        srv.ip(&["link", "set", "srv0", "up"]);
        srv.ip(&["addr", "add", &format!("10.{net}.0.1/24"), "dev", "srv0"]);
        let dir = std::env::temp_dir().join(format!("pipe-dhcp-{}", srv.name));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("udhcpd.conf");
        let leases = dir.join("leases");
        std::fs::write(&leases, b"").unwrap();
        std::fs::write(
            &conf,
            format!(
                "start 10.{net}.0.100\nend 10.{net}.0.150\ninterface srv0\nlease_file {}\n\
                 pidfile {}\noption subnet 255.255.255.0\noption router 10.{net}.0.1\n\
                 option lease {lease_secs}\n",
                leases.display(),
                dir.join("pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        // `ip netns exec` execs busybox: the child's PID is the server's.
        let child = Command::new("ip")
            .args(["netns", "exec", &srv.name, "busybox", "udhcpd", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("busybox udhcpd (apt-get install busybox-static)");
        let state = dir.join("state").display().to_string();
        let s = Server {
            host,
            _srv: srv,
            br,
            child,
            dir,
            state,
        };
        // Ready when it has logged its start.
        assert!(
            wait(Duration::from_secs(5), || s.log().contains("started")),
            "udhcpd did not start: {}",
            s.log()
        );
        s
    }

    fn pipe(&self, args: &[&str]) -> std::process::Output {
        self.pipe_env(args, &[])
    }

    fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut e = vec![("PIPE_STATE_DIR", self.state.as_str())];
        e.extend_from_slice(env);
        self.host.pipe_env(args, &e)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The server's lease table (udhcpd writes it on SIGUSR1).
    fn leases(&self) -> String {
        let before = std::fs::metadata(self.dir.join("leases"))
            .and_then(|m| m.modified())
            .ok();
        // SAFETY: a signal to the server this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGUSR1);
        }
        wait(Duration::from_secs(2), || {
            std::fs::metadata(self.dir.join("leases"))
                .and_then(|m| m.modified())
                .ok()
                != before
        });
        std::thread::sleep(Duration::from_millis(50));
        must(
            Command::new("busybox")
                .args(["dumpleases", "-f"])
                .arg(self.dir.join("leases")),
        )
    }

    fn keeper_pid(&self, c: &Container) -> Option<u32> {
        let p = format!("{}/dhcp/{}@eth1.pid", self.state, c.pid);
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    fn keeper_state(&self, c: &Container) -> serde_json::Value {
        let p = format!("{}/dhcp/{}@eth1.json", self.state, c.pid);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|_| "null".into())).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Stop any lease keeper still running for this server's containers.
        if let Ok(rd) = std::fs::read_dir(format!("{}/dhcp", self.state)) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Some(pid) = std::fs::read_to_string(e.path())
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    // SAFETY: a keeper started for this test's container, by PID.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGTERM);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The IPv4 address of eth1 in `c`, with its valid lifetime.
fn v4(c: &Container) -> Option<(String, u64)> {
    let a = c.ipj(&["-4", "addr", "show", "dev", "eth1"]);
    let i = a.as_array()?.first()?["addr_info"]
        .as_array()?
        .first()?
        .clone();
    Some((
        format!("{}/{}", i["local"].as_str()?, i["prefixlen"]),
        i["valid_life_time"].as_u64()?,
    ))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

#[test]
fn lease_obtained_renewed_at_t1_and_released_on_detach() {
    let s = Server::new(95, 6);
    let c = Container::new();
    let o = s.pipe(&[&s.br, &c.pid_s(), "dhcp"]);
    assert!(o.status.success(), "{}{}", stderr(&o), s.log());
    let line = stdout(&o);
    assert!(
        line.contains("addr 10.95.0.1") && line.contains("via 10.95.0.1"),
        "{line}"
    );

    // Address from the pool, with the lease as its lifetime; default route from the lease.
    let (addr, valid) = v4(&c).expect("no IPv4 address on eth1");
    assert!(
        addr.starts_with("10.95.0.1") && addr.ends_with("/24"),
        "{addr}"
    );
    assert!(valid <= 6, "valid_lft {valid} is not the 6 s lease");
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.95.0.1", "{r}");
    assert!(
        s.leases().contains(&addr[..addr.len() - 3]),
        "{}",
        s.leases()
    );
    let keeper = s.keeper_pid(&c).expect("no lease keeper");
    assert!(alive(keeper));

    // Past the lease time the address is still there: renewed at T1 (3 s),
    // otherwise the kernel would have dropped it when its lifetime ran out.
    std::thread::sleep(Duration::from_secs(8));
    let (again, valid) = v4(&c).expect("the address expired: the lease was not renewed");
    assert_eq!(again, addr);
    assert!(valid <= 6);
    let renewals = s.keeper_state(&c)["renewals"].as_u64().unwrap_or(0);
    assert!(renewals >= 2, "renewals: {renewals}");
    let acks = s.log().matches("sending ACK").count();
    assert!(acks >= 3, "the server saw {acks} requests:\n{}", s.log());

    // Detach: the keeper releases the lease and exits.
    let o = s.pipe(&["detach", &c.pid_s()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("DHCP lease (released)"),
        "{}",
        stdout(&o)
    );
    assert!(
        wait(Duration::from_secs(3), || !alive(keeper)),
        "keeper still runs"
    );
    let l = s.leases();
    assert!(
        l.contains("expired"),
        "the server still holds the lease:\n{l}"
    );
}

#[test]
fn keeper_exits_when_the_container_goes_away() {
    let s = Server::new(96, 60);
    let mut c = Container::new();
    let o = s.pipe(&[&s.br, &c.pid_s(), "dhcp"]);
    assert!(o.status.success(), "{}{}", stderr(&o), s.log());
    let keeper = s.keeper_pid(&c).expect("no lease keeper");
    // Running the same attach again changes nothing and keeps the one keeper.
    let o = s.pipe(&[&s.br, &c.pid_s(), "dhcp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("already attached"), "{}", stdout(&o));
    // It names the lease the interface holds, not "addr none".
    assert!(stdout(&o).contains("addr 10.96.0.1"), "{}", stdout(&o));
    assert_eq!(s.keeper_pid(&c), Some(keeper));
    // The keeper holds nothing in the namespace: once the container dies, the
    // namespace goes, and with it the host end of the veth.
    let veth = format!("veth1pl{}", c.pid);
    assert!(s.host.links().contains(&veth));
    let _ = c.child.kill();
    let _ = c.child.wait();
    assert!(
        wait(Duration::from_secs(3), || !alive(keeper)),
        "keeper outlived the container"
    );
    assert!(
        wait(Duration::from_secs(3), || !s.host.links().contains(&veth)),
        "the host end of the veth stayed: something holds the dead namespace"
    );
}

#[test]
fn no_server_fails_and_rolls_back() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let before = host.links();
    let t = Instant::now();
    let o = host.pipe_env(&[&br, &c.pid_s(), "dhcp"], &[("PIPE_DHCP_TIMEOUT", "2")]);
    assert_fails(&o, 1, "no answer from a DHCP server");
    assert!(t.elapsed() < Duration::from_secs(6));
    assert_eq!(host.links(), before);
    assert_eq!(c.links(), ["lo"]);
    let o = host.pipe(&[&br, &c.pid_s(), "dhcp@10.0.0.1"]);
    assert_fails(&o, 2, "no gateway");
}

#[test]
fn pipework_client_spellings_run_that_client() {
    let s = Server::new(97, 60);
    let c = Container::new();
    // Without the client: a clear error, nothing left behind.
    for client in ["udhcpc", "dhclient", "dhcpcd"] {
        let o = s.pipe_env(&[&s.br, &c.pid_s(), client], &[("PATH", "/usr/bin:/bin")]);
        assert_fails(&o, 1, &format!("{client} is not installed"));
        assert_eq!(c.links(), ["lo"]);
    }
    // With a udhcpc (busybox's, with a script that sets what it got).
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("udhcpc.script");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  \
         [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\nesac\nexit 0\n",
    )
    .unwrap();
    std::fs::write(
        bin.join("udhcpc"),
        format!(
            "#!/bin/sh\nexec busybox udhcpc -s {} \"$@\"\n",
            script.display()
        ),
    )
    .unwrap();
    must(
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .arg(bin.join("udhcpc")),
    );
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let o = s.pipe_env(&[&s.br, &c.pid_s(), "udhcpc"], &[("PATH", &path)]);
    assert!(o.status.success(), "{}{}", stderr(&o), s.log());
    let (addr, _) = v4(&c).expect("udhcpc set no address");
    assert!(addr.starts_with("10.97.0.1"), "{addr}");
    assert_eq!(
        c.ipj(&["route", "show", "default"])[0]["gateway"],
        "10.97.0.1"
    );
}

/// DHCP progress goes to stderr when it is a terminal (a pty from `script`),
/// and nothing extra otherwise.
#[test]
fn progress_on_a_terminal_only() {
    let s = Server::new(93, 60);
    let c = Container::new();
    let o = s.pipe(&[&s.br, &c.pid_s(), "dhcp"]);
    assert!(o.status.success(), "{}{}", stderr(&o), s.log());
    assert!(!stderr(&o).contains("pipe: dhcp:"), "{}", stderr(&o));
    let o = s.pipe(&["detach", &c.pid_s()]);
    assert!(o.status.success(), "{}", stderr(&o));

    let cmd = format!(
        "nsenter --net={} {BIN} -i eth2 {} {} dhcp",
        s.host.path(),
        s.br,
        c.pid
    );
    let o = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("PIPE_STATE_DIR", &s.state));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", s.log());
    for want in [
        "pipe: dhcp: DISCOVER sent",
        "pipe: dhcp: OFFER of 10.93.0.1",
        "pipe: dhcp: lease of 10.93.0.1",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    let o = s.pipe(&["detach", "-i", "eth2", &c.pid_s()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
