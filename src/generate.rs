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
            clap_mangen::Man::new(cmd.clone())
                .render(&mut out)
                .expect("writing to a Vec cannot fail");
            subcommand_sections(&mut cmd, &mut out);
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

/// One section per subcommand at the end of the page (the page is the only
/// one installed, so the subcommands' options are documented in it).
fn subcommand_sections(cmd: &mut clap::Command, out: &mut Vec<u8>) {
    use std::fmt::Write;
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('-', "\\-")
            .replace('\'', "\\(aq")
            .lines()
            .map(|l| {
                if l.starts_with('.') {
                    format!("\\&{l}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    cmd.build();
    let mut s = String::new();
    for sub in cmd.get_subcommands_mut() {
        let name = sub.get_name().to_string();
        let usage = sub.render_usage().to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
        let _ = writeln!(s, ".SH \"PIPE {}\"", name.to_uppercase());
        let _ = writeln!(s, ".B {}", esc(usage));
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = writeln!(s, ".PP\n{}", esc(&about));
        for a in sub.get_arguments() {
            // Global options are documented once, at the top of the page.
            if a.is_hide_set() || a.is_global_set() || a.get_id() == "help" {
                continue;
            }
            let mut head = Vec::new();
            if let Some(c) = a.get_short() {
                head.push(format!("\\fB\\-{c}\\fR"));
            }
            if let Some(l) = a.get_long() {
                head.push(format!("\\fB{}\\fR", esc(&format!("--{l}"))));
            }
            let val = a
                .get_value_names()
                .map(|v| {
                    v.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let takes = a.get_num_args().is_some_and(|n| n.takes_values());
            let head = if head.is_empty() {
                format!("\\fI{}\\fR", esc(&val))
            } else if takes && !val.is_empty() {
                format!("{} \\fI{}\\fR", head.join(", "), esc(&val))
            } else {
                head.join(", ")
            };
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let def: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            let def = if def.is_empty() || !takes {
                String::new()
            } else {
                format!(" [default: {}]", def.join(", "))
            };
            let _ = writeln!(s, ".TP\n{head}\n{}{}", esc(&help), esc(&def));
        }
        if let Some(x) = sub.get_after_long_help().or(sub.get_after_help()) {
            let _ = writeln!(s, ".PP\n.nf\n{}\n.fi", esc(&x.to_string()));
        }
    }
    out.extend_from_slice(s.as_bytes());
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
