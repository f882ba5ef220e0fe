//! Issue 11: fuzzing without new dependencies (a fixed-seed xorshift stream).
//! 1. the parsers, in process: no panic, errors are one line;
//! 2. the whole binary with --dry-run in a scratch namespace: no panic, no
//!    hang over 5 s, every failure exactly one `pipe: ` line, exit 0/1/2.
//!
//! Bounded in time; prints its case counts.
mod common;

use common::*;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const PIECES: &[&str] = &[
    "0",
    "1",
    "9",
    "10",
    "255",
    "256",
    "4094",
    "4095",
    "65535",
    "99999999999999999999",
    "1e30",
    "-1",
    ".",
    ":",
    "::",
    "/",
    "@",
    ",",
    "U:",
    "0/0",
    "/24",
    "/128",
    "/33",
    "10.0.0.1",
    "fe80::1",
    "2001:db8::",
    "02:00:00:00:00:01",
    "ff:ff:ff:ff:ff:ff",
    "mbit",
    "kbit",
    "tbit",
    "bps",
    "kb",
    "dhcp",
    "udhcpc",
    "br",
    "eth",
    "x",
    "\n",
    "\x1b",
    "\0",
    "é",
    "\u{202e}",
    " ",
    "-",
    "nan",
    "inf",
    "%",
    "[",
    "]",
    "=",
    "\"",
];

fn fuzz_string(r: &mut Rng) -> String {
    let n = r.below(6);
    (0..=n).map(|_| r.pick(PIECES)).collect()
}

