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
pub mod files;
pub mod gc;
pub mod generate;
pub mod guest;
pub mod iproute;
pub mod journal;
pub mod netlink;
pub mod netns;
pub mod notify;
pub mod ops;
pub mod p2p;
pub mod plan;
pub mod plan_json;
pub mod precheck;
pub mod rate;
pub mod report;
pub mod rerun;
pub mod route_cmd;
pub mod selftest;
pub mod spec;
pub mod state;
pub mod usage;
pub mod vlan;
pub mod wait;
pub mod watch;

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
    usage::main_entry()
}

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--json` was given: results (and `--dry-run` plans) print as JSON.
pub fn json_output() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn init_logging(verbose: u8) {
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
    // selftest keeps its records in a throwaway directory of its own.
    if !matches!(cli.command, Some(cli::Command::Selftest { .. })) {
        files::check_state_dir(&cli.state_dir).map_err(Error::Usage)?;
        set_state_dir(cli.state_dir.clone());
    }
    let json = cli.json;
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let dry_run = cli.dry_run;
    if let Some(cmd) = cli.command {
        return run_command(cmd, dry_run, json);
    }
    if cli.wait {
        let timeout = cli.timeout;
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
    let cookie = {
        use std::os::fd::AsRawFd;
        netns::cookie_of_socket(sock.as_raw_fd())
    };
    let guest = Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;

    let store = detach::open_store()?;
    let id = state::AttachmentId::new(target.netns.id, spec.ifname.clone());
    // One attach, detach or collection of this attachment at a time.
    let _lock = store.lock(&id, true).map_err(|e| {
        Error::Refused(format!(
            "taking the lock of {id} in {}: {e}",
            store.path().display()
        ))
    })?;
    let mut old = detach::load(&store, &id)?;
    if let Some(o) = &old
        && !o.same_netns(cookie)
    {
        // A record of a dead namespace whose inode the kernel gave to this one:
        // what it named went with that namespace. It is superseded.
        if !dry_run {
            let _ = store.remove(&id);
        }
        old = None;
    }
    if let Some(o) = old.as_ref().and_then(|r| r.pending)
        && !dry_run
    {
        if o.alive() {
            return Err(Error::Refused(format!(
                "another attach of {} in {} is under way (pipe PID {}); try again when it is done",
                spec.ifname, target.label, o.pid
            )));
        }
        // A run of this very attachment was killed half-way: finish its
        // rollback from the journal before starting afresh.
        recover(&store, host, &target, &guest, &id).await?;
        old = None;
    }

    precheck::ipv6_enabled(spec, &target)?;
    let facts = facts::observe(spec, &target, host, &guest).await?;
    for n in precheck::notes(spec, &facts) {
        eprintln!("pipe: note: {n}");
    }
    let ns = match (&target.link_name, spec.netns_link) {
        (Some(n), true) => NsRef::Named(n.clone()),
        _ => match &spec.guest {
            spec::GuestRef::Name(n) if target.link_name.is_none() => NsRef::Named(n.clone()),
            _ => NsRef::Path(target.netns.path.display().to_string()),
        },
    };
    let plan = match &facts.guest_ifname_taken {
        Some(link) => {
            let ex = facts::existing(
                link,
                old.clone(),
                &facts.host_veth,
                host,
                &guest,
                &target,
                &id,
            )
            .await?;
            rerun::plan(spec, &facts, &ex, ns, &target.label)?
        }
        None => plan::plan(spec, &facts, ns)?,
    };
    // One namespace, one name under /var/run/netns: given again by another
    // form (a PID after its netns name or container name), it gets no second link.
    let mut plan = plan;
    if let Some(o) = &old
        && (o.anchor.is_some() || o.netns_link().is_some())
    {
        plan.steps.retain(|s| match s {
            plan::Step::LinkNetns { name, .. } => {
                o.netns_link().map(|n| n.as_str()) == Some(name.as_str())
            }
            _ => true,
        });
    }
    if dry_run {
        if json_output() {
            println!("{}", plan_json::render(&plan, &target.label));
        } else {
            print!("{}", plan.render());
        }
        return Ok(None);
    }
    let noop = rerun::is_noop(&plan);
    // Journal before the kernel: what this run will create, under the names it
    // will use, and who is writing (committed after the last step).
    let mut rec = journal::begin(spec, &target, &plan, old.clone(), persist);
    rec.cookie = cookie;
    let journaled = !noop;
    if journaled {
        rec.pending = Some(state::Owner::me());
        store.save(&rec).map_err(|e| {
            Error::Refused(format!(
                "writing pipe's journal {}: {e}; nothing was changed",
                store.record_path(&id).display()
            ))
        })?;
    }
    let applied = match exec::apply(&plan, &target, host, &guest, &store, &id).await {
        Ok(a) => a,
        Err(e) => {
            // Rolled back: the journal goes back to what it was.
            let r = match &old {
                Some(o) => store.save(o),
                None => store.remove(&id),
            };
            if let Err(w) = r {
                eprintln!(
                    "pipe: note: could not restore the record {}: {w}; run pipe gc",
                    store.record_path(&id).display()
                );
            }
            return Err(e);
        }
    };
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
    journal::commit(&mut rec, &plan, &applied);
    // Records of earlier incarnations of this container (it restarted: a new
    // namespace) are superseded by this one, which keeps what they promised.
    for o in store.find(&target.label, Some(spec.ifname.as_str())) {
        if o.netns != rec.netns && o.pending.is_none() && !o.alive() {
            rec.persist |= o.persist;
            rec.from_file |= o.from_file;
            if rec.mac.is_none() {
                rec.mac = o.mac.clone();
            }
            let _ = store.remove(&o.id());
        }
    }
    if (journaled || old.as_ref() != Some(&rec))
        && let Err(e) = store.save(&rec)
    {
        eprintln!(
            "pipe: note: attached, but could not write the record {}: {e}; \
                 pipe detach will need --force",
            store.record_path(&id).display()
        );
    }
    let mut r = report::Report::new(spec, &target, &plan, &applied);
    r.already_attached = noop;
    Ok(Some(r))
}

/// Finish the rollback of a killed run of attachment `id` from its journal.
async fn recover(
    store: &state::Store,
    host: &Netlink,
    target: &guest::Target,
    guest: &Netlink,
    id: &state::AttachmentId,
) -> Result<()> {
    let f = detach::observe(store, id, &target.label, Some(guest)).await?;
    let ops = detach::plan(&f, detach::Why::Recover)?;
    let cx = exec::Cx {
        host,
        guest: Some(guest),
        netns: Some(&target.netns),
        label: &target.label,
        store,
    };
    let done = exec::teardown(&ops, &cx).await;
    if done.failed.is_empty() {
        if !done.removed.is_empty() {
            eprintln!(
                "pipe: note: removed what an interrupted attach left: {}",
                done.removed.join(", ")
            );
        }
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "cleaning up after an interrupted attach of {id}: {}; run pipe gc",
            done.failed.join("; ")
        )))
    }
}
