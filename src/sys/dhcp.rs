//! pipe's own DHCPv4 client: `pipe br1 web dhcp`.
//!
//! The messages are built and parsed with `dhcproto`; the exchange runs on a
//! UDP socket created inside the container's namespace and bound to the new
//! interface (port 68), with the broadcast flag set so that replies reach an
//! interface that has no address yet. The leased address is set with the
//! lease as its lifetime, so the kernel drops it by itself if it is not
//! renewed. A small lease keeper (pipe re-executed with a hidden verb) renews
//! at T1, releases the lease when asked to stop (`pipe detach`), and exits
//! when the namespace goes away: between renewals it holds nothing inside the
//! namespace (an open socket or fd would keep a dead container's namespace,
//! and its host-side veth, alive).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use ipnetwork::{IpNetwork, Ipv4Network};
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::domain::spec::Mac;
use crate::sys::netns::{self, Netns, NsId};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

/// What a DHCP server granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Seconds: the lease, renewal (T1) and rebinding (T2) times.
    pub lease_secs: u32,
    pub t1: u32,
    pub t2: u32,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

impl Lease {
    pub fn net(&self) -> IpNetwork {
        IpNetwork::V4(Ipv4Network::new(self.addr, self.prefix).expect("prefix checked"))
    }

    /// From a DHCPACK. T1 and T2 default to 1/2 and 7/8 of the lease (RFC 2131 4.4.5).
    pub fn from_ack(ack: &Message) -> Result<Lease, String> {
        let o = ack.opts();
        let addr = ack.yiaddr();
        if addr.is_unspecified() {
            return Err("the server's ACK carries no address".into());
        }
        let mask = match o.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => *m,
            // No mask: the class default is a guess; a host route is safe.
            _ => Ipv4Addr::new(255, 255, 255, 255),
        };
        let prefix = u32::from(mask).leading_ones() as u8;
        if u32::from(mask) != (!0u32).checked_shl(32 - u32::from(prefix)).unwrap_or(0) {
            return Err(format!("the server's subnet mask {mask} is not contiguous"));
        }
        let router = match o.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.first().copied(),
            _ => None,
        };
        let server = match o.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => ack.siaddr(),
        };
        let lease_secs = match o.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => *t,
            _ => return Err("the server's ACK has no lease time".into()),
        };
        let t1 = match o.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t)) => *t,
            _ => lease_secs / 2,
        };
        let t2 = match o.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t)) => *t,
            _ => (u64::from(lease_secs) * 7 / 8) as u32,
        };
        let dns = match o.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => Vec::new(),
        };
        Ok(Lease {
            addr,
            prefix,
            router,
            server,
            lease_secs,
            t1: t1.min(lease_secs),
            t2: t2.clamp(t1.min(lease_secs), lease_secs),
            dns,
        })
    }
}

/// A request from us: our MAC as chaddr and client identifier.
fn request_base(xid: u32, mac: Mac, ty: MessageType, broadcast: bool) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac.0);
    m.set_opcode(Opcode::BootRequest);
    if broadcast {
        m.set_flags(Flags::default().set_broadcast());
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(ty));
    let mut id = vec![1u8];
    id.extend_from_slice(&mac.0);
    o.insert(DhcpOption::ClientIdentifier(id));
    m
}

fn params(m: &mut Message, hostname: Option<&str>) {
    let o = m.opts_mut();
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    if let Some(h) = hostname {
        o.insert(DhcpOption::Hostname(h.to_string()));
    }
}

pub fn discover(xid: u32, mac: Mac, hostname: Option<&str>) -> Message {
    let mut m = request_base(xid, mac, MessageType::Discover, true);
    params(&mut m, hostname);
    m
}

/// REQUEST in the SELECTING state: take this offer from this server.
pub fn request_offer(xid: u32, mac: Mac, offer: &Message, hostname: Option<&str>) -> Message {
    let mut m = request_base(xid, mac, MessageType::Request, true);
    params(&mut m, hostname);
    let o = m.opts_mut();
    o.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    if let Some(DhcpOption::ServerIdentifier(s)) = offer.opts().get(OptionCode::ServerIdentifier) {
        o.insert(DhcpOption::ServerIdentifier(*s));
    }
    m
}

