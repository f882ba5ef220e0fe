//! Read-only questions `pipe doctor` asks of the system: capabilities, a
//! throwaway network namespace to try link kinds in, sysctls, the firewall's
//! FORWARD chain (through `iptables -S`, which only reads).

use std::io;

use nix::sched::{CloneFlags, unshare};

/// The effective capability set of this process, as `CapEff` of
/// /proc/self/status shows it: one capget(2) (version 3, two 32-bit words).
pub fn effective_caps() -> io::Result<u64> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut h = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two `Data` for version 3 into the array we own.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(d[1].effective) << 32 | u64::from(d[0].effective))
}

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;

/// A netlink socket in a brand-new network namespace that nothing else can
/// reach: a short-lived thread unshares its network namespace, opens the
/// socket and exits. The namespace (and every link made in it) lives exactly
/// as long as the socket: dropping it removes the namespace. It is never
/// linked under /var/run/netns and the root namespace is never touched.
pub fn throwaway_socket() -> io::Result<netlink_sys::Socket> {
    std::thread::spawn(|| -> io::Result<netlink_sys::Socket> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
    })
    .join()
    .map_err(|_| io::Error::other("probe thread panicked"))?
}

/// A sysctl of pipe's own network namespace (`net/bridge/bridge-nf-call-iptables`).
pub fn sysctl(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/sys/{key}"))?
        .trim()
        .to_string())
}

/// `iptables -S FORWARD` (read-only), or why it could not be read.
pub fn forward_chain() -> Result<String, String> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "2", "-S", "FORWARD"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run iptables ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables -S FORWARD failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Can this process write into `dir` (`access(2)` with W_OK)?
pub fn writable(dir: &std::path::Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

#[cfg(test)]
mod tests {
    /// capget(2) gives what the kernel shows as `CapEff` (root or not).
    #[test]
    fn effective_caps_match_proc_status() {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
        let want = u64::from_str_radix(hex.trim(), 16).unwrap();
        assert_eq!(super::effective_caps().unwrap(), want);
    }
}
