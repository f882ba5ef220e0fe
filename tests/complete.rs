//! Shell completion's dynamic names: `pipe __complete` (the callback the generated
//! scripts use) in a test namespace, with no Docker Engine, a wedged one and a fake one,
//! and the bash script itself driven as bash's programmable completion would.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// `pipe __complete ARGS` with DOCKER_HOST set, in namespace `ns` when given
/// (`ip netns exec` remounts /sys, so /sys/class/net is that namespace's).
fn complete(ns: Option<&Ns>, docker_host: &str, args: &[&str]) -> (Output, Duration) {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    c.arg("__complete")
        .args(args)
        .env("DOCKER_HOST", docker_host);
    let t = Instant::now();
    let o = c.output().unwrap();
    (o, t.elapsed())
}

fn lines(o: &Output) -> Vec<String> {
    assert!(o.status.success(), "{}", stderr(o));
    assert_eq!(stderr(o), "", "the completer must be silent");
    stdout(o).lines().map(String::from).collect()
}

const DEAD: &str = "unix:///nonexistent/pipe-test/docker.sock";

#[test]
fn host_if_lists_the_namespaces_interfaces_and_bridges() {
    let ns = Ns::new("ch");
    let br = unique("br");
    ns.ip(&["link", "add", &br, "type", "bridge"]);
    ns.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    let (o, _) = complete(Some(&ns), DEAD, &["host-if", "br"]);
    assert_eq!(lines(&o), [br.as_str()]);
    let (o, _) = complete(Some(&ns), DEAD, &["host-if", ""]);
    assert_eq!(lines(&o), [br.clone(), "uplink0".into(), "uplink1".into()]);
    // From the command line: the HOST_IF slot of attach and doctor, not elsewhere.
    for line in [
        &["pipe", "up"][..],
        &["pipe", "-i", "eth2", "--mtu", "1400", "up"],
        &["pipe", "doctor", "up"],
    ] {
        let mut args = vec!["line"];
        args.extend_from_slice(line);
        let (o, _) = complete(Some(&ns), DEAD, &args);
        assert_eq!(lines(&o), ["uplink0", "uplink1"], "{line:?}");
    }
    for line in [
        &["pipe", "-i", "up"][..],
        &["pipe", "--up"],
        &["pipe", br.as_str(), "web", "up"],
        &["pipe", "gc", "up"],
        &["pipe", "__dhcp-keeper", "up"],
    ] {
        let mut args = vec!["line"];
        args.extend_from_slice(line);
        let (o, _) = complete(Some(&ns), DEAD, &args);
        assert_eq!(lines(&o), Vec::<String>::new(), "{line:?}");
    }
}

