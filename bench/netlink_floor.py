#!/usr/bin/env python3
"""In-process netlink "floor" for attaching one interface to a container netns.

A copy of the shared reference (shared/bench/netlink_floor.py), kept in the project so
bench/attach.py runs without it.

Used by peers.sh.  Two backends do the same job as pipework / the iproute2
baseline, but without any fork/exec:

  raw       hand-built rtnetlink messages on a plain AF_NETLINK socket
            (closest to what a compiled tool talking netlink directly pays)
  pyroute2  the same sequence through pyroute2's IPRoute

Job (variant "bridge"):  veth HOSTVETH <-> IFNAME, HOSTVETH enslaved to HOSTIF and
up, IFNAME created directly inside the container netns, then inside the
container: IFNAME up, address IP/PREFIX, default route via GW.
Job (variant "macvlan"): macvlan IFNAME (mode bridge) on parent HOSTIF created
directly inside the container netns, then the same container-side steps.

GW "-" leaves the default route alone. VARIANT "bridge+announce" is the bridge job as
`pipe apply` does it: the container end comes up with arp_notify on, and its MAC is
set again after the address (the kernel then sends a gratuitous ARP), as pipe does.

Modes:
  serve BACKEND   read lines "VARIANT NSPATH HOSTIF HOSTVETH IP/PFX GW IFNAME" on
                  stdin, answer "ok <nanoseconds>" or "err <message>" per line;
                  the time covers only the attach itself (process start-up,
                  imports and the request round trip are excluded).
  once BACKEND VARIANT NSPATH HOSTIF HOSTVETH IP/PFX GW IFNAME
                  one attach, for timing a whole cold process from outside.
"""
import ctypes
import os
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


# ---------------------------------------------------------------- raw netlink
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 5, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE = 1, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
AF_INET = socket.AF_INET
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


def nla(kind, payload):
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


# IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { IPV4_DEVCONF_ARP_NOTIFY (22) = 1 } } }
ARP_NOTIFY_ON = nla(26, nla(socket.AF_INET, nla(1, struct.pack("HHI", 8, 22, 1))))


def ifinfo(index=0, flags=0, change=0):
    return struct.pack("BxHiII", 0, 0, index, flags, change)


