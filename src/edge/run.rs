//! The edge: parse the command line (or hand over to the CNI plugin), run the
//! verb, print; errors become one line and an exit code.

use crate::domain::error::{Error, Result};
use crate::domain::spec;
use crate::edge::cli::{self, Cli};
use crate::edge::{generate, selftest};
use crate::sys::store::set_state_dir;
use crate::sys::{dhcp, files};
use crate::verbs::attach::{attach_one, check_privileges};
use crate::verbs::{apply, detach, doctor, gc, list, p2p, route_cmd, wait, watch};

use crate::sys::runtime::runtime;

/// `--json` was given: results (and `--dry-run` plans) print as JSON.
pub fn json_output() -> bool {
    crate::domain::output::json()
}

pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // bollard logs whole Engine answers (a container's full inspect JSON) at
    // debug: -vv says what pipe asked and which fields it used (sys::docker),
    // the raw exchange is for -vvv (trace) or RUST_LOG.
    let filter = if verbose == 2 {
        format!("{level},bollard=info,hyper=info,hyper_util=info")
    } else {
        level.to_string()
    };
    // Without env_logger's humantime feature no timestamp is printed; without
    // its regex feature RUST_LOG takes module filters but no /regex suffix
    // (1.1 MB of the binary and a sixth of its relocations, paid at every start).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(g) = cli.top.generate {
        use std::io::Write;
        let out = generate::render(g);
        std::io::stdout()
            .write_all(&out)
            .map_err(|e| Error::Refused(format!("writing to stdout: {e}")))?;
        return Ok(());
    }
    // selftest keeps its records in a throwaway directory of its own.
    if !matches!(cli.command, Some(cli::Command::Selftest { .. })) {
        files::check_state_dir(&cli.top.state_dir).map_err(Error::Usage)?;
        set_state_dir(cli.top.state_dir.clone());
    }
    let json = cli.top.json;
    crate::domain::output::set_json(json);
    let dry_run = cli.top.dry_run;
    if let Some(cmd) = cli.command {
        return run_command(cmd, dry_run, json);
    }
    if let Some(what) = &cli.top.wait {
        let timeout = cli.top.timeout;
        let ifname = cli.top.ifname.to_string();
        let want = cli::WaitFor::want(what);
        let addrs = runtime()?.block_on(wait::wait(&ifname, want, timeout))?;
        if json {
            println!(
                "{}",
                serde_json::json!({"ifname": ifname, "address": addrs.first(), "addresses": addrs})
            );
        } else if addrs.is_empty() {
            println!("{ifname} ready (up, carrier, no address)");
        } else {
            println!("{ifname} ready with {}", addrs.join(", "));
        }
        return Ok(());
    }
    let persist = cli.top.persist;
    let spec = cli.into_spec()?;
    run_attach(&spec, dry_run, persist, json)
}

/// One attach, in a frame of its own and with its future on the heap. Inlined
/// into `run`, the verbs' futures made `run`'s stack frame 29 KB, and the
/// stack probe on entry touched all of it: 7 of the 15 stack pages a plain
/// attach faulted in (`docs/performance.md`).
#[inline(never)]
fn run_attach(spec: &spec::AttachSpec, dry_run: bool, persist: bool, json: bool) -> Result<()> {
    let rt = runtime()?;
    let done = rt.block_on(Box::pin(async {
        check_privileges()?;
        if let Some(r) = attach_one(spec, dry_run, persist).await? {
            println!("{}", if json { r.json() } else { r.line() });
        }
        Ok(())
    }));
    // The process exits next: what is left on the runtime (the two netlink
    // connections' tasks, their sockets, epoll) goes with it, without the
    // runtime's orderly shutdown first. Every guard of the attach has run.
    std::mem::forget(rt);
    done
}

