//! Man page and shell completions, generated from the clap definitions.
//! `tests/generated.rs` fails when the committed copies are stale.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, Generate};

pub fn render(what: Generate) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match what {
        Generate::Man => {
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .expect("writing to a Vec cannot fail");
        }
        Generate::Bash | Generate::Zsh | Generate::Fish => {
            let shell = match what {
                Generate::Bash => Shell::Bash,
                Generate::Zsh => Shell::Zsh,
                _ => Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "pipe", &mut out);
        }
    }
    out
}

/// Where each generated file lives in the repository.
pub fn path(what: Generate) -> &'static str {
    match what {
        Generate::Man => "man/pipe.1",
        Generate::Bash => "completions/pipe.bash",
        Generate::Zsh => "completions/_pipe",
        Generate::Fish => "completions/pipe.fish",
    }
}
