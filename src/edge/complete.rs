//! `pipe __complete`: the names a completion script cannot know in advance, asked back
//! by the generated bash, zsh and fish scripts (see `generate`). Not a clap verb: it is
//! taken off argv before parsing, so it is never offered, never needs root or a state
//! directory, and prints nothing but names (exit 0 whatever happens).
//!
//! - `pipe __complete host-if PREFIX`: host interfaces and bridges (for HOST_IF);
//! - `pipe __complete guest PREFIX`: netns names and running Docker containers (for GUEST);
//! - `pipe __complete line WORD...`: the command line up to the cursor (the last word is
//!   the one being completed); the names for the slot the cursor is in, if it is a
//!   HOST_IF or GUEST slot, else nothing. bash uses it (it has no notion of slots).

use std::io::Write;
use std::time::Duration;

use clap::CommandFactory;

use crate::edge::cli::Cli;

/// The hidden word that starts a completion request.
pub const VERB: &str = "__complete";

/// The most the Docker Engine may take (connection included): a shell waits for it.
pub const DOCKER_BUDGET: Duration = Duration::from_millis(300);

/// What a positional slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    HostIf,
    Guest,
}

/// The process for `pipe __complete ARGS`; returns the exit code (always 0).
pub fn main(args: &[String]) -> i32 {
    let (slot, prefix) = match args.split_first() {
        Some((k, rest)) if k == "host-if" => (Some(Slot::HostIf), first(rest)),
        Some((k, rest)) if k == "guest" => (Some(Slot::Guest), first(rest)),
        Some((k, rest)) if k == "line" => (slot(rest), rest.last().cloned().unwrap_or_default()),
        _ => (None, String::new()),
    };
    let names = match slot {
        Some(Slot::HostIf) => crate::sys::names::host_interfaces(),
        Some(Slot::Guest) => guests(),
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    for n in names.iter().filter(|n| n.starts_with(&prefix)) {
        // A closed pipe (the shell gave up) is not an error worth a word.
        if writeln!(out, "{n}").is_err() {
            break;
        }
    }
    0
}

fn first(rest: &[String]) -> String {
    rest.first().cloned().unwrap_or_default()
}

/// Netns names, then running containers, without duplicates.
fn guests() -> Vec<String> {
    let mut v = crate::sys::names::netns_names();
    let docker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(crate::sys::docker::container_names(DOCKER_BUDGET)))
        .unwrap_or_default();
    for n in docker {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v
}

/// Pure: which slot the last of `words` (`pipe ... CURRENT`) is in, from the clap
/// definitions: the verb, options and their values skipped, positionals counted.
pub fn slot(words: &[String]) -> Option<Slot> {
    let (current, before) = words.split_last()?;
    // Completing the program's own name, or an option.
    if before.is_empty() || current.starts_with('-') {
        return None;
    }
    let mut root = Cli::command();
    // Building propagates the global options (-n, -v, --json, --state-dir) to the verbs.
    root.build();
    let mut cmd = &root;
    let mut positionals = 0usize;
    let mut at_root = true;
    let mut only_positionals = false;
    let mut i = 1; // words[0] is the program
    while i < before.len() {
        let w = before[i].as_str();
        i += 1;
        if !only_positionals && w == "--" {
            only_positionals = true;
            continue;
        }
        if !only_positionals && let Some(long) = w.strip_prefix("--") {
            if !long.contains('=')
                && cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .is_some_and(takes_next)
            {
                i += 1;
            }
            continue;
        }
        if !only_positionals
            && let Some(shorts) = w.strip_prefix('-')
            && !shorts.is_empty()
        {
            // -vvn, -i eth2, -ieth2: only a value-taking last letter takes the next word.
            for (k, c) in shorts.char_indices() {
                if let Some(a) = cmd.get_arguments().find(|a| a.get_short() == Some(c))
                    && takes_next(a)
                {
                    if k + c.len_utf8() == shorts.len() {
                        i += 1;
                    }
                    break;
                }
            }
            continue;
        }
        if at_root
            && positionals == 0
            && let Some(sub) = root.find_subcommand(w)
        {
            if sub.is_hide_set() {
                return None;
            }
            cmd = sub;
            at_root = false;
            continue;
        }
        positionals += 1;
    }
    // The cursor is on an option's value (`-i <TAB>`): not a positional.
    if let Some(prev) = before.last().filter(|_| before.len() > 1)
        && is_value_of_option(cmd, prev)
    {
        return None;
    }
    let arg = cmd.get_positionals().nth(positionals)?;
    let name = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|s| s.as_str())
        .unwrap_or("");
    match name {
        "HOST_IF" => Some(Slot::HostIf),
        n if n.starts_with("GUEST") => Some(Slot::Guest),
        _ => None,
    }
}

