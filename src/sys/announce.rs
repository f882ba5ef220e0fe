//! Neighbour announcements: one gratuitous ARP (IPv4) or one unsolicited
//! neighbour advertisement (IPv6) for a freshly set address, so that hosts
//! that cached the address with an older MAC learn the new one at once.
//!
//! pipework ran `arping` and waited a full second for it; here the frame is
//! built in memory and sent once on an AF_PACKET socket opened inside the
//! container's namespace. The frame builders are pure and unit-tested.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use log::debug;

use crate::domain::spec::Mac;
use crate::sys::netns::{self, Netns};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet address of the IPv6 all-nodes group ff02::1.
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An ARP announcement (RFC 5227): a broadcast request whose sender and target
/// protocol address are both `ip`. Linux updates an existing neighbour entry
/// from it even within `locktime` (it is recognised as gratuitous) and, with
/// the default `arp_accept=0`, creates no new entries on other hosts.
pub fn arp_announcement(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.push(6);
    f.push(4);
    f.extend_from_slice(&1u16.to_be_bytes()); // op: request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) for `ip`, sent from
/// `ip` to all nodes, with the Override flag and the target link-layer address
/// option: receivers that have `ip` cached replace its MAC (and mark it STALE).
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.push(136); // type: neighbour advertisement
    icmp.push(0); // code
    icmp.extend_from_slice(&[0, 0]); // checksum, filled in below
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // flags: Override
    icmp.extend_from_slice(&ip.octets());
    icmp.push(2); // option: target link-layer address
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac.0);
    let sum = icmpv6_checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, no class or flow
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58); // next header: ICMPv6
    f.push(255); // hop limit: receivers drop ND messages with any other value
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and the message.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + msg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    internet_checksum(&pseudo)
}

/// RFC 1071 one's-complement sum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The announcement frame for `ip` and its destination MAC.
pub fn frame(mac: Mac, ip: IpAddr) -> (Vec<u8>, [u8; 6], u16) {
    match ip {
        IpAddr::V4(v4) => (arp_announcement(mac, v4), BROADCAST, ETH_P_ARP),
        IpAddr::V6(v6) => (unsolicited_na(mac, v6), ALL_NODES_MAC, ETH_P_IPV6),
    }
}

/// A send-only AF_PACKET socket created inside `ns` (protocol 0: it receives
/// nothing). Like every socket it stays in the namespace it was created in.
pub fn packet_socket_in(ns: &Netns) -> io::Result<OwnedFd> {
    netns::run_in(ns, || {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// Send one complete Ethernet frame out of interface `ifindex`.
pub fn send_frame(
    sock: &OwnedFd,
    ifindex: u32,
    dst: [u8; 6],
    proto: u16,
    frame: &[u8],
) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&dst);
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Announce `ip` with `mac` on interface `ifindex` of namespace `ns`.
pub fn announce(ns: &Netns, ifindex: u32, mac: Mac, ip: IpAddr) -> io::Result<()> {
    let (f, dst, proto) = frame(mac, ip);
    debug!(
        "announce: {} for {ip} ({mac}) on #{ifindex}",
        if ip.is_ipv4() {
            "gratuitous ARP"
        } else {
            "unsolicited NA"
        }
    );
    if let IpAddr::V6(v6) = ip {
        // An ICMPv6 raw socket closes without the RCU grace period an AF_PACKET
        // socket waits for; the AF_PACKET frame stays the fallback.
        match send_na_icmp6(ns, ifindex, v6, &f[54..]) {
            Ok(()) => return Ok(()),
            Err(e) => debug!("announce: ICMPv6 socket: {e}; sending the frame instead"),
        }
    }
    let sock = packet_socket_in(ns)?;
    send_frame(&sock, ifindex, dst, proto, &f)
}

/// Send the neighbour advertisement `icmp` (an ICMPv6 message) from `src` to
/// all nodes on interface `ifindex` of `ns`, through an ICMPv6 raw socket made
/// in `ns`: hop limit 255 (receivers drop ND with any other), source given by
/// IPV6_PKTINFO with IPV6_FREEBIND (the address may still be tentative), the
/// checksum filled in by the kernel.
pub fn send_na_icmp6(ns: &Netns, ifindex: u32, src: Ipv6Addr, icmp: &[u8]) -> io::Result<()> {
    const IPV6_FREEBIND: libc::c_int = 78;
    let icmp = icmp.to_vec();
    netns::run_in(ns, move || {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let set = |opt: libc::c_int, v: libc::c_int| -> io::Result<()> {
            // SAFETY: an int option of the right size.
            let r = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::IPV6_MULTICAST_HOPS, 255)?;
        set(libc::IPV6_MULTICAST_IF, ifindex as libc::c_int)?;
        set(IPV6_FREEBIND, 1)?;
        // SAFETY: plain old data; all-zero is a valid value.
        let mut dst: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        dst.sin6_family = libc::AF_INET6 as u16;
        dst.sin6_addr.s6_addr = ALL_NODES.octets();
        dst.sin6_scope_id = ifindex;
        // SAFETY: plain old data; all-zero is a valid value.
        let mut info: libc::in6_pktinfo = unsafe { std::mem::zeroed() };
        info.ipi6_addr.s6_addr = src.octets();
        info.ipi6_ifindex = ifindex;
        let mut cbuf = [0u64; 8];
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) };
        let mut iov = libc::iovec {
            iov_base: icmp.as_ptr() as *mut libc::c_void,
            iov_len: icmp.len(),
        };
        // SAFETY: plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut dst as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer (64 bytes) holds one in6_pktinfo cmsg
        // (CMSG_SPACE = 40); every pointer is valid for the call.
        let n = unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len =
                libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
            std::ptr::copy_nonoverlapping(
                (&info as *const libc::in6_pktinfo).cast::<u8>(),
                libc::CMSG_DATA(c),
                std::mem::size_of::<libc::in6_pktinfo>(),
            );
            libc::sendmsg(sock.as_raw_fd(), &msg, 0)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]);

    #[test]
    fn arp_announcement_layout() {
        let f = arp_announcement(MAC, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &MAC.0, "sender MAC");
        assert_eq!(&f[28..32], &[10, 0, 0, 2], "sender IP");
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 2], "target IP is the sender IP");
    }

    #[test]
    fn na_layout_and_checksum() {
        let ip: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 32, "payload length");
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override, not solicited, not router");
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[24..32], &[2, 1, 0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]);
        // A correct checksum makes the sum over pseudo-header + message zero.
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, icmp), 0);
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071's example words.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&d), !0xddf2);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
    }
}