/// REQUEST in the RENEWING (unicast to the server) or REBINDING (broadcast)
/// state: ciaddr is our address, no server identifier.
pub fn request_renew(xid: u32, mac: Mac, lease: &Lease, hostname: Option<&str>) -> Message {
    let mut m = request_base(xid, mac, MessageType::Request, false);
    m.set_ciaddr(lease.addr);
    params(&mut m, hostname);
    m
}

pub fn release(xid: u32, mac: Mac, lease: &Lease) -> Message {
    let mut m = request_base(xid, mac, MessageType::Release, false);
    m.set_ciaddr(lease.addr);
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(lease.server));
    m
}

/// Is `r` a reply to our transaction, of one of the types we wait for?
fn is_reply(r: &Message, xid: u32, mac: Mac, want: &[MessageType]) -> bool {
    r.opcode() == Opcode::BootReply
        && r.xid() == xid
        && r.chaddr().get(..6) == Some(&mac.0[..])
        && r.opts().msg_type().is_some_and(|t| want.contains(&t))
}

fn xid() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)) ^ std::process::id()
}

fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: the option value is a valid int for the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP socket on port 68 inside `ns`, bound to interface `ifname`, that
/// may send broadcasts.
pub fn socket_in(ns: &Netns, ifname: &str) -> io::Result<UdpSocket> {
    let name = ifname.to_string();
    netns::run_in(ns, move || {
        // SAFETY: plain syscall; checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
        // SAFETY: the name buffer is valid for its length.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from(owned);
        // Binding needs no namespace any more, but doing it here keeps the
        // socket's whole setup in one place.
        let sa = socket2_addr(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
        // SAFETY: sa is a valid sockaddr_in.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    })
}

fn socket2_addr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

/// Send `msg` to `dst` and wait for a matching reply, retransmitting after
/// 1, 2, 4 ... seconds (RFC 2131 4.1, without the jitter), until `deadline`.
fn transact(
    sock: &UdpSocket,
    msg: &Message,
    dst: SocketAddrV4,
    mac: Mac,
    want: &[MessageType],
    deadline: Instant,
) -> Result<Message, String> {
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("encoding a DHCP message: {e}"))?;
    let mut wait = Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("no answer from a DHCP server ({dst})"));
        }
        debug!(
            "dhcp: send {:?} xid {:#x} to {dst}",
            msg.opts().msg_type(),
            msg.xid()
        );
        sock.send_to(&bytes, dst)
            .map_err(|e| format!("sending to {dst}: {e}"))?;
        let until = (now + wait).min(deadline);
        wait = (wait * 2).min(Duration::from_secs(8));
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| format!("socket timeout: {e}"))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let Ok(r) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                        debug!("dhcp: undecodable datagram from {from}");
                        continue;
                    };
                    if is_reply(&r, msg.xid(), mac, want) {
                        debug!("dhcp: got {:?} from {from}", r.opts().msg_type());
                        return Ok(r);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(format!("receiving: {e}")),
            }
        }
    }
}

fn broadcast() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT)
}

fn nak_or(r: Message) -> Result<Message, String> {
    if r.opts().msg_type() == Some(MessageType::Nak) {
        let why = match r.opts().get(OptionCode::Message) {
            Some(DhcpOption::Message(m)) => format!(": {m}"),
            _ => String::new(),
        };
        return Err(format!("the DHCP server refused (NAK){why}"));
    }
    Ok(r)
}

/// DISCOVER, OFFER, REQUEST, ACK.
/// One line of DHCP progress on stderr, only when it is a terminal: a lease
/// takes 2-10 s and an operator at a prompt deserves to see it coming; scripts,
/// CNI runtimes and `pipe watch`'s journal get nothing extra.
fn progress(msg: &str) {
    use std::io::{IsTerminal, Write};
    let e = std::io::stderr();
    if e.is_terminal() {
        let _ = writeln!(e.lock(), "pipe: dhcp: {msg}");
    }
}

