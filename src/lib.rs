//! `pipe`: give a running container another network interface.
//!
//! Data flow: `cli` parses, `spec` types, `guest` resolves the container,
//! `facts` observes, `plan` decides, `exec` mutates through `netlink`/`netns`.

pub mod announce;
pub mod cli;
pub mod docker;
pub mod error;
pub mod exec;
pub mod facts;
pub mod generate;
pub mod guest;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod report;
pub mod spec;
pub mod vlan;

use clap::Parser;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::plan::NsRef;
use crate::spec::AttachSpec;

/// pipe's own state (records of what it created): `$PIPE_STATE_DIR`, default /run/pipe.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var_os("PIPE_STATE_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "/run/pipe".into())
}

/// Parse the command line, run, print; returns the process exit code.
pub fn main_entry() -> i32 {
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
    if let Some(cmd) = cli.command {
        match cmd {}
    }
    let json = cli.json;
    let dry_run = cli.dry_run;
    let spec = cli.into_spec()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Refused(format!("starting the async runtime: {e}")))?;
    rt.block_on(attach(&spec, dry_run, json))
}

/// Pipe needs to enter namespaces and change links.
fn check_privileges() -> Result<()> {
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

async fn attach(spec: &AttachSpec, dry_run: bool, json: bool) -> Result<()> {
    check_privileges()?;
    let target = guest::resolve(&spec.guest, spec.timeout).await?;
    if let Some(n) = &target.note {
        eprintln!("pipe: note: {n}");
    }
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let sock = netns::socket_in(&target.netns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {}", target.label),
            error::KernelCause::from_io(&e),
        )
    })?;
    let guest = Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;

    let facts = facts::observe(spec, &target, &host, &guest).await?;
    let ns = match (&target.link_name, spec.netns_link) {
        (Some(n), true) => NsRef::Named(n.clone()),
        _ => match &spec.guest {
            spec::GuestRef::Name(n) if target.link_name.is_none() => NsRef::Named(n.clone()),
            _ => NsRef::Path(target.netns.path.display().to_string()),
        },
    };
    let plan = plan::plan(spec, &facts, ns)?;
    if dry_run {
        print!("{}", plan.render());
        return Ok(());
    }
    let applied = exec::apply(&plan, &target, &host, &guest).await?;
    let r = report::Report::new(spec, &target, &plan, &applied);
    println!("{}", if json { r.json() } else { r.line() });
    Ok(())
}
