//! The process edge: argv in, one line (and with `--json` one JSON object) out.
//!
//! - Options given before a verb (`pipe --state-dir X gc`, `pipe -n route ...`)
//!   are moved after it, so options may appear anywhere for every verb.
//! - clap's errors keep their content (what is missing, the allowed values,
//!   the conflicting option) but fit on one line.
//! - Control characters in messages are escaped: an error is exactly one line.
//! - With `--json`, an error is also one JSON object on stdout.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::edge::cli::Cli;

/// The process: a CNI plugin when a runtime execs it with CNI_COMMAND set (and
/// no arguments), else the command line. Returns the exit code.
pub fn main_entry() -> i32 {
    if crate::edge::cni::invoked() {
        return crate::edge::cni::main();
    }
    let mut args = std::env::args_os().skip(1);
    if args
        .next()
        .is_some_and(|a| a == crate::edge::complete::VERB)
    {
        let words: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return crate::edge::complete::main(&words);
    }
    cli_main()
}

/// Parse the command line, run, print; returns the process exit code.
fn cli_main() -> i32 {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&argv);
    let cli = match parse_plain(&argv).or_else(|| parse_attach_form(&argv)) {
        Some(c) => c,
        None => match parse(argv) {
            Ok(c) => c,
            Err(e) => return clap_error(e, json),
        },
    };
    crate::edge::run::init_logging(cli.top.verbose);
    match crate::edge::run::run(cli) {
        Ok(()) => 0,
        Err(e) => fail(&e.to_string(), e.exit_code(), json),
    }
}

/// The whole grammar: verbs after options are moved first, then clap parses.
fn parse(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    // One command tree for both the hoisting scan and the parse.
    let cmd = Cli::command();
    let argv = hoist_verb(&cmd, argv);
    parse_with(cmd, argv)
}

/// The plain attach form, read without clap: the three or four positionals
/// and the options scripts pass most (`-i`, `-l`, `--mtu`, `--state-dir`,
/// `-n`, `-v`, `--json`, `--no-netns-link`, `--persist`), each option its own
/// word and given once (`-v` may repeat). Building even the attach form's
/// clap tree was the largest share of pipe's own start-up
/// (`docs/performance.md`). Anything else (a verb, `help`, another option,
/// `--opt=value`, a value that does not convert, an empty `PIPE_STATE_DIR`)
/// is `None` and goes to clap. Where this accepts, the whole grammar gives
/// the same (`tests`: `plain_and_attach_forms_parse_as_the_whole_grammar`).
fn parse_plain(argv: &[OsString]) -> Option<Cli> {
    use crate::edge::cli::{Command, DEFAULT_IFNAME, DEFAULT_STATE_DIR, Top};
    use clap::Subcommand;
    let mut pos: Vec<&str> = Vec::with_capacity(4);
    let (mut ifname, mut host_ifname, mut mtu, mut state_dir) = (None, None, None, None);
    let (mut dry_run, mut json, mut no_link, mut persist, mut verbose) =
        (false, false, false, false, 0u8);
    let mut words = argv.iter().skip(1);
    // An option's value: the next word, which must not look like an option.
    fn value<'a>(slot: &mut Option<&'a str>, next: Option<&'a OsString>) -> Option<()> {
        let v = next?.to_str()?;
        if slot.is_some() || v.starts_with('-') {
            return None;
        }
        *slot = Some(v);
        Some(())
    }
    let once = |flag: &mut bool| -> Option<()> { (!std::mem::replace(flag, true)).then_some(()) };
    while let Some(w) = words.next() {
        let w = w.to_str()?;
        match w {
            "-i" | "--container-ifname" => value(&mut ifname, words.next())?,
            "-l" | "--host-ifname" => value(&mut host_ifname, words.next())?,
            "--mtu" => value(&mut mtu, words.next())?,
            "--state-dir" => value(&mut state_dir, words.next())?,
            "-n" | "--dry-run" => once(&mut dry_run)?,
            "--json" => once(&mut json)?,
            "--no-netns-link" => once(&mut no_link)?,
            "--persist" => once(&mut persist)?,
            "-v" | "--verbose" => verbose = verbose.checked_add(1)?,
            _ if w.is_empty() || w.starts_with('-') || w == "help" => return None,
            _ if Command::has_subcommand(w) || pos.len() == 4 => return None,
            _ => pos.push(w),
        }
    }
    if pos.len() < 3 {
        return None;
    }
    let state_dir = match state_dir {
        Some(d) => d.into(),
        None => match std::env::var_os("PIPE_STATE_DIR") {
            Some(d) if d.is_empty() => return None,
            Some(d) => d.into(),
            None => DEFAULT_STATE_DIR.into(),
        },
    };
    let top = Top {
        host_if: Some(pos[0].parse().ok()?),
        guest: Some(pos[1].parse().ok()?),
        addr: Some(pos[2].parse().ok()?),
        mac_vlan: pos.get(3).map(|m| m.parse()).transpose().ok()?,
        ifname: ifname.unwrap_or(DEFAULT_IFNAME).parse().ok()?,
        host_ifname: host_ifname.map(str::parse).transpose().ok()?,
        family: None,
        mtu: mtu.map(crate::domain::spec::parse_mtu).transpose().ok()?,
        rate: None,
        macvlan_mode: None,
        ipvlan: None,
        direct_phys: false,
        host_shim: false,
        dry_run,
        verbose,
        json,
        no_netns_link: no_link,
        timeout: None,
        wait: None,
        persist,
        state_dir,
        generate: None,
    };
    Some(Cli { command: None, top })
}

