//! pipework's DHCP spellings: `udhcpc`, `dhclient`, `dhcpcd` run that client
//! binary inside the container's namespace, as pipework did (the client
//! configures the interface itself, through its own scripts). `dhcp` is
//! pipe's own client (`dhcp.rs`); its `--dry-run` line shows udhcpc.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use log::debug;

use crate::domain::error::{Error, Result};
use crate::domain::spec::DhcpClient;
use crate::sys::guest::Target;

/// How long pipe's own client waits for a lease (`PIPE_DHCP_TIMEOUT`, seconds; default 10).
pub fn timeout() -> Duration {
    std::env::var("PIPE_DHCP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0 && *v <= crate::domain::spec::MAX_TIMEOUT_SECS)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10))
}

/// The container's label as a DHCP host name, when it is one (RFC 1123 letters, digits, '-').
pub fn hostname(label: &str) -> Option<String> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| label.to_string())
}

/// The client's command line, as pipework ran it (made to give up instead of
/// retrying for ever, so that a missing server fails the attach).
pub fn argv(client: DhcpClient, ifname: &str, name: &str, pidfile: &str) -> Vec<String> {
    let v: Vec<String> = match client {
        DhcpClient::Native | DhcpClient::Udhcpc => vec![
            "udhcpc".into(),
            "-f".into(),
            "-q".into(),
            "-n".into(),
            "-i".into(),
            ifname.into(),
            "-x".into(),
            format!("hostname:{name}"),
        ],
        DhcpClient::Dhclient => vec![
            "dhclient".into(),
            "-1".into(),
            "-pf".into(),
            pidfile.into(),
            ifname.into(),
        ],
        DhcpClient::Dhcpcd => vec![
            "dhcpcd".into(),
            "-q".into(),
            ifname.into(),
            "-h".into(),
            name.into(),
        ],
    };
    v
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Run the client inside the container's namespace and wait for it.
pub fn run(client: DhcpClient, target: &Target, ifname: &str) -> Result<()> {
    let name = hostname(&target.label).unwrap_or_else(|| "container".into());
    let pidfile = crate::sys::dhcp::dir().join(format!("dhclient.{}.pid", target.key));
    let argv = argv(client, ifname, &name, &pidfile.display().to_string());
    let Some(bin) = find_in_path(&argv[0]) else {
        return Err(Error::Refused(format!(
            "{} is not installed on this host (pipe runs it inside the container's namespace, as pipework did); \
             install it, or write dhcp to use pipe's own DHCP client",
            argv[0]
        )));
    };
    if client == DhcpClient::Dhclient {
        let _ = std::fs::create_dir_all(crate::sys::dhcp::dir());
    }
    let fd = target.netns.fd.as_raw_fd();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(&argv[1..]);
    // SAFETY: between fork and exec the child only calls setns (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    debug!("dhcp: running {argv:?} in container {}", target.label);
    let status = cmd
        .status()
        .map_err(|e| Error::Refused(format!("running {}: {e}", bin.display())))?;
    if client == DhcpClient::Dhclient
        && let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // pipework: "kill dhclient after get ip address to prevent device be
        // used after container close".
        // SAFETY: plain syscall on the PID dhclient wrote for this run.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    if !status.success() {
        return Err(Error::Refused(format!(
            "{} found no lease on {ifname} in container {} ({status})",
            argv[0], target.label
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(hostname("web-1").as_deref(), Some("web-1"));
        assert_eq!(hostname("4711"), None);
        assert_eq!(hostname("/var/run/netns/x"), None);
        assert_eq!(hostname("a_b"), None);
    }

    #[test]
    fn pipework_command_lines() {
        assert_eq!(
            argv(DhcpClient::Udhcpc, "eth1", "web", "-").join(" "),
            "udhcpc -f -q -n -i eth1 -x hostname:web"
        );
        assert_eq!(
            argv(DhcpClient::Dhcpcd, "eth1", "web", "-").join(" "),
            "dhcpcd -q eth1 -h web"
        );
        assert_eq!(
            argv(DhcpClient::Dhclient, "eth1", "web", "/run/x.pid").join(" "),
            "dhclient -1 -pf /run/x.pid eth1"
        );
    }
}
