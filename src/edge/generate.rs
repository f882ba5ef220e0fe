//! Man pages and shell completions, generated from the clap definitions.
//! `tests/generated.rs` fails when the committed copies are stale.
//!
//! `pipe(1)` documents the attach form and lists the verbs; every verb that is
//! not hidden gets its own page, `pipe-VERB(1)`, so a new verb gets a page by
//! being added to `cli::Command`. Hidden verbs (`__dhcp-keeper`) appear
//! nowhere: not in a page, not in a completion script.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::edge::cli::{Cli, Generate};

/// Files pipe installs besides its binary, named in pipe(1)'s FILES section.
const FILES: &str = "\
.SH FILES
.TP
\\fI/etc/pipe/attachments.toml\\fR
The attachments that \\fBpipe watch\\fR keeps applied (see \\fBpipe\\-watch\\fR(1)).
.TP
\\fI/run/pipe\\fR
Records of what pipe created (\\fB\\-\\-state\\-dir\\fR, \\fBPIPE_STATE_DIR\\fR).
.TP
\\fI/usr/lib/cni/pipe\\fR
A link to \\fBpipe\\fR: run with \\fBCNI_COMMAND\\fR set, pipe acts as a CNI plugin.
.TP
\\fI/lib/systemd/system/pipe\\-watch.service\\fR
\\fBpipe watch\\fR as a systemd service (Type=notify): \\fBsystemctl enable \\-\\-now pipe\\-watch\\fR.
";

pub fn render(what: Generate) -> Vec<u8> {
    match what {
        Generate::Man => main_page(),
        Generate::Bash => completion(Shell::Bash),
        Generate::Zsh => completion(Shell::Zsh),
        Generate::Fish => completion(Shell::Fish),
    }
}

/// Every generated file: its path in the repository and its contents.
pub fn files() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> =
        [Generate::Man, Generate::Bash, Generate::Zsh, Generate::Fish]
            .into_iter()
            .map(|g| (path(g).to_string(), render(g)))
            .collect();
    out.extend(
        verb_pages()
            .into_iter()
            .map(|(name, page)| (format!("man/{name}.1"), page)),
    );
    out
}

/// Where each generated file lives in the repository (the verb pages are
/// man/pipe-VERB.1, see `files`).
pub fn path(what: Generate) -> &'static str {
    match what {
        Generate::Man => "man/pipe.1",
        Generate::Bash => "completions/pipe.bash",
        Generate::Zsh => "completions/_pipe",
        Generate::Fish => "completions/pipe.fish",
    }
}

/// The names of the hidden verbs (which must appear in no generated file).
pub fn hidden_verbs() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

fn built() -> clap::Command {
    let mut cmd = Cli::command();
    // Building propagates the global options to the verbs and names them
    // `pipe-VERB` (page title) and `pipe VERB` (synopsis).
    cmd.build();
    cmd
}

/// pipe(1): the attach form, the verbs (each pointing to its page), FILES.
fn main_page() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(built())
        .render(&mut out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(FILES.as_bytes());
    let see: Vec<String> = visible_verbs(&built())
        .map(|s| format!("\\fBpipe\\-{}\\fR(1)", s.get_name()))
        .collect();
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", see.join(", ")).as_bytes());
    out
}

/// pipe-VERB(1) for every verb that is not hidden: (pipe-VERB, page).
fn verb_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = built();
    visible_verbs(&cmd)
        .map(|sub| {
            let man = clap_mangen::Man::new(sub.clone())
                .source(concat!("pipe ", env!("CARGO_PKG_VERSION")));
            let mut page = Vec::new();
            man.render(&mut page).expect("writing to a Vec cannot fail");
            page.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBpipe\\fR(1)\n");
            (format!("pipe-{}", sub.get_name()), page)
        })
        .collect()
}

fn visible_verbs(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// A completion script for a command line without the hidden verbs
/// (clap_complete lists hidden subcommands; hidden options it leaves out).
fn completion(shell: Shell) -> Vec<u8> {
    let full = Cli::command();
    let mut cmd = clap::Command::new("pipe")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true)
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true);
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    for a in full.get_arguments() {
        cmd = cmd.arg(a.clone());
    }
    for s in visible_verbs(&full) {
        cmd = cmd.subcommand(s.clone());
    }
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pipe", &mut out);
    out
}