/// An option that takes the next word as its value (not `--wait[=WHAT]`).
fn takes_next(a: &clap::Arg) -> bool {
    a.get_action().takes_values()
        && !a.is_require_equals_set()
        && a.get_num_args().is_none_or(|n| n.min_values() > 0)
}

fn is_value_of_option(cmd: &clap::Command, prev: &str) -> bool {
    if let Some(long) = prev.strip_prefix("--") {
        return !long.contains('=')
            && cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .is_some_and(takes_next);
    }
    match prev.strip_prefix('-').and_then(|s| s.chars().last()) {
        Some(c) if prev.len() > 1 && !prev.starts_with("--") => cmd
            .get_arguments()
            .find(|a| a.get_short() == Some(c))
            .is_some_and(takes_next),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: &str) -> Option<Slot> {
        let mut w: Vec<String> = line.split(' ').map(String::from).collect();
        if line.ends_with(' ') {
            w.pop();
            w.push(String::new());
        }
        slot(&w)
    }

    #[test]
    fn slots_of_the_attach_form_and_the_verbs() {
        assert_eq!(at("pipe "), Some(Slot::HostIf));
        assert_eq!(at("pipe br"), Some(Slot::HostIf));
        assert_eq!(at("pipe br1 "), Some(Slot::Guest));
        assert_eq!(at("pipe br1 web "), None);
        assert_eq!(at("pipe -i eth2 br1 w"), Some(Slot::Guest));
        assert_eq!(at("pipe -ieth2 br1 w"), Some(Slot::Guest));
        assert_eq!(at("pipe --mtu 1400 "), Some(Slot::HostIf));
        assert_eq!(at("pipe --dry-run -v br1 "), Some(Slot::Guest));
        assert_eq!(at("pipe --wait=addr "), Some(Slot::HostIf));
        assert_eq!(at("pipe -i "), None, "the value of -i");
        assert_eq!(at("pipe --timeout "), None);
        assert_eq!(at("pipe --"), None);
        assert_eq!(at("pipe detach "), Some(Slot::Guest));
        assert_eq!(at("pipe detach -i eth1 w"), Some(Slot::Guest));
        assert_eq!(at("pipe detach web "), None);
        assert_eq!(at("pipe -n route "), Some(Slot::Guest));
        assert_eq!(at("pipe route web add "), None);
        assert_eq!(at("pipe link a 10.0.0.1/32 "), Some(Slot::Guest));
        assert_eq!(at("pipe link a "), None);
        assert_eq!(at("pipe doctor "), Some(Slot::HostIf));
        assert_eq!(at("pipe doctor eth0 "), Some(Slot::Guest));
        assert_eq!(at("pipe list "), Some(Slot::Guest));
        assert_eq!(at("pipe --state-dir /x tc "), Some(Slot::Guest));
        assert_eq!(at("pipe gc "), None);
        assert_eq!(at("pipe __dhcp-keeper "), None);
        assert_eq!(at(""), None);
    }
}