/// The attach form, parsed without building the verbs' part of clap's tree:
/// `None` when a word could name a verb, or when anything is not accepted as
/// it stands (help, version, any error), which [`parse`] then handles with the
/// whole grammar and its messages. Where this accepts, `parse` gives the same
/// (`tests`: `plain_and_attach_forms_parse_as_the_whole_grammar`).
fn parse_attach_form(argv: &[OsString]) -> Option<Cli> {
    use crate::edge::cli::{AttachCli, Command, Top};
    use clap::Subcommand;
    if argv
        .iter()
        .skip(1)
        .any(|a| a.to_str().is_none_or(Command::has_subcommand))
    {
        return None;
    }
    let top: Top = parse_with(AttachCli::command(), argv).ok()?;
    Some(Cli { command: None, top })
}

/// Parse `argv` with `cmd` into `T`. What is left of the matches, and the
/// command tree, are freed with the process rather than taken apart piece by
/// piece (a tenth of an attach, `docs/performance.md`).
fn parse_with<T: clap::FromArgMatches>(
    mut cmd: clap::Command,
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<T, clap::Error> {
    let parsed = cmd.try_get_matches_from_mut(argv).and_then(|mut m| {
        let t = T::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd));
        std::mem::forget(m);
        t
    });
    std::mem::forget(cmd);
    parsed
}

/// Print one error: `pipe: MSG` on stderr, and with `--json` also
/// `{"error": MSG, "kind": "usage"|"failure", "exit_code": N}` on stdout.
pub fn fail(msg: &str, code: i32, json: bool) -> i32 {
    let msg = escape(msg);
    if json {
        let kind = if code == 2 { "usage" } else { "failure" };
        println!(
            "{}",
            serde_json::json!({"error": msg, "kind": kind, "exit_code": code})
        );
    }
    eprintln!("pipe: {msg}");
    code
}

/// `--json` among the options (before any `--`).
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Escape control characters (newlines, escapes, NUL...) so that a message
/// stays one line and cannot drive the terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            // Bidirectional overrides and line/paragraph separators reorder or
            // break what the terminal shows.
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Move the options written before a verb to just after it:
/// `pipe -n --state-dir X route web add ...` -> `pipe route -n --state-dir X web add ...`.
/// Anything the scan does not understand is left for clap to report.
pub fn hoist_verb(cmd: &clap::Command, argv: Vec<OsString>) -> Vec<OsString> {
    // `--wait[=WHAT]` takes its value only after '='.
    let takes_value = |a: &clap::Arg| a.get_action().takes_values() && !a.is_require_equals_set();
    let mut i = 1;
    while i < argv.len() {
        let Some(a) = argv[i].to_str() else {
            return argv;
        };
        if a == "--" {
            return argv;
        }
        if let Some(long) = a.strip_prefix("--") {
            if long.contains('=') {
                i += 1;
                continue;
            }
            match cmd.get_arguments().find(|x| x.get_long() == Some(long)) {
                Some(x) if takes_value(x) => i += 2,
                Some(_) => i += 1,
                None => return argv,
            }
            continue;
        }
        if let Some(shorts) = a.strip_prefix('-')
            && !shorts.is_empty()
        {
            let n = shorts.chars().count();
            let mut skip = 1;
            for (k, c) in shorts.chars().enumerate() {
                match cmd.get_arguments().find(|x| x.get_short() == Some(c)) {
                    Some(x) if takes_value(x) => {
                        if k + 1 == n {
                            skip = 2;
                        }
                        break;
                    }
                    Some(_) => {}
                    None => return argv,
                }
            }
            i += skip;
            continue;
        }
        // The first positional word: a verb when it names one.
        if i > 1 && cmd.find_subcommand(a).is_some() {
            let mut out = Vec::with_capacity(argv.len());
            out.push(argv[0].clone());
            out.push(argv[i].clone());
            out.extend(argv[1..i].iter().cloned());
            out.extend(argv[i + 1..].iter().cloned());
            return out;
        }
        return argv;
    }
    argv
}