class RawNl:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def request(self, mtype, flags, body):
        self.seq += 1
        msg = struct.pack("IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST, self.seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                ln, typ, _fl, seq, _pid = struct.unpack_from("IHHII", data, off)
                if seq == self.seq:
                    if typ == NLMSG_ERROR:
                        (err,) = struct.unpack_from("i", data, off + 16)
                        if err:
                            raise OSError(-err, os.strerror(-err))
                        return None
                    return data[off:off + ln]
                off += (ln + 3) & ~3

    def ifindex(self, name):
        reply = self.request(RTM_GETLINK, 0, ifinfo() + nla(IFLA_IFNAME, name.encode() + b"\0"))
        return struct.unpack_from("i", reply, 16 + 4)[0]

    def newlink(self, body, create=False):
        flags = NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
        self.request(RTM_NEWLINK, flags, body)

    def addr_add(self, idx, ip, plen):
        a = socket.inet_aton(ip)
        body = struct.pack("BBBBI", AF_INET, plen, 0, RT_SCOPE_UNIVERSE, idx)
        body += nla(IFA_LOCAL, a) + nla(IFA_ADDRESS, a)
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def default_route_replace(self, idx, gw):
        body = struct.pack("BBBBBBBBI", AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += nla(RTA_GATEWAY, socket.inet_aton(gw)) + nla(RTA_OIF, struct.pack("I", idx))
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)


def attach_raw(host, host_fd, variant, nspath, hostif, hostveth, cidr, gw, ifname):
    ip, plen = cidr.split("/")
    announce = variant == "bridge+announce"
    if announce:
        variant = "bridge"
        mac = bytes([0x02]) + os.urandom(5)
    nsfd = os.open(nspath, os.O_RDONLY)
    try:
        setns(nsfd)
        try:
            cont = RawNl()
        finally:
            setns(host_fd)
        try:
            parent = host.ifindex(hostif)
            if variant == "bridge":
                peer = ifinfo() + nla(IFLA_IFNAME, ifname.encode() + b"\0") + \
                    nla(IFLA_NET_NS_FD, struct.pack("I", nsfd))
                if announce:
                    peer += nla(IFLA_ADDRESS, mac)
                info = nla(IFLA_INFO_KIND, b"veth") + nla(IFLA_INFO_DATA, nla(VETH_INFO_PEER, peer))
                host.newlink(ifinfo(0, IFF_UP, IFF_UP) + nla(IFLA_IFNAME, hostveth.encode() + b"\0")
                             + nla(IFLA_MASTER, struct.pack("I", parent)) + nla(IFLA_LINKINFO, info),
                             create=True)
            else:
                info = nla(IFLA_INFO_KIND, b"macvlan") + \
                    nla(IFLA_INFO_DATA, nla(IFLA_MACVLAN_MODE, struct.pack("I", MACVLAN_MODE_BRIDGE)))
                host.newlink(ifinfo() + nla(IFLA_IFNAME, ifname.encode() + b"\0")
                             + nla(IFLA_LINK, struct.pack("I", parent))
                             + nla(IFLA_NET_NS_FD, struct.pack("I", nsfd))
                             + nla(IFLA_LINKINFO, info), create=True)
            idx = cont.ifindex(ifname)
            if announce:
                cont.newlink(ifinfo(idx, IFF_UP, IFF_UP) + ARP_NOTIFY_ON)
            else:
                cont.newlink(ifinfo(idx, IFF_UP, IFF_UP))
            cont.addr_add(idx, ip, int(plen))
            if gw != "-":
                cont.default_route_replace(idx, gw)
            if announce:
                cont.newlink(ifinfo(idx) + nla(IFLA_ADDRESS, mac))
        finally:
            cont.close()
    finally:
        os.close(nsfd)


# ---------------------------------------------------------------- pyroute2
def attach_pyroute2(host, host_fd, variant, nspath, hostif, hostveth, cidr, gw, ifname):
    from pyroute2 import IPRoute
    ip, plen = cidr.split("/")
    nsfd = os.open(nspath, os.O_RDONLY)
    try:
        setns(nsfd)
        try:
            cont = IPRoute()
        finally:
            setns(host_fd)
        try:
            parent = host.link_lookup(ifname=hostif)[0]
            if variant == "bridge":
                host.link("add", ifname=hostveth, kind="veth",
                          peer={"ifname": ifname, "net_ns_fd": nsfd})
                host.link("set", index=host.link_lookup(ifname=hostveth)[0],
                          master=parent, state="up")
            else:
                host.link("add", ifname=ifname, kind="macvlan", link=parent,
                          macvlan_mode="bridge", net_ns_fd=nsfd)
            idx = cont.link_lookup(ifname=ifname)[0]
            cont.link("set", index=idx, state="up")
            cont.addr("add", index=idx, address=ip, prefixlen=int(plen))
            cont.route("replace", dst="0.0.0.0/0", gateway=gw, oif=idx)
        finally:
            cont.close()
    finally:
        os.close(nsfd)


def make_host(backend):
    if backend == "raw":
        return RawNl(), attach_raw
    from pyroute2 import IPRoute
    return IPRoute(), attach_pyroute2


def main(argv):
    if len(argv) < 3 or argv[1] not in ("serve", "once") or argv[2] not in ("raw", "pyroute2"):
        sys.stderr.write(__doc__)
        return 2
    mode, backend = argv[1], argv[2]
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    if mode == "once":
        host, attach = make_host(backend)
        attach(host, host_fd, *argv[3:10])
        return 0
    host, attach = make_host(backend)
    for line in sys.stdin:
        args = line.split()
        if not args:
            continue
        try:
            t0 = time.perf_counter_ns()
            attach(host, host_fd, *args)
            t1 = time.perf_counter_ns()
            sys.stdout.write("ok %d\n" % (t1 - t0))
        except Exception as exc:  # report, keep serving
            sys.stdout.write("err %s\n" % str(exc).replace("\n", " "))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