#[test]
fn parsers_never_panic() {
    use pipe::domain::spec::*;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    let mut n = 0u64;
    let words = [
        "add",
        "del",
        "replace",
        "-4",
        "-6",
        "default",
        "via",
        "dev",
        "eth1",
        "metric",
        "table",
        "src",
        "onlink",
        "proto",
        "scope",
        "blackhole",
        "from",
        "to",
        "all",
        "not",
        "fwmark",
        "priority",
        "lookup",
        "iif",
        "oif",
        "10.0.0.0/8",
        "fe80::1",
        "0x1/0xff",
        "4294967295",
    ];
    while n < 200_000 && t.elapsed() < Duration::from_secs(20) {
        let s = fuzz_string(&mut r);
        let one_line = |e: String| assert!(!e.is_empty(), "{s:?}: empty error");
        let _ = s.parse::<AddrSpec>().map_err(one_line);
        let _ = s.parse::<MacVlan>().map_err(one_line);
        let _ = s.parse::<VlanId>().map_err(one_line);
        let _ = s.parse::<IfName>().map_err(one_line);
        let _ = s.parse::<GuestRef>().map_err(one_line);
        let _ = s.parse::<HostIfRef>().map_err(one_line);
        let _ = s.parse::<pipe::domain::rate::Rate>().map(|rt| {
            let _ = rt.to_string();
            let _ = pipe::domain::rate::tbf(rt, 65535);
        });
        let _ = parse_mtu(&s);
        let _ = pipe::edge::cli::parse_secs(&s);
        let args: Vec<String> = (0..r.below(8))
            .map(|_| {
                if r.below(4) == 0 {
                    fuzz_string(&mut r)
                } else {
                    r.pick(&words).to_string()
                }
            })
            .collect();
        if let Ok(rt) = pipe::domain::iproute::parse_route(&args) {
            let _ = rt.to_string();
        }
        if let Ok(rl) = pipe::domain::iproute::parse_rule(&args) {
            let _ = rl.to_string();
        }
        let _ = pipe::domain::iproute::ip_command("route", &args);
        let toml = format!(
            "[[attach]]\ncontainer = \"{}\"\nhost = \"{}\"\naddr = \"{}\"\n{} = {}\n",
            s.escape_default(),
            r.pick(&["br1", "eth0", "x"]),
            fuzz_string(&mut r).escape_default(),
            r.pick(&["mtu", "vlan", "mac", "rate", "ifname", "bogus"]),
            r.pick(&[
                "1",
                "0",
                "70000",
                "\"10mbit\"",
                "\"U:x\"",
                "[",
                "\"\n\"",
                "-5"
            ])
        );
        let _ = pipe::domain::attachments::parse(&toml, "f");
        n += 1;
    }
    println!(
        "fuzz: {n} parser cases (x9 parsers each) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(n >= 10_000, "too few parser cases: {n}");
}

#[test]
fn argv_fuzz_over_the_binary_with_dry_run() {
    let h = Ns::new("fzh");
    let c = Container::new();
    let sd = std::env::temp_dir().join(unique("fzsd"));
    std::fs::create_dir_all(&sd).unwrap();
    let fifo = sd.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let good = sd.join("a.toml");
    std::fs::write(
        &good,
        format!(
            "[[attach]]\ncontainer = \"{}\"\nhost = \"br1\"\naddr = \"10.0.0.2/24\"\n",
            c.pid
        ),
    )
    .unwrap();
    let nsfd = std::fs::File::open(h.path()).unwrap();
    let pid = c.pid_s();
    let nspath = c.ns_path();
    let (fifo_s, good_s) = (fifo.to_str().unwrap(), good.to_str().unwrap());
    let guests = [
        pid.as_str(),
        nspath.as_str(),
        fifo_s,
        "/dev/null",
        "/dev/zero",
        "nosuchcontainer",
        "\n",
        "1",
        "0",
        "99999999999",
        "/",
        "",
    ];
    let verbs = [
        "", "", "", "detach", "link", "route", "rule", "apply", "gc", "tc",
    ];
    let opts = [
        "-i",
        "-l",
        "--mtu",
        "--rate",
        "--timeout",
        "--macvlan-mode",
        "--ipvlan",
        "--direct-phys",
        "--json",
        "-v",
        "--no-netns-link",
        "--persist",
        "--force",
        "--peer-ifname",
        "-a",
        "--save",
        "--restore",
        "--",
        "-x",
        "--state-dir",
    ];
    let values = [
        "eth2",
        "br1",
        "x",
        "0",
        "1400",
        "1e30",
        "10mbit",
        "bridge",
        "l2",
        "4",
        "6",
        "99999999999999999999tbit",
        "averyveryverylongname",
        "0/0",
        "10.0.0.2/24@10.0.0.1",
        "fd00::2/64@fd00::1",
        "dhcp",
        "@100",
        "U:seed@4094",
        "add",
        "replace",
        "-6",
        "default",
        "via",
        "10.0.0.1",
        "qdisc",
        "show",
        good_s,
        fifo_s,
        "/dev/zero",
    ];
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let t = Instant::now();
    let budget = Duration::from_secs(100);
    let (mut n, mut by_code) = (0u64, [0u64; 3]);
    let mut findings = Vec::new();
    while n < 4000 && t.elapsed() < budget {
        let mut argv: Vec<String> = vec!["-n".into()];
        let v = r.pick(&verbs);
        if !v.is_empty() {
            argv.push(v.into());
        }
        for _ in 0..r.below(7) {
            match r.below(4) {
                0 => argv.push(r.pick(&opts).into()),
                1 => argv.push(r.pick(&guests).into()),
                2 => argv.push(fuzz_string(&mut r)),
                _ => argv.push(r.pick(&values).into()),
            }
        }
        // Shuffle a little: options before and after the positionals.
        if argv.len() > 2 && r.below(2) == 0 {
            let i = 1 + r.below(argv.len() - 1);
            let j = 1 + r.below(argv.len() - 1);
            argv.swap(i, j);
        }
        // NUL cannot be in argv; watch and --wait wait by design.
        if argv
            .iter()
            .any(|a| a == "watch" || a.starts_with("--wait") || a.contains('\0'))
        {
            continue;
        }
        let fd = nsfd.as_raw_fd();
        let mut cmd = Command::new(BIN);
        cmd.args(&argv)
            .env("PIPE_STATE_DIR", &sd)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("PIPE_DHCP_TIMEOUT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only setns between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let out = child.wait_with_output().unwrap();
        n += 1;
        let err = stderr(&out);
        let bad = match status.and_then(|s| s.code()) {
            None => Some("hung over 5 s or killed by a signal".to_string()),
            Some(code @ 0..=2) => {
                by_code[code as usize] += 1;
                let lines: Vec<&str> = err
                    .lines()
                    .filter(|l| !l.starts_with("pipe: note:"))
                    .collect();
                if code != 0 && (lines.len() != 1 || !lines[0].starts_with("pipe: ")) {
                    Some(format!(
                        "exit {code} without exactly one error line: {err:?}"
                    ))
                } else {
                    None
                }
            }
            Some(code) => Some(format!("exit {code}: {err:?}")),
        };
        if let Some(b) = bad {
            findings.push(format!("pipe {argv:?}: {b}"));
        }
    }
    println!(
        "fuzz: {n} argv cases in {:.1} s (exit 0: {}, 1: {}, 2: {}); findings: {}",
        t.elapsed().as_secs_f64(),
        by_code[0],
        by_code[1],
        by_code[2],
        findings.len()
    );
    assert_eq!(
        h.links(),
        ["lo"],
        "a dry run left something in the host namespace"
    );
    assert_eq!(
        c.links(),
        ["lo"],
        "a dry run left something in the container"
    );
    let _ = std::fs::remove_dir_all(&sd);
    assert!(findings.is_empty(), "{}", findings.join("\n"));
    assert!(n >= 500, "too few argv cases: {n}");
}
