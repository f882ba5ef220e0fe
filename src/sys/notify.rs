//! sd_notify(3) without libsystemd: under a `Type=notify` systemd unit,
//! `$NOTIFY_SOCKET` names a unix datagram socket (a path, or `@name` in the
//! abstract namespace) and one datagram `READY=1` tells systemd the service
//! is up. Outside systemd the variable is unset and this does nothing.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

use log::debug;

/// Send `state` (e.g. "READY=1\nSTATUS=...") to the service manager.
/// `Ok(false)` when not run by one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let p = path.as_bytes();
    let sock = UnixDatagram::unbound()?;
    debug!("notify: {} -> {}", state.replace('\n', " "), path.display());
    match p.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&p[1..])?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            sock.send_to(state.as_bytes(), &path)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("NOTIFY_SOCKET={} is not a unix socket", path.display()),
            ));
        }
    }
    Ok(true)
}

/// READY=1 the first time only (later calls only update the status line).
pub fn ready(status: &str) {
    static SENT: AtomicBool = AtomicBool::new(false);
    let msg = if SENT.swap(true, Ordering::SeqCst) {
        format!("STATUS={status}")
    } else {
        format!("READY=1\nSTATUS={status}")
    };
    if let Err(e) = notify(&msg) {
        eprintln!("pipe: watch: could not notify the service manager: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("pipe-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this is the only test in the binary that reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1\nSTATUS=caught up").unwrap());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=caught up");
        unsafe { std::env::set_var("NOTIFY_SOCKET", "@pipe-test-nonexistent-abstract") };
        assert!(notify("READY=1").is_err(), "nobody listens on it");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!notify("READY=1").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