/// Every verb but attach (not inlined into `run`: see [`run_attach`]).
#[inline(never)]
fn run_command(cmd: cli::Command, dry_run: bool, json: bool) -> Result<()> {
    use cli::Command;
    let rt = runtime()?;
    // doctor checks the privileges itself (and reports them as one of its checks).
    if let Command::Doctor { host_if, guest } = cmd {
        return doctor::run(&rt, host_if, guest, json);
    }
    check_privileges()?;
    match cmd {
        Command::Doctor { .. } => unreachable!("handled above"),
        Command::List { guest, state } => {
            let f = list::Filter {
                guest,
                state: state.map(|s| s.parse()).transpose().map_err(Error::Usage)?,
            };
            let l = rt.block_on(list::list(&f))?;
            let (text, notes) = list::render(&l);
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&l.attachments).unwrap_or_default()
                );
            } else {
                print!("{text}");
            }
            for n in notes {
                eprintln!("pipe: {n}");
            }
            Ok(())
        }
        Command::Detach {
            guest,
            ifname,
            force,
            timeout,
        } => {
            let d = detach::DetachSpec {
                guest,
                ifname,
                force,
                timeout,
            };
            let out = rt.block_on(detach::detach(&d, dry_run))?;
            if dry_run {
                return Ok(());
            }
            if json {
                println!("{}", serde_json::to_string(&out).unwrap_or_default());
            } else if out.removed.is_empty() {
                println!("{} {} detached", out.container, out.ifname);
            } else {
                println!(
                    "{} {} detached (removed {})",
                    out.container,
                    out.ifname,
                    out.removed.join(", ")
                );
            }
            Ok(())
        }
        Command::Apply { file, persist } => {
            let sum = rt.block_on(apply::apply(&file, dry_run, persist))?;
            if json {
                println!("{}", serde_json::to_string(&sum).unwrap_or_default());
            } else {
                for r in &sum.results {
                    println!("{}", r.line());
                }
                for e in &sum.errors {
                    eprintln!("pipe: {e}");
                }
                println!("{}", sum.line());
            }
            if sum.failed > 0 && dry_run {
                return Err(Error::Refused(format!(
                    "{} of {} attachments would fail (see above); nothing was changed",
                    sum.failed, sum.entries
                )));
            }
            if sum.failed > 0 {
                return Err(Error::Refused(format!(
                    "{} of {} attachments failed (each was rolled back; the others stay)",
                    sum.failed,
                    sum.failed + sum.attached + sum.already_attached
                )));
            }
            Ok(())
        }
        Command::Gc => {
            let removed = rt.block_on(gc::gc(dry_run))?;
            if json {
                println!("{}", serde_json::json!({ "removed": removed }));
            } else if removed.is_empty() {
                println!("nothing to clean up");
            } else {
                for r in removed {
                    println!("{r}");
                }
            }
            Ok(())
        }
        Command::Watch { file, once } => rt.block_on(watch::watch(&file, once)),
        Command::Route { guest, args } => {
            route_cmd::run(&rt, route_cmd::Verb3::Route, guest, args, dry_run)
        }
        Command::Rule { guest, args } => {
            route_cmd::run(&rt, route_cmd::Verb3::Rule, guest, args, dry_run)
        }
        Command::Link {
            guest_a,
            addr_a,
            guest_b,
            addr_b,
            ifname,
            peer_ifname,
            mtu,
            timeout,
        } => {
            for a in [&addr_a, &addr_b] {
                spec::check_mtu_family(mtu, a).map_err(Error::Usage)?;
            }
            let spec =
                p2p::LinkSpec::new(guest_a, addr_a, guest_b, addr_b, ifname, peer_ifname, mtu)?;
            if let Some(r) = rt.block_on(p2p::link(&spec, timeout, dry_run))? {
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    println!("{}", r.line());
                }
            }
            Ok(())
        }
        Command::DhcpKeeper { state } => dhcp::keep(&state),
        Command::Tc { guest, args } => {
            route_cmd::run(&rt, route_cmd::Verb3::Tc, guest, args, dry_run)
        }
        Command::Selftest { keep, clean } => {
            selftest::run(&rt, selftest::Options { keep, clean, json })
        }
    }
}
