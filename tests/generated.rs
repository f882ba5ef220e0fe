//! man/ and completions/ are generated from the clap definitions; this fails
//! when the committed copies are stale. Regenerate with
//! `PIPE_REGENERATE=1 cargo test --test generated`.

use pipe::cli::Generate;
use pipe::generate::{path, render};

#[test]
fn man_page_and_completions_are_fresh() {
    let root = env!("CARGO_MANIFEST_DIR");
    let regen = std::env::var_os("PIPE_REGENERATE").is_some();
    let mut stale = Vec::new();
    for g in [Generate::Man, Generate::Bash, Generate::Zsh, Generate::Fish] {
        let p = std::path::Path::new(root).join(path(g));
        let want = render(g);
        if regen {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &want).unwrap();
        } else if std::fs::read(&p).ok().as_deref() != Some(&want[..]) {
            stale.push(path(g));
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run PIPE_REGENERATE=1 cargo test --test generated"
    );
}

#[test]
fn hidden_generate_flag_prints_the_same() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["--generate", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, render(Generate::Bash));
}
