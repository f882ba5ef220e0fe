//! Man pages and shell completions, generated from the clap definitions.
//! `tests/generated.rs` fails when the committed copies are stale.
//!
//! `pipe(1)` documents the attach form and lists the verbs; every verb that is
//! not hidden gets its own page, `pipe-VERB(1)`, so a new verb gets a page by
//! being added to `cli::Command`. Hidden verbs (`__dhcp-keeper`) and options
//! (`--generate`) appear nowhere: not in a page, not in a completion script. The scripts
//! call back `pipe __complete` (not a clap verb, see `edge::complete`) for the names of
//! interfaces, containers and netns.

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

/// A completion script for a command line without the hidden verbs and options
/// (clap_complete lists hidden subcommands, and bash's lists hidden options too),
/// which asks `pipe __complete` (see `edge::complete`) for the names of the HOST_IF
/// and GUEST slots: interfaces, netns names, running containers.
fn completion(shell: Shell) -> Vec<u8> {
    let script = String::from_utf8(static_completion(shell)).expect("clap_complete writes UTF-8");
    let out = match shell {
        Shell::Bash => format!("{script}{BASH_NAMES}"),
        Shell::Zsh => zsh_names(&script),
        Shell::Fish => format!("{script}{FISH_NAMES}"),
        _ => script,
    };
    out.into_bytes()
}

/// bash has no notion of slots: the whole line goes to `pipe __complete line`, which
/// answers only in a HOST_IF or GUEST slot; its names join the verbs clap offers there.
const BASH_NAMES: &str = r#"
# HOST_IF and GUEST: interface, netns and container names, from pipe itself.
_pipe_names() {
    _pipe "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}"
    [[ $cur == -* ]] && return 0
    local IFS=$'\n' w keep=() names
    names=($(command pipe __complete line "${COMP_WORDS[@]:0:COMP_CWORD+1}" 2>/dev/null))
    ((${#names[@]})) || return 0
    for w in "${COMPREPLY[@]}"; do [[ $w == -* ]] || keep+=("$w"); done
    COMPREPLY=("${keep[@]}" "${names[@]}")
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _pipe_names -o nosort -o bashdefault -o default pipe
else
    complete -F _pipe_names -o bashdefault -o default pipe
fi
"#;

/// fish: the tokens before the cursor and the current one (quoted: one argument even
/// when empty); nothing comes back outside a HOST_IF or GUEST slot.
const FISH_NAMES: &str = r#"
# HOST_IF and GUEST: interface, netns and container names, from pipe itself.
function __fish_pipe_names
    set -l cur (commandline -ct)
    command pipe __complete line (commandline -opc) "$cur" 2>/dev/null
end
complete -c pipe -a '(__fish_pipe_names)'
"#;

/// zsh's _arguments knows the slots: the HOST_IF and GUEST specs call a helper instead
/// of `_default`.
const ZSH_HELPER: &str = r#"(( $+functions[_pipe__names] )) ||
_pipe__names() {
    local -a names
    names=(${(f)"$(command pipe __complete $1 "$PREFIX" 2>/dev/null)"})
    compadd -a names
}

"#;

fn zsh_names(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + ZSH_HELPER.len());
    for line in script.split_inclusive('\n') {
        let spec = line.trim_start_matches('\'').trim_start_matches(':');
        let kind = if spec.starts_with("host_if -- ") {
            Some("host-if")
        } else if spec.starts_with("guest -- ")
            || spec.starts_with("guest_a -- ")
            || spec.starts_with("guest_b -- ")
        {
            Some("guest")
        } else {
            None
        };
        match kind {
            Some(k) if line.starts_with('\'') && line.contains(":_default' ") => {
                out.push_str(&line.replace(":_default' ", &format!(":_pipe__names {k}' ")))
            }
            _ => {
                if line.starts_with("if [ \"$funcstack[1]\" = \"_pipe\" ]; then") {
                    out.push_str(ZSH_HELPER);
                }
                out.push_str(line)
            }
        }
    }
    out
}

fn static_completion(shell: Shell) -> Vec<u8> {
    let full = Cli::command();
    let mut cmd = clap::Command::new("pipe")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true)
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true);
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    for a in full.get_arguments().filter(|a| !a.is_hide_set()) {
        cmd = cmd.arg(if a.is_positional() {
            // Their `required_unless_present_any` names the hidden --generate, left out.
            let mut p = clap::Arg::new(a.get_id().clone())
                .value_names(a.get_value_names().unwrap_or_default().to_vec())
                .required(false);
            if let Some(h) = a.get_help() {
                p = p.help(h.clone());
            }
            p
        } else {
            a.clone()
        });
    }
    for s in visible_verbs(&full) {
        cmd = cmd.subcommand(s.clone());
    }
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pipe", &mut out);
    out
}