#[test]
fn guest_lists_netns_names_fast_and_silent_without_docker() {
    let ns = Ns::new("cg");
    // No Engine at all: a socket path that does not exist.
    let (o, t) = complete(None, DEAD, &["guest", &ns.name]);
    assert_eq!(lines(&o), [ns.name.as_str()]);
    assert!(t < Duration::from_secs(1), "{t:?}");
    let (o, t) = complete(None, DEAD, &["guest", "zz-no-such-guest"]);
    assert_eq!(lines(&o), Vec::<String>::new());
    assert!(t < Duration::from_secs(1), "{t:?}");
    // The GUEST slot of the attach form and of the verbs.
    for line in [
        &["pipe", "br1", ns.name.as_str()][..],
        &["pipe", "detach", "-i", "eth1", &ns.name],
        &["pipe", "-n", "route", &ns.name],
        &["pipe", "link", "a", "10.0.0.1/32", &ns.name],
    ] {
        let mut args = vec!["line"];
        args.extend_from_slice(line);
        let (o, _) = complete(None, DEAD, &args);
        assert_eq!(lines(&o), [ns.name.as_str()], "{line:?}");
    }

    // A wedged Engine: the socket accepts connections and never answers.
    let dir = std::env::temp_dir().join(unique("pipe-cw"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("docker.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    let host = format!("unix://{}", sock.display());
    let (o, t) = complete(None, &host, &["guest", "zz-no-such-guest"]);
    eprintln!("wedged Engine: {t:?}");
    assert_eq!(lines(&o), Vec::<String>::new());
    assert!(t < Duration::from_secs(1), "{t:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn guest_lists_running_containers_from_the_engine() {
    // A fake Engine that answers GET /containers/json.
    let dir = std::env::temp_dir().join(unique("pipe-ce"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("docker.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = r#"[{"Id":"0123","Names":["/web-cmp"],"State":"running"},{"Id":"4567","Names":["/db-cmp"],"State":"running"}]"#;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&req).into_owned()
    });
    let host = format!("unix://{}", sock.display());
    let (o, t) = complete(None, &host, &["guest", ""]);
    let got = lines(&o);
    let req = server.join().unwrap();
    assert!(
        req.starts_with("GET ") && req.contains("/containers/json"),
        "{req}"
    );
    assert!(got.contains(&"web-cmp".to_string()), "{got:?}");
    assert!(got.contains(&"db-cmp".to_string()), "{got:?}");
    assert!(t < Duration::from_secs(1), "{t:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the generated bash script's completion function on a command line (the last
/// word is the one being completed) and return what it offers.
fn bash_offers(words: &[&str]) -> Vec<String> {
    let script = format!("{}/completions/pipe.bash", env!("CARGO_MANIFEST_DIR"));
    let dir = std::path::Path::new(BIN).parent().unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{script}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
         COMPREPLY=()\n\
         _pipe_names pipe \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" ")
    );
    let o = Command::new("bash")
        .args(["--norc", "-c", &prog])
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("DOCKER_HOST", DEAD)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_script_offers_names_and_never_hidden_verbs() {
    let ns = Ns::new("cb");
    let offered = bash_offers(&["pipe", ""]);
    assert!(offered.contains(&"detach".to_string()), "{offered:?}");
    let offered = bash_offers(&["pipe", "detach", &ns.name[..3]]);
    assert!(offered.contains(&ns.name), "{offered:?}");
    let offered = bash_offers(&["pipe", "-"]);
    assert!(offered.contains(&"--wait".to_string()), "{offered:?}");
    for words in [
        &["pipe", ""][..],
        &["pipe", "-"],
        &["pipe", "--"],
        &["pipe", "_"],
        &["pipe", "--ge"],
        &["pipe", "detach", ""],
    ] {
        let offered = bash_offers(words);
        for hidden in ["__dhcp-keeper", "__complete", "--generate"] {
            assert!(
                !offered.iter().any(|o| o == hidden),
                "{words:?} offers {hidden}: {offered:?}"
            );
        }
    }
}

#[test]
fn fish_and_zsh_scripts_offer_names() {
    let ns = Ns::new("cz");
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let run = |shell: &str, prog: &str| -> String {
        let o = Command::new(shell)
            .args(if shell == "fish" {
                ["--no-config", "-c", prog]
            } else {
                ["-f", "-c", prog]
            })
            .current_dir(root)
            .env("PATH", &path)
            .env("DOCKER_HOST", DEAD)
            .output()
            .unwrap_or_else(|e| {
                panic!("{shell}: {e}; install it (apt-get install zsh fish, as tests/run.sh does)")
            });
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        stdout(&o)
    };
    // fish: its own completion engine on whole command lines.
    let prefix = &ns.name[..4];
    let out = run(
        "fish",
        &format!(
            "source completions/pipe.fish; complete -C 'pipe detach {prefix}'; \
             echo ---; complete -C 'pipe -'; echo ---; complete -C 'pipe __'"
        ),
    );
    let parts: Vec<&str> = out.split("---\n").collect();
    assert!(parts[0].lines().any(|l| l == ns.name), "{out}");
    assert!(!parts[1].contains("--generate"), "{out}");
    assert!(parts[2].trim().is_empty(), "{out}");
    // zsh: the helper the HOST_IF and GUEST specs call (compadd stubbed to print).
    let out = run(
        "zsh",
        &format!(
            "compdef(){{}}; source completions/_pipe; compadd(){{ print -l ${{(P)2}} }}; \
             PREFIX={}; _pipe__names guest",
            ns.name
        ),
    );
    assert_eq!(out.trim(), ns.name, "{out}");
}
