//! man/ and completions/ are generated from the clap definitions; this fails
//! when the committed copies are stale. Regenerate with
//! `PIPE_REGENERATE=1 cargo test --test generated`.

use std::collections::BTreeSet;
use std::path::Path;

use pipe::edge::cli::Generate;
use pipe::edge::generate::{files, hidden_verbs, render};

#[test]
fn man_pages_and_completions_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regen = std::env::var_os("PIPE_REGENERATE").is_some();
    let mut stale = Vec::new();
    let want = files();
    for (rel, text) in &want {
        let p = root.join(rel);
        if regen {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        } else if std::fs::read(&p).ok().as_deref() != Some(&text[..]) {
            stale.push(rel.clone());
        }
    }
    // A page of a verb that is gone (or now hidden) is stale too.
    let wanted: BTreeSet<&str> = want.iter().map(|(r, _)| r.as_str()).collect();
    for dir in ["man", "completions"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let rel = format!("{dir}/{}", e.unwrap().file_name().to_string_lossy());
            if !wanted.contains(rel.as_str()) {
                if regen {
                    std::fs::remove_file(root.join(&rel)).unwrap();
                } else {
                    stale.push(rel);
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run PIPE_REGENERATE=1 cargo test --test generated"
    );
}

#[test]
fn every_verb_has_a_page_and_hidden_verbs_appear_nowhere() {
    let all = files();
    let names: BTreeSet<&str> = all.iter().map(|(r, _)| r.as_str()).collect();
    for verb in [
        "detach", "gc", "watch", "apply", "link", "route", "rule", "tc", "list", "doctor",
    ] {
        let page = format!("man/pipe-{verb}.1");
        assert!(names.contains(page.as_str()), "no {page} in {names:?}");
        let text =
            String::from_utf8_lossy(&all.iter().find(|(r, _)| *r == page).unwrap().1).into_owned();
        assert!(
            text.contains(&format!("\n.TH pipe-{verb} 1 ")),
            "{page}: {}",
            &text[..80]
        );
        // pipe(1) points to it.
        let main = String::from_utf8_lossy(&render(Generate::Man)).into_owned();
        assert!(
            main.contains(&format!("pipe\\-{verb}(1)")),
            "pipe.1 does not cite pipe-{verb}(1)"
        );
    }
    let hidden = hidden_verbs();
    assert!(hidden.contains(&"__dhcp-keeper".to_string()), "{hidden:?}");
    // The hidden option neither.
    for (rel, text) in &all {
        let text = String::from_utf8_lossy(text);
        assert!(
            !text.contains("--generate") && !text.contains("\\-\\-generate"),
            "--generate appears in {rel}"
        );
    }
    for h in &hidden {
        // roff escapes '-' as "\-".
        let roff = h.replace('-', "\\-");
        for (rel, text) in &all {
            let text = String::from_utf8_lossy(text);
            assert!(
                !text.contains(h.as_str()) && !text.contains(&roff),
                "hidden verb {h} appears in {rel}"
            );
        }
    }
}

#[test]
fn completion_scripts_ask_pipe_for_names_only_through_the_callback() {
    // `pipe __complete` is not a clap verb (nothing offers it); the scripts call it
    // for the HOST_IF and GUEST slots, and mention it nowhere else.
    for g in [Generate::Bash, Generate::Zsh, Generate::Fish] {
        let text = String::from_utf8(render(g)).unwrap();
        let calls = text.matches("command pipe __complete ").count();
        assert_eq!(calls, 1, "{g:?}: {calls} callbacks");
        assert_eq!(text.matches("__complete").count(), 1, "{g:?}");
    }
    let zsh = String::from_utf8(render(Generate::Zsh)).unwrap();
    assert!(zsh.contains(":_pipe__names host-if' "), "zsh HOST_IF slot");
    assert!(zsh.contains(":_pipe__names guest' "), "zsh GUEST slot");
    for l in zsh.lines().filter(|l| {
        ["host_if", "guest", "guest_a", "guest_b"].iter().any(|id| {
            l.starts_with(&format!("'{id} -- "))
                || l.starts_with(&format!("'::{id} -- "))
                || l.starts_with(&format!("':{id} -- "))
        })
    }) {
        assert!(l.contains(":_pipe__names "), "zsh slot without names: {l}");
    }
}

#[test]
fn hidden_generate_flag_prints_the_same() {
    for (what, g) in [("bash", Generate::Bash), ("man", Generate::Man)] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["--generate", what])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout, render(g), "--generate {what}");
    }
}
