//! `pipe`: give a running container another network interface.
//!
//! Data flow: `cli` parses, `spec` types, `guest` resolves the container,
//! `facts` observes, `plan` decides, `exec` mutates through `netlink`/`netns`.

pub mod announce;
pub mod apply;
pub mod attachments;
pub mod cli;
pub mod cni;
pub mod detach;
pub mod dhcp;
pub mod dhcp_ext;
pub mod docker;
pub mod error;
pub mod exec;
pub mod facts;
pub mod gc;
pub mod generate;
pub mod guest;
pub mod iproute;
pub mod netlink;
pub mod netns;
pub mod p2p;
pub mod plan;
pub mod rate;
pub mod report;
pub mod rerun;
pub mod route_cmd;
pub mod spec;
pub mod state;
pub mod vlan;
pub mod wait;
pub mod watch;

use clap::Parser;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::plan::NsRef;
use crate::spec::AttachSpec;

static STATE_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// pipe's own state (records of what it created): `--state-dir`, else
/// `$PIPE_STATE_DIR`, default /run/pipe.
pub fn state_dir() -> std::path::PathBuf {
    if let Some(d) = STATE_DIR.get() {
        return d.clone();
    }
    std::env::var_os("PIPE_STATE_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "/run/pipe".into())
}

/// Set the state directory for this process (from `--state-dir`); first call wins.
pub fn set_state_dir(d: std::path::PathBuf) {
    let _ = STATE_DIR.set(d);
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Refused(format!("starting the async runtime: {e}")))
}

/// Parse the command line, run, print; returns the process exit code.
pub fn main_entry() -> i32 {
    // Runtimes exec a CNI plugin with CNI_COMMAND set and no arguments.
    if cni::invoked() {
        return cni::main();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pipe: {e}");
            e.exit_code()
        }
    }
}

/// clap's help and version go out as they are; its errors become one line.
fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("pipe: {first} (see pipe --help)");
            2
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(g) = cli.generate {
        use std::io::Write;
        let out = generate::render(g);
        std::io::stdout()
            .write_all(&out)
            .map_err(|e| Error::Refused(format!("writing to stdout: {e}")))?;
        return Ok(());
    }
    set_state_dir(cli.state_dir.clone());
    let json = cli.json;
    let dry_run = cli.dry_run;
    if let Some(cmd) = cli.command {
        return run_command(cmd, dry_run, json);
    }
    if cli.wait {
        let timeout = cli.timeout.map(cli::secs).transpose()?;
        let ifname = cli.ifname.to_string();
        let addr = runtime()?.block_on(wait::wait(&ifname, timeout))?;
        if json {
            println!("{}", serde_json::json!({"ifname": ifname, "address": addr}));
        } else {
            println!("{ifname} ready with {addr}");
        }
        return Ok(());
    }
    let persist = cli.persist;
    let spec = cli.into_spec()?;
    runtime()?.block_on(async {
        check_privileges()?;
        if let Some(r) = attach_one(&spec, dry_run, persist).await? {
            println!("{}", if json { r.json() } else { r.line() });
        }
        Ok(())
    })
}

fn run_command(cmd: cli::Command, dry_run: bool, json: bool) -> Result<()> {
    use cli::Command;
    let rt = runtime()?;
    check_privileges()?;
    match cmd {
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
                timeout: cli::secs(timeout)?,
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
            if dry_run {
                return Ok(());
            }
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
            let spec =
                p2p::LinkSpec::new(guest_a, addr_a, guest_b, addr_b, ifname, peer_ifname, mtu)?;
            let timeout = cli::secs(timeout)?;
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
    }
}

/// Does br_netfilter pass bridged IPv4 frames to iptables in this namespace?
fn bridged_traffic_is_filtered() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
}

/// Pipe needs to enter namespaces and change links.
pub(crate) fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1 << c) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err(Error::Refused(
            "pipe needs CAP_NET_ADMIN and CAP_SYS_ADMIN to enter namespaces and create links; run it as root (sudo pipe ...)"
                .into(),
        ))
    }
}

/// Attach one interface (or find it attached already) and record it. Prints
/// the plan and returns `None` with `dry_run`.
pub async fn attach_one(
    spec: &AttachSpec,
    dry_run: bool,
    persist: bool,
) -> Result<Option<report::Report>> {
    let target = guest::resolve(&spec.guest, spec.timeout).await?;
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    attach_resolved(spec, target, &host, dry_run, persist).await
}

/// The rest of an attach once the guest is resolved, on a given host
/// connection (`pipe apply` shares one across many attachments).
pub async fn attach_resolved(
    spec: &AttachSpec,
    target: guest::Target,
    host: &Netlink,
    dry_run: bool,
    persist: bool,
) -> Result<Option<report::Report>> {
    if let Some(n) = &target.note {
        eprintln!("pipe: note: {n}");
    }
    let sock = netns::socket_in(&target.netns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {}", target.label),
            error::KernelCause::from_io(&e),
        )
    })?;
    let guest = Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;

    let facts = facts::observe(spec, &target, host, &guest).await?;
    let ns = match (&target.link_name, spec.netns_link) {
        (Some(n), true) => NsRef::Named(n.clone()),
        _ => match &spec.guest {
            spec::GuestRef::Name(n) if target.link_name.is_none() => NsRef::Named(n.clone()),
            _ => NsRef::Path(target.netns.path.display().to_string()),
        },
    };
    let (plan, old) = match &facts.guest_ifname_taken {
        Some(link) => {
            let ex = facts::existing(spec, &target, link, &facts.host_veth, host, &guest).await?;
            let old = ex.record.clone();
            (rerun::plan(spec, &facts, &ex, ns, &target.label)?, old)
        }
        None => {
            // A record without its interface belongs to an earlier incarnation.
            let old = state::load(&target.label, spec.ifname.as_str())
                .ok()
                .flatten();
            (plan::plan(spec, &facts, ns)?, old)
        }
    };
    if dry_run {
        print!("{}", plan.render());
        return Ok(None);
    }
    let noop = rerun::is_noop(&plan);
    let applied = exec::apply(&plan, &target, host, &guest).await?;
    if let Some(br) = plan.steps.iter().find_map(|s| match s {
        plan::Step::CreateBridge { name } => Some(name),
        _ => None,
    }) && bridged_traffic_is_filtered()
    {
        // The classic trap on Docker hosts: br_netfilter sends bridged frames
        // through iptables FORWARD, whose policy Docker sets to DROP.
        eprintln!(
            "pipe: note: bridged traffic on this host goes through iptables (bridge-nf-call-iptables=1); \
             if the FORWARD policy is DROP (as Docker sets it), containers on {br} cannot reach each other \
             until you allow it, e.g. iptables -I FORWARD -i {br} -o {br} -j ACCEPT"
        );
    }
    let mut r = report::Report::new(spec, &target, &plan, &applied);
    r.already_attached = noop;
    let rec = state::after_attach(spec, &target, &plan, &applied, old.clone(), persist);
    if old.as_ref() != Some(&rec)
        && let Err(e) = state::save(&rec)
    {
        eprintln!(
            "pipe: note: attached, but could not write the record {}: {e}; \
                 pipe detach will need --force",
            rec.path().display()
        );
    }
    Ok(Some(r))
}