/// clap's help and version go out as they are; its errors become one line.
fn clap_error(e: clap::Error, json: bool) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            0
        }
        _ => fail(&clap_message(&e), 2, json),
    }
}

fn strings(v: Option<&clap::error::ContextValue>) -> Vec<String> {
    use clap::error::ContextValue as V;
    match v {
        Some(V::String(s)) => vec![s.clone()],
        Some(V::Strings(v)) => v.clone(),
        Some(V::StyledStr(s)) => vec![s.to_string()],
        Some(V::StyledStrs(v)) => v.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// The first usage line clap would print, without "Usage: ".
fn usage_line(e: &clap::Error) -> Option<String> {
    let u = strings(e.get(clap::error::ContextKind::Usage));
    let u = u.first()?;
    let first = u.lines().next()?.trim();
    Some(
        first
            .strip_prefix("Usage:")
            .unwrap_or(first)
            .trim()
            .to_string(),
    )
}

/// One line that keeps everything clap said: what is missing, the allowed
/// values, the conflicting argument, the suggestion.
pub fn clap_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ErrorKind};
    let invalid = strings(e.get(ContextKind::InvalidArg));
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(a) = invalid.first()
    {
        let flag = a.split('=').next().unwrap_or(a);
        if flag == "--save" || flag == "--restore" {
            return format!(
                "pipe has no {flag}: list the attachments in a file ([[attach]] tables, see pipe watch --help) \
                 and run `pipe apply FILE` to apply them, or `pipe watch --file FILE` (or attach with --persist) \
                 to apply them again each time the container starts"
            );
        }
    }
    if e.kind() == ErrorKind::MissingRequiredArgument && !invalid.is_empty() {
        let names: Vec<String> = invalid
            .iter()
            .map(|s| s.trim_start_matches('<').trim_end_matches('>').to_string())
            .collect();
        return match usage_line(e) {
            Some(u) => format!("missing {} (usage: {u})", names.join(", ")),
            None => format!("missing {}; see pipe --help", names.join(", ")),
        };
    }
    let text = e.render().to_string();
    let mut out = String::new();
    let mut after_colon = false;
    let mut first_item = true;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("Usage:") || t.starts_with("For more information") {
            break;
        }
        let t = t.strip_prefix("error: ").unwrap_or(t);
        if out.is_empty() {
            out.push_str(t);
        } else if after_colon {
            out.push_str(if first_item { " " } else { ", " });
            out.push_str(t);
            first_item = false;
            continue;
        } else {
            out.push_str("; ");
            out.push_str(t);
        }
        after_colon = t.ends_with(':');
        first_item = true;
    }
    if out.is_empty() {
        out.push_str("invalid arguments");
    }
    match (e.kind(), usage_line(e)) {
        (ErrorKind::ArgumentConflict, Some(u)) => format!("{out} (usage: {u})"),
        _ => format!("{out} (see pipe --help)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoist(args: &[&str]) -> Vec<String> {
        let argv = std::iter::once("pipe")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        hoist_verb(&Cli::command(), argv)
            .into_iter()
            .skip(1)
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn err(args: &[&str]) -> String {
        let argv: Vec<OsString> = std::iter::once("pipe")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let argv = hoist_verb(&Cli::command(), argv);
        let e = <Cli as clap::Parser>::try_parse_from(argv).unwrap_err();
        clap_message(&e)
    }

    /// Where the plain form's or the attach form's parse accepts a command
    /// line, the whole grammar gives the same; help, version and verbs go to
    /// the whole grammar.
    #[test]
    fn plain_and_attach_forms_parse_as_the_whole_grammar() {
        let hosts = ["br1", "eth0", "mac:02:00:00:00:00:01", "gc"];
        let guests = ["web", "1234", "/proc/1/ns/net", "list"];
        let addrs = [
            "10.0.0.5/24",
            "10.0.0.5/24@10.0.0.1",
            "dhcp",
            "0/0",
            "fd00::5/64",
        ];
        let tails = ["U:web", "02:00:00:00:00:01@100", "@100"];
        let opts: [&[&str]; 33] = [
            &["-i", "eth2"],
            &["--container-ifname", "eth3"],
            &["--host-ifname", "vy"],
            &["-l", "-x"],
            &["-i", "bad/name"],
            &["--mtu=1400"],
            &["--mtu", "-1"],
            &["--dry-run"],
            &["--verbose"],
            &["-v", "-v"],
            &["--state-dir", "rel"],
            &["-i"],
            &["-l", "vx"],
            &["--mtu", "1400"],
            &["--rate", "10mbit"],
            &["-n"],
            &["--json"],
            &["-v"],
            &["-vv"],
            &["--no-netns-link"],
            &["--persist"],
            &["--ipvlan", "l3"],
            &["--host-shim"],
            &["--macvlan-mode", "vepa"],
            &["--timeout", "2.5"],
            &["--state-dir", "/tmp/s"],
            &["--wait=carrier"],
            &["-a", "4"],
            &["--direct-phys"],
            &["--mtu", "1"],
            &["--timeout", "x"],
            &["--generate", "man"],
            &["-nv"],
        ];
        let noise = [
            "--",
            "-h",
            "--help",
            "-V",
            "--version",
            "-nh",
            "detach",
            "--bogus",
            "",
            "x",
            "help",
            "-",
        ];
        // A fixed pseudo-random walk: 20,000 command lines, mostly of the attach
        // form with options anywhere, some with a stray word.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut plain, mut fast, mut full) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut words: Vec<&str> = vec![
                hosts[next(hosts.len())],
                guests[next(guests.len())],
                addrs[next(addrs.len())],
            ];
            if next(2) == 0 {
                words.push(tails[next(tails.len())]);
            }
            for _ in 0..next(4) {
                let at = next(words.len() + 1);
                for (k, w) in opts[next(opts.len())].iter().enumerate() {
                    words.insert(at + k, w);
                }
            }
            if next(4) == 0 {
                let at = next(words.len() + 1);
                words.insert(at, noise[next(noise.len())]);
            }
            let argv: Vec<OsString> = std::iter::once("pipe")
                .chain(words)
                .map(OsString::from)
                .collect();
            if let Some(c) = parse_plain(&argv) {
                plain += 1;
                let whole = parse(argv.clone()).unwrap_or_else(|e| {
                    panic!("{argv:?}: plain form accepted, whole grammar refused: {e}")
                });
                assert_eq!(format!("{c:?}"), format!("{whole:?}"), "{argv:?}");
            }
            match parse_attach_form(&argv) {
                Some(c) => {
                    fast += 1;
                    let whole = parse(argv.clone()).unwrap_or_else(|e| {
                        panic!("{argv:?}: attach form accepted, whole grammar refused: {e}")
                    });
                    assert_eq!(format!("{c:?}"), format!("{whole:?}"), "{argv:?}");
                }
                None => full += 1,
            }
        }
        assert!(
            plain > 2000 && fast > 5000 && full > 1000,
            "plain {plain}, fast {fast}, full {full}"
        );
        let plain: Vec<OsString> = ["pipe", "br1", "web", "10.0.0.5/24@10.0.0.1"]
            .map(OsString::from)
            .to_vec();
        assert!(parse_plain(&plain).is_some());
        assert!(parse_attach_form(&plain).is_some());
        for w in ["--help", "-h", "--version", "-V", "gc"] {
            let mut a = plain.clone();
            a.push(w.into());
            assert!(parse_plain(&a).is_none(), "{w}");
            assert!(parse_attach_form(&a).is_none(), "{w}");
        }
    }

    #[test]
    fn options_before_a_verb_move_after_it() {
        assert_eq!(
            hoist(&["--state-dir", "/x", "gc"]),
            ["gc", "--state-dir", "/x"]
        );
        assert_eq!(hoist(&["--json", "gc"]), ["gc", "--json"]);
        assert_eq!(hoist(&["-n", "detach", "web"]), ["detach", "-n", "web"]);
        assert_eq!(
            hoist(&["-nv", "route", "web", "add", "default"]),
            ["route", "-nv", "web", "add", "default"]
        );
        assert_eq!(
            hoist(&["-i", "gc", "br1", "web", "0/0"]),
            ["-i", "gc", "br1", "web", "0/0"]
        );
        assert_eq!(hoist(&["br1", "gc", "0/0"]), ["br1", "gc", "0/0"]);
        assert_eq!(hoist(&["--state-dir=/x", "gc"]), ["gc", "--state-dir=/x"]);
    }

    #[test]
    fn clap_errors_are_one_line_with_their_content() {
        let e = err(&["br1", "web"]);
        assert!(e.starts_with("missing ADDR[@GATEWAY] (usage: pipe "), "{e}");
        let e = err(&["detach"]);
        assert!(e.starts_with("missing GUEST (usage: pipe detach"), "{e}");
        let e = err(&["link", "a", "1.1.1.1/32", "b"]);
        assert!(e.starts_with("missing ADDR_B"), "{e}");
        let e = err(&["--macvlan-mode", "foo", "eth0", "1", "0/0"]);
        assert!(e.contains("bridge, private, vepa, passthru"), "{e}");
        let e = err(&["--wait", "br1", "x", "1.2.3.4/24"]);
        assert!(
            e.contains("cannot be used with") && e.contains("HOST_IF"),
            "{e}"
        );
        let e = err(&["--save", "x"]);
        assert!(e.contains("pipe apply FILE"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\nb\x1b[31m\u{202e}"), "a\\nb\\u{1b}[31m\\u{202e}");
    }
}
