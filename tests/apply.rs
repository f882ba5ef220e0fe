//! `pipe apply FILE`: many attachments in one process, each atomic on its own.

mod common;

use common::*;

#[test]
fn apply_attaches_each_entry_and_rolls_back_only_the_failed_one() {
    let host = Ns::new("ph");
    let (a, b, c) = (Container::new(), Container::new(), Container::new());
    // c already has an eth1: its entry must fail and leave nothing behind.
    c.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "x1"]);
    let br = unique("br");
    let dir = std::env::temp_dir().join(unique("pa"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("attachments.toml");
    std::fs::write(
        &file,
        format!(
            "[[attach]]\ncontainer = \"{}\"\nhost = \"{br}\"\naddr = \"10.90.0.2/24\"\n\n\
             [[attach]]\ncontainer = \"{}\"\nhost = \"{br}\"\naddr = \"10.90.0.3/24\"\nmac = \"02:00:00:00:90:03\"\n\n\
             [[attach]]\ncontainer = \"{}\"\nhost = \"{br}\"\naddr = \"10.90.0.4/24\"\n",
            a.pid, b.pid, c.pid
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c_before = c.links();

    let o = host.pipe(&["apply", f]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("2 attached, 0 already attached, 1 failed"),
        "{out}"
    );
    assert!(
        stderr(&o).contains(&format!("{} eth1", c.pid)),
        "names the entry: {}",
        stderr(&o)
    );

    // a and b are attached and can talk over the bridge; c is untouched.
    let l = c.ipj(&["link", "show", "dev", "eth1"]);
    assert_eq!(
        link(&l)["linkinfo"],
        serde_json::Value::Null,
        "c's own eth1 is still the veth it had"
    );
    assert_eq!(c.links(), c_before);
    assert_eq!(
        link(&b.ipj(&["link", "show", "dev", "eth1"]))["address"],
        "02:00:00:00:90:03"
    );
    assert!(a.ping("10.90.0.3"));
    let ports = host.ipj(&["link", "show", "master", &br]);
    assert_eq!(link_names(&ports).len(), 2, "{ports}");
}

#[test]
fn apply_refuses_a_bad_file_before_changing_anything() {
    let host = Ns::new("ph");
    let a = Container::new();
    let dir = std::env::temp_dir().join(unique("pa"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        format!(
            "[[attach]]\ncontainer = \"{}\"\nhost = \"brx1\"\naddr = \"10.91.0.2/24\"\n\n\
             [[attach]]\ncontainer = \"{}\"\nhost = \"brx1\"\naddr = \"10.91.0.3\"\n",
            a.pid, a.pid
        ),
    )
    .unwrap();
    let o = host.pipe(&["apply", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_fails(&o, 2, "no prefix length");
    assert_eq!(host.links(), ["lo"]);
    assert_eq!(a.links(), ["lo"]);
}

#[test]
fn apply_runs_independent_entries_together_and_reports_them_in_file_order() {
    let host = Ns::new("ph");
    let br = unique("br");
    host.ip(&["link", "add", &br, "type", "bridge"]);
    host.ip(&["link", "set", &br, "up"]);
    let cs: Vec<Container> = (0..6).map(|_| Container::new()).collect();
    let mut toml = String::new();
    for (i, c) in cs.iter().enumerate() {
        toml += &format!(
            "[[attach]]\ncontainer = \"{}\"\nhost = \"{br}\"\naddr = \"10.92.0.{}/24\"\n\n",
            c.pid,
            2 + i
        );
    }
    // The first container again, second interface: after its eth1, in order.
    toml += &format!(
        "[[attach]]\ncontainer = \"{}\"\nhost = \"{br}\"\naddr = \"10.92.0.20/24@10.92.0.1\"\nifname = \"eth2\"\n",
        cs[0].pid
    );
    let dir = std::env::temp_dir().join(unique("pa"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("attachments.toml");
    std::fs::write(&file, toml).unwrap();

    let o = host.pipe(&["apply", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("7 attached, 0 already attached, 0 failed"),
        "{out}"
    );
    // One line per entry, in the file's order.
    let lines: Vec<&str> = out.lines().collect();
    for (i, c) in cs.iter().enumerate() {
        assert!(
            lines[i].starts_with(&format!("{} eth1 ", c.pid)),
            "line {i}: {out}"
        );
    }
    assert!(
        lines[6].starts_with(&format!("{} eth2 ", cs[0].pid)),
        "{out}"
    );
    let r = cs[0].ip(&["route", "show", "default"]);
    assert!(r.contains("via 10.92.0.1 dev eth2"), "{r}");
    assert!(cs[5].ping("10.92.0.2"));
    let ports = host.ipj(&["link", "show", "master", &br]);
    assert_eq!(link_names(&ports).len(), 7, "{ports}");
}