pub fn obtain(
    sock: &UdpSocket,
    mac: Mac,
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease, String> {
    let deadline = Instant::now() + timeout;
    let x = xid();
    progress(&format!(
        "DISCOVER sent from {mac} (waiting up to {:.0} s for an offer)",
        timeout.as_secs_f64()
    ));
    let offer = transact(
        sock,
        &discover(x, mac, hostname),
        broadcast(),
        mac,
        &[MessageType::Offer],
        deadline,
    )?;
    info!("dhcp: offer of {} from {}", offer.yiaddr(), offer.siaddr());
    progress(&format!(
        "OFFER of {} from {}; REQUEST sent",
        offer.yiaddr(),
        offer.siaddr()
    ));
    let ack = transact(
        sock,
        &request_offer(x, mac, &offer, hostname),
        broadcast(),
        mac,
        &[MessageType::Ack, MessageType::Nak],
        deadline,
    )
    .and_then(nak_or)?;
    let lease = Lease::from_ack(&ack)?;
    progress(&format!(
        "lease of {} for {} s from {}",
        lease.net(),
        lease.lease_secs,
        lease.server
    ));
    Ok(lease)
}

/// Renew (unicast to the server) or rebind (broadcast) an existing lease.
pub fn renew(
    sock: &UdpSocket,
    mac: Mac,
    lease: &Lease,
    rebind: bool,
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease, String> {
    let dst = if rebind {
        broadcast()
    } else {
        SocketAddrV4::new(lease.server, SERVER_PORT)
    };
    let ack = transact(
        sock,
        &request_renew(xid(), mac, lease, hostname),
        dst,
        mac,
        &[MessageType::Ack, MessageType::Nak],
        Instant::now() + timeout,
    )
    .and_then(nak_or)?;
    Lease::from_ack(&ack)
}

/// Give the lease back (no answer is expected).
pub fn send_release(sock: &UdpSocket, mac: Mac, lease: &Lease) -> Result<(), String> {
    let bytes = release(xid(), mac, lease)
        .to_vec()
        .map_err(|e| format!("encoding a DHCP message: {e}"))?;
    let dst = SocketAddrV4::new(lease.server, SERVER_PORT);
    sock.send_to(&bytes, dst)
        .map_err(|e| format!("sending RELEASE to {dst}: {e}"))?;
    Ok(())
}

// ---- the lease keeper ---------------------------------------------------------------------

/// What the keeper needs, written by the attach next to its pidfile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeeperState {
    pub label: String,
    pub ifname: String,
    pub mac: String,
    /// Where the namespace is reached, and its identity (to notice that it is gone).
    pub ns_path: PathBuf,
    pub ns_dev: u64,
    pub ns_ino: u64,
    pub hostname: Option<String>,
    pub lease: Lease,
    /// Unix time the lease was (last) bound or renewed.
    pub bound_at: u64,
    /// Renewals done so far.
    #[serde(default)]
    pub renewals: u32,
}

pub fn dir() -> PathBuf {
    crate::sys::store::state_dir().join("dhcp")
}

fn key(label: &str, ifname: &str) -> String {
    format!("{label}@{ifname}").replace('/', "_")
}

pub fn state_path(label: &str, ifname: &str) -> PathBuf {
    dir().join(format!("{}.json", key(label, ifname)))
}

pub fn pid_path(label: &str, ifname: &str) -> PathBuf {
    dir().join(format!("{}.pid", key(label, ifname)))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn write_state(p: &Path, s: &KeeperState) -> io::Result<()> {
    std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")))?;
    let tmp = p.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(s).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, p)
}

pub fn read_state(p: &Path) -> io::Result<KeeperState> {
    let b = std::fs::read(p)?;
    serde_json::from_slice(&b).map_err(io::Error::other)
}

/// Record the lease and start its keeper: `pipe __dhcp-keeper STATE_FILE`,
/// in its own session, detached from the terminal.
pub fn start_keeper(s: &KeeperState) -> io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let p = state_path(&s.label, &s.ifname);
    write_state(&p, s)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.with_extension("log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__dhcp-keeper")
        .arg(&p)
        .env("PIPE_STATE_DIR", crate::sys::store::state_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // Like any daemon: keep no descriptor of the caller's (a pipe a
            // script reads until EOF, say) beyond stdin, stdout and stderr.
            // CLOSE_RANGE_CLOEXEC: closed at exec, so std's own exec-error
            // pipe still works until then.
            const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // A long-running parent (`pipe watch`) reaps the keeper when it exits;
    // a short one exits first, and the keeper is re-parented.
    std::thread::spawn(move || child.wait());
    std::fs::write(pid_path(&s.label, &s.ifname), format!("{pid}\n"))?;
    info!(
        "dhcp: lease keeper for {}@{} is PID {pid}",
        s.label, s.ifname
    );
    Ok(pid)
}

/// Is the keeper of `label@ifname` running? Its PID, if so.
pub fn keeper_pid(label: &str, ifname: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(label, ifname))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A recycled PID is not ours: check that it is a keeper.
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmd.split(|b| *b == 0)
        .any(|a| a == b"__dhcp-keeper")
        .then_some(pid)
}

