//! `pipe selftest` on a kernel that has 802.1Q and ipvlan (the QEMU VM tier,
//! tests/vm/run.sh): those two steps must run and pass there, not be skipped.
//! Not gated on `PIPE_IN_VM`: run with `--ignored` on a kernel without them, it fails.

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_selftest_runs_802_1q_and_ipvlan() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["selftest", "--json"])
        .output()
        .expect("running pipe selftest");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "pipe selftest failed: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["not_supported"], serde_json::json!([]), "{v}");
    for step in ["802.1Q", "ipvlan"] {
        let s = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == step)
            .unwrap_or_else(|| panic!("no {step} step in {v}"));
        assert_eq!(s["status"], "ok", "{s}");
        assert!(
            s["detail"].as_str().unwrap().contains("(first reply")
                || s["detail"].as_str().unwrap().contains(" ms"),
            "{s}: no ping"
        );
    }
    // The human form too, shown with --nocapture (the README quotes it).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .arg("selftest")
        .output()
        .expect("running pipe selftest");
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!text.contains("not supported"), "{text}");
    let names: Vec<String> = std::fs::read_dir("/var/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("pipe-selftest-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(names.is_empty(), "left in /var/run/netns: {names:?}");
}
