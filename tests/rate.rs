//! `--rate RATE[/BURST]`: a TBF qdisc on the container's interface, set over
//! netlink and read back with `tc -j`.

mod common;

use common::*;

fn qdisc(c: &Container, dev: &str) -> serde_json::Value {
    let s = must(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", c.ns_path()))
            .args(["tc", "-j", "qdisc", "show", "dev", dev]),
    );
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v[0].clone()
}

fn near(got: &serde_json::Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
    assert!(
        (g - want).abs() <= want * 0.01,
        "{what}: {g}, expected about {want}"
    );
}

#[test]
fn tbf_with_the_asked_rate_and_burst() {
    let host = Ns::new("ph");
    let (a, b) = (Container::new(), Container::new());
    let br = unique("br");
    let o = host.pipe(&[&br, &a.pid_s(), "10.92.0.2/24", "--rate", "10mbit/64kb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = qdisc(&a, "eth1");
    assert_eq!(q["kind"], "tbf", "{q}");
    assert_eq!(q["root"], true, "{q}");
    assert_eq!(q["options"]["rate"], 1_250_000, "10mbit is 1.25 MB/s: {q}");
    near(&q["options"]["burst"], 65536.0, "burst");
    near(&q["options"]["lat"], 50_000.0, "latency (us)");
    // Traffic still flows through the bucket.
    let o = host.pipe(&[&br, &b.pid_s(), "10.92.0.3/24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        a.ping("10.92.0.3"),
        "no traffic through the shaped interface"
    );
}

#[test]
fn default_burst_and_64_bit_rates() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[&br, &c.pid_s(), "0/0", "--rate", "50gbit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = qdisc(&c, "eth1");
    assert_eq!(q["kind"], "tbf", "{q}");
    assert_eq!(q["options"]["rate"], 6_250_000_000u64, "{q}");
    near(&q["options"]["burst"], 62_500_000.0, "10 ms at the rate");
}

#[test]
fn bad_rates_are_refused_untouched() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let before = host.links();
    let o = host.pipe(&[&br, &c.pid_s(), "10.93.0.2/24", "--rate", "fast"]);
    assert_fails(&o, 2, "\"fast\"");
    let o = host.pipe(&[&br, &c.pid_s(), "10.93.0.2/24", "--rate", "1mbit/1k"]);
    assert_fails(&o, 2, "at least 1514");
    assert_eq!(host.links(), before);
    assert_eq!(c.links(), ["lo"]);
    let o = host.pipe(&["-n", &br, &c.pid_s(), "10.93.0.2/24", "--rate", "1mbit"]);
    assert!(
        stdout(&o).contains(&format!(
            "ip netns exec {} tc qdisc replace dev eth1 root tbf rate 1000000bit burst 16384 limit 22634",
            c.pid
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn re_running_with_another_rate_reshapes() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let state = format!("/tmp/pipe-test-state-{}", host.name);
    let env = [("PIPE_STATE_DIR", state.as_str())];
    let args = |r: &'static str| {
        vec![
            br.clone(),
            c.pid_s(),
            "10.94.0.2/24".into(),
            "--rate".into(),
            r.into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        host.pipe_env(&a, &env)
    };
    let o = run(args("10mbit"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(args("10mbit"));
    assert!(stdout(&o).contains("already attached"), "{}", stdout(&o));
    let o = run(args("5mbit"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("already attached"), "{}", stdout(&o));
    assert_eq!(qdisc(&c, "eth1")["options"]["rate"], 625_000);
    let o = run(args("5mbit"));
    assert!(stdout(&o).contains("already attached"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&state);
}