/// Stop the keeper of `label@ifname`: it releases the lease and exits.
/// Waits up to `wait` for it; returns whether there was one.
pub fn stop_keeper(label: &str, ifname: &str, wait: Duration) -> bool {
    let Some(pid) = keeper_pid(label, ifname) else {
        let _ = std::fs::remove_file(pid_path(label, ifname));
        let _ = std::fs::remove_file(state_path(label, ifname));
        return false;
    };
    debug!("dhcp: stopping lease keeper {pid} of {label}@{ifname}");
    // SAFETY: plain syscall on a PID checked above to be a keeper.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if !Path::new(&format!("/proc/{pid}")).exists() || keeper_pid(label, ifname).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    warn!("dhcp: lease keeper {pid} did not stop within {wait:?}");
    true
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

fn ns_id_at(p: &Path) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).ok()?;
    Some(NsId {
        dev: md.dev(),
        ino: md.ino(),
    })
}

/// The keeper's main loop (the hidden `__dhcp-keeper STATE_FILE` verb).
pub fn keep(state_file: &Path) -> crate::domain::error::Result<()> {
    use crate::domain::error::Error;
    let mut s = read_state(state_file)
        .map_err(|e| Error::Refused(format!("reading {}: {e}", state_file.display())))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mac: Mac = s.mac.parse().map_err(Error::Refused)?;
    let id = NsId {
        dev: s.ns_dev,
        ino: s.ns_ino,
    };
    let cleanup = |s: &KeeperState| {
        // A newer keeper of the same container and interface (it restarted
        // and was attached again) owns the files now: leave them alone.
        let pp = pid_path(&s.label, &s.ifname);
        let mine = std::fs::read_to_string(&pp)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        if !mine {
            return;
        }
        let _ = std::fs::remove_file(pp);
        let st = state_path(&s.label, &s.ifname);
        // The log goes too when nothing was worth logging.
        let log = st.with_extension("log");
        if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&log);
        }
        let _ = std::fs::remove_file(st);
    };
    let mut next = s.bound_at + u64::from(s.lease.t1);
    loop {
        // Between renewals: nothing held in the namespace; poll that it lives.
        while now_unix() < next {
            if STOP.load(Ordering::SeqCst) {
                info!("dhcp: stopping; releasing {}", s.lease.addr);
                if ns_id_at(&s.ns_path) == Some(id)
                    && let Err(e) = with_socket(&s, |sock| send_release(sock, mac, &s.lease))
                {
                    warn!("dhcp: release: {e}");
                }
                cleanup(&s);
                return Ok(());
            }
            if ns_id_at(&s.ns_path) != Some(id) {
                info!("dhcp: the namespace of {} is gone; exiting", s.label);
                cleanup(&s);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let age = now_unix().saturating_sub(s.bound_at);
        if age >= u64::from(s.lease.lease_secs) {
            warn!(
                "dhcp: lease of {} expired without renewal; giving up",
                s.lease.addr
            );
            let _ = apply_in(&s, None);
            cleanup(&s);
            return Ok(());
        }
        let rebind = age >= u64::from(s.lease.t2);
        let host = s.hostname.clone();
        match with_socket(&s, |sock| {
            renew(
                sock,
                mac,
                &s.lease,
                rebind,
                host.as_deref(),
                Duration::from_secs(4),
            )
        }) {
            Ok(new) => {
                info!(
                    "dhcp: {} {} for {} s",
                    if rebind { "rebound" } else { "renewed" },
                    new.addr,
                    new.lease_secs
                );
                let old = s.lease.clone();
                s.lease = new;
                s.bound_at = now_unix();
                s.renewals += 1;
                if let Err(e) = apply_in(&s, Some(&old)) {
                    warn!("dhcp: applying the renewed lease: {e}");
                }
                if let Err(e) = write_state(state_file, &s) {
                    warn!("dhcp: writing {}: {e}", state_file.display());
                }
                next = s.bound_at + u64::from(s.lease.t1);
            }
            Err(e) => {
                // RFC 2131 4.4.5: retry at half the time left (at least 1 s).
                let end = s.bound_at
                    + u64::from(if rebind {
                        s.lease.lease_secs
                    } else {
                        s.lease.t2
                    });
                let left = end.saturating_sub(now_unix());
                warn!(
                    "dhcp: {} failed: {e}; retrying",
                    if rebind { "rebind" } else { "renewal" }
                );
                next = now_unix() + (left / 2).max(1);
            }
        }
    }
}

/// Run `f` with a DHCP socket in the keeper's namespace (opened and closed here).
fn with_socket<T>(
    s: &KeeperState,
    f: impl FnOnce(&UdpSocket) -> Result<T, String>,
) -> Result<T, String> {
    let ns =
        Netns::open(&s.ns_path).map_err(|e| format!("opening {}: {e}", s.ns_path.display()))?;
    if ns.id.ino != s.ns_ino || ns.id.dev != s.ns_dev {
        return Err("the namespace was replaced".into());
    }
    let sock =
        socket_in(&ns, &s.ifname).map_err(|e| format!("DHCP socket on {}: {e}", s.ifname))?;
    f(&sock)
}

/// Set the (renewed) lease's address and lifetime in the namespace; with
/// `None`, remove the expired address.
fn apply_in(s: &KeeperState, old: Option<&Lease>) -> Result<(), String> {
    let ns =
        Netns::open(&s.ns_path).map_err(|e| format!("opening {}: {e}", s.ns_path.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let sock = netns::socket_in(&ns).map_err(|e| e.to_string())?;
        let nl = crate::sys::netlink::Netlink::from_socket(sock).map_err(|c| c.to_string())?;
        let l = nl
            .link(&s.ifname)
            .await
            .map_err(|c| c.to_string())?
            .ok_or_else(|| format!("{} is gone", s.ifname))?;
        match old {
            None => nl
                .delete_address(l.index, s.lease.net())
                .await
                .map_err(|c| c.to_string()),
            Some(old) => {
                let lt = s.lease.lease_secs;
                nl.set_address_lifetime(l.index, s.lease.net(), lt, lt)
                    .await
                    .map_err(|c| c.to_string())?;
                if old.net() != s.lease.net() {
                    let _ = nl.delete_address(l.index, old.net()).await;
                }
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 7]);

    fn ack(opts: Vec<DhcpOption>) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(9, z, Ipv4Addr::new(10, 0, 0, 50), z, z, &MAC.0);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn discover_round_trips_with_broadcast_flag_and_client_id() {
        let m = discover(42, MAC, Some("web"));
        let b = m.to_vec().unwrap();
        let d = Message::decode(&mut Decoder::new(&b)).unwrap();
        assert_eq!(d.xid(), 42);
        assert!(d.flags().broadcast());
        assert_eq!(&d.chaddr()[..6], &MAC.0);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            d.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 0, 0, 7]))
        );
        assert_eq!(
            d.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
    }

    #[test]
    fn lease_from_ack_with_defaults() {
        let a = ack(vec![
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)),
            DhcpOption::AddressLeaseTime(800),
        ]);
        let l = Lease::from_ack(&a).unwrap();
        assert_eq!(l.net().to_string(), "10.0.0.50/24");
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.server, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((l.lease_secs, l.t1, l.t2), (800, 400, 700));
        let a = ack(vec![
            DhcpOption::AddressLeaseTime(60),
            DhcpOption::Renewal(10),
        ]);
        let l = Lease::from_ack(&a).unwrap();
        assert_eq!((l.prefix, l.t1), (32, 10));
        let e = Lease::from_ack(&ack(vec![])).unwrap_err();
        assert!(e.contains("lease time"), "{e}");
        let e = Lease::from_ack(&ack(vec![
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)),
            DhcpOption::AddressLeaseTime(60),
        ]))
        .unwrap_err();
        assert!(e.contains("contiguous"), "{e}");
    }

    #[test]
    fn renew_and_release_carry_our_address() {
        let l = Lease {
            addr: Ipv4Addr::new(10, 0, 0, 50),
            prefix: 24,
            router: None,
            server: Ipv4Addr::new(10, 0, 0, 2),
            lease_secs: 60,
            t1: 30,
            t2: 52,
            dns: vec![],
        };
        let r = request_renew(5, MAC, &l, None);
        assert_eq!(r.ciaddr(), l.addr);
        assert!(!r.flags().broadcast());
        assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
        let r = release(6, MAC, &l);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Release));
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(l.server))
        );
        assert!(is_reply(
            &{
                let mut a = ack(vec![]);
                a.set_xid(6);
                a
            },
            6,
            MAC,
            &[MessageType::Ack]
        ));
    }
}
