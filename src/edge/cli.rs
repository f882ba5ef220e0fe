//! The command line: clap definitions for the pipework grammar. Parsing only;
//! no I/O. `into_spec` turns the parsed arguments into a typed `AttachSpec`.

use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::domain::error::{Error, Result};
use crate::domain::spec::{
    AddrSpec, AttachSpec, GuestRef, HostIfRef, IfName, IpvlanMode, MacVlan, MacvlanMode,
};

const AFTER_HELP: &str = "\
Examples:
  pipe br1 web 192.168.1.10/24@192.168.1.1      veth into bridge br1 (created if missing), default route via .1
  pipe eth0 web 10.0.0.5/24 02:12:34:56:78:9a   macvlan on eth0 with a fixed MAC
  pipe -i eth2 br1 4711 10.1.1.2/24             guest by PID, container interface eth2
  pipe --dry-run br1 web 0/0                    print the equivalent ip commands, change nothing
  pipe eth0 web 10.1.100.11/24 @100             macvlan on eth0.100 (802.1Q, created if missing)
  pipe br1 web 10.1.100.5/24 @100               veth as an access port of VLAN 100 on br1
  pipe --ipvlan l2 eth0 web 10.0.0.6/24         ipvlan instead of macvlan (shares eth0's MAC)
  pipe --direct-phys eth2 web 10.2.0.5/24       move eth2 itself into the container
  pipe br1 web dhcp                             IPv4 lease from pipe's own DHCP client, kept renewed
  pipe br1 web 10.0.0.2/24@10.0.0.1,2001:db8::2/64@2001:db8::1   dual stack in one attach
  pipe br1 web 10.0.0.2/24 --rate 10mbit        shape the container's egress (TBF)
  pipe link web 10.1.1.1/32 db 10.1.1.2/32      point-to-point veth between two containers
  pipe route web add 10.0.0.0/8 via 10.0.0.1    pipework's route/rule/tc verbs (see pipe route --help)

GUEST is a PID, a netns path (/proc/PID/ns/net), a name under /var/run/netns, or a Docker
container name or ID (DOCKER_HOST is honoured). ADDR is IP/PREFIX (IPv4 or IPv6), several
comma-separated, 0/0 for no address, dhcp for pipe's own DHCP client, or udhcpc, dhclient, dhcpcd
to run that client in the container (as pipework). @GATEWAY replaces the container's default
route of its family (at most one per family). The new addresses are announced (gratuitous ARP,
unsolicited NA). MAC is 02:.. or U:seed (pipework's derived MAC); @VLAN is an 802.1Q id.
Options of a verb (route, rule, tc, link, detach, ...) go after the verb: pipe route -n web ...";

pub(crate) const WATCH_HELP: &str = "\
The attachments file (TOML) has one [[attach]] table per interface; keys mirror the command line:

  [[attach]]
  container = \"web\"                    # GUEST: Docker container name or ID
  host = \"br1\"                         # HOST_IF
  addr = \"192.168.1.10/24@192.168.1.1\" # ADDR[@GATEWAY], or \"0/0\"
  ifname = \"eth1\"                      # optional (-i)
  mac = \"U:web.example.com\"            # optional
  mtu = 1400                           # optional
  host_ifname = \"vweb\"                 # optional (-l)
  macvlan_mode = \"bridge\"              # optional
  vlan = 100                           # optional
  rate = \"10mbit\"                      # optional (--rate)
  host_shim = true                     # optional (--host-shim)

It is read again at each container start. Attachments made with --persist are applied too.
Containers may declare their own with labels, in the command line's grammar without GUEST:
docker run --label pipe.eth1=\"br1 192.168.1.10/24@192.168.1.1\" ...
docker run --label pipe.eth2=\"eth0 10.0.0.5/24 U:web@100 --mtu 1400 --rate 10mbit\" ...
(options: --mtu, --rate, --ipvlan, --macvlan-mode, --host-shim, -l; not --direct-phys). For the
same container and interface the file wins over a --persist record, which wins over a label.
On start and after each reconnection (backoff 0.1 s to 5 s), running containers are caught up.";

#[derive(Parser, Debug)]
#[command(
    name = "pipe",
    version,
    about = "Give a running container another network interface: veth into a Linux bridge, or macvlan on a host interface",
    after_help = AFTER_HELP,
    disable_help_subcommand = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Other verbs (pipework's `route`, `rule`, `tc`, and pipe's own); without one, attach.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub top: Top,
}

/// The attach form alone: pipe's top-level arguments and options without the
/// verbs. Building clap's tree of every verb is most of what parsing costs
/// (0.25 of 0.4 ms, `docs/performance.md`), so a command line that names no
/// verb is parsed with this first; anything it does not accept (help, version,
/// any error) is parsed again with the whole [`Cli`], for the same output.
#[derive(Parser, Debug)]
#[command(
    name = "pipe",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct AttachCli {
    #[command(flatten)]
    pub top: Top,
}

/// The top level: the attach form's arguments and the global options.
#[derive(clap::Args, Debug)]
pub struct Top {
    /// Host interface: an existing bridge (veth into it), a missing name starting
    /// with "br" (the bridge is created), any other interface (macvlan parent), or
    /// mac:AA:BB:CC:DD:EE:FF.
    #[arg(value_name = "HOST_IF", required_unless_present_any = ["generate", "wait"])]
    pub host_if: Option<HostIfRef>,

    /// The container: PID, netns path, netns name, or Docker container name/ID.
    #[arg(value_name = "GUEST", required_unless_present_any = ["generate", "wait"])]
    pub guest: Option<GuestRef>,

    /// IP/PREFIX[@GATEWAY] (several comma-separated), 0/0 for no address, or dhcp
    /// (udhcpc, dhclient, dhcpcd: run that client instead).
    #[arg(value_name = "ADDR[@GATEWAY]", required_unless_present_any = ["generate", "wait"])]
    pub addr: Option<AddrSpec>,

    /// [MAC][@VLAN]: a unicast MAC or U:seed, optionally followed by @VLAN (1-4094).
    #[arg(value_name = "[MAC][@VLAN]")]
    pub mac_vlan: Option<MacVlan>,

    /// Interface name inside the container.
    #[arg(
        short = 'i',
        long = "container-ifname",
        value_name = "IFNAME",
        default_value = DEFAULT_IFNAME
    )]
    pub ifname: IfName,

    /// Host-side veth name (default: v{IFNAME}pl{PID}, or a hash when that is too long).
    #[arg(short = 'l', long = "host-ifname", value_name = "IFNAME")]
    pub host_ifname: Option<IfName>,

    /// Address family, accepted for pipework compatibility (inferred from ADDR).
    #[arg(short = 'a', long = "family", value_name = "4|6", value_parser = ["4", "6"])]
    pub family: Option<String>,

    /// MTU of the new interface, 68 to 65535 (at least 1280 with an IPv6 address;
    /// default: the bridge's or parent's MTU).
    #[arg(long, value_name = "N", value_parser = crate::domain::spec::parse_mtu)]
    pub mtu: Option<u32>,

    /// Shape the container's egress on the new interface: a token bucket (TBF) set over
    /// netlink, no tc binary. tc's units: 10mbit, 512kbit, 1gbit (bps = bytes/s); BURST in
    /// bytes or 64kb (default: 10 ms at RATE, at least 16 KiB).
    #[arg(long, value_name = "RATE[/BURST]")]
    pub rate: Option<crate::domain::rate::Rate>,

    /// Mode of a macvlan (default bridge).
    #[arg(long, value_enum, value_name = "MODE")]
    pub macvlan_mode: Option<ModeArg>,

    /// Create an ipvlan child in this mode instead of a macvlan (l2: switched, l3/l3s:
    /// routed through the host); it shares the parent's MAC, so no MAC may be given.
    #[arg(long, value_enum, value_name = "MODE", conflicts_with_all = ["macvlan_mode", "direct_phys"])]
    pub ipvlan: Option<IpvlanArg>,

    /// Move HOST_IF itself (or its VLAN sub-interface HOST_IF.VLAN) into the container,
    /// renamed to IFNAME; its old name is kept in the interface alias.
    #[arg(long, conflicts_with = "macvlan_mode")]
    pub direct_phys: bool,

    /// With a macvlan (bridge mode) or an ipvlan (l3, l3s): let the host and the container
    /// reach each other through a shared host-side sibling on the parent (a macvlan, or an
    /// ipvlan of the container's mode; created once, tagged pipe:shared, removed with its last
    /// user) and a /32 (/128) route to each of the container's addresses.
    #[arg(long, conflicts_with_all = ["direct_phys"])]
    pub host_shim: bool,

    /// Print the plan as equivalent ip commands and change nothing (pipe's state directory
    /// included: its records are read, no directory, lock or record is created).
    #[arg(short = 'n', long, global = true)]
    pub dry_run: bool,

    /// More logging (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print the result as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,

    /// Do not link the container's namespace into /var/run/netns.
    #[arg(long)]
    pub no_netns_link: bool,

    /// Seconds to wait for a starting container to get a PID (default 5); with
    /// --wait, for the interface to be ready (default: for ever). 0 to 86400 (a day).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,

    /// Inside a container: wait until interface -i (eth1) exists, is up and has carrier,
    /// as pipework --wait, with no address still in IPv6 duplicate address detection and
    /// unchanged for 0.25 s. =addr also needs an address (IPv4, or IPv6 other than
    /// link-local), =ipv4 or =ipv6 one of that family (comma-separated: all of them);
    /// use one with DHCP.
    #[arg(
        long,
        value_enum,
        value_name = "WHAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "link",
        value_delimiter = ',',
        conflicts_with_all = ["host_if", "guest", "addr", "mac_vlan"]
    )]
    pub wait: Option<Vec<WaitFor>>,

    /// Keep this attachment: `pipe watch` applies it again whenever the container starts.
    #[arg(long)]
    pub persist: bool,

    /// Where pipe keeps its records of what it created (an absolute path).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "PIPE_STATE_DIR",
        default_value = DEFAULT_STATE_DIR
    )]
    pub state_dir: std::path::PathBuf,

    /// Print the man page or a completion script to stdout.
    #[arg(long, value_enum, hide = true, value_name = "WHAT")]
    pub generate: Option<Generate>,
}

/// The interface name inside the container when `-i` is not given.
pub const DEFAULT_IFNAME: &str = "eth1";
/// Where pipe keeps its records unless `--state-dir` or `PIPE_STATE_DIR` says.
pub const DEFAULT_STATE_DIR: &str = "/run/pipe";

/// Verbs other than attach. Each issue's feature adds its own variant here.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Remove an interface pipe attached: both ends, a bridge pipe created once it has no
    /// port left, the /var/run/netns link; the replaced default route is put back.
    Detach {
        /// The container: PID, netns path, netns name, or Docker container name/ID.
        #[arg(value_name = "GUEST")]
        guest: GuestRef,
        /// Interface name inside the container.
        #[arg(
            short = 'i',
            long = "container-ifname",
            value_name = "IFNAME",
            default_value = "eth1"
        )]
        ifname: IfName,
        /// Delete the interface even if pipe did not create it.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for a starting container to get a PID (0 to 86400).
        #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
        timeout: Duration,
    },
    /// Attach everything in an attachments file (same format as pipe watch's) in one
    /// process: guests resolved concurrently, one host netlink connection, each
    /// attachment atomic on its own, a summary at the end.
    Apply {
        /// The attachments file (TOML, one [[attach]] table per interface).
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Record the attachments as persistent, for pipe watch.
        #[arg(long)]
        persist: bool,
    },
    /// Remove what is left of attachments whose container is gone: state records,
    /// stale /var/run/netns links, bridges pipe created that nothing uses.
    Gc,
    /// Follow the Docker Engine's events and apply persistent attachments (--persist, and
    /// the attachments file) each time their container starts.
    #[command(after_long_help = WATCH_HELP)]
    Watch {
        /// Declarative attachments (TOML, one [[attach]] table per interface); a missing
        /// file at the default path means none.
        #[arg(long, value_name = "FILE", default_value = crate::domain::attachments::DEFAULT_FILE)]
        file: std::path::PathBuf,
        /// Apply to the running containers once, then exit (no event stream).
        #[arg(long)]
        once: bool,
    },
    /// Add, delete or replace a route inside the container, over netlink
    ///
    /// `add|del|replace [-4|-6] [blackhole|unreachable|prohibit] default|PREFIX [via GW] [dev IF]
    /// [metric N] [table ID] [src ADDR] [onlink] [proto P] [scope S]`. Other forms are refused
    /// with the `ip netns exec` command that runs them.
    #[command(after_help = ROUTE_HELP)]
    Route {
        /// The container: PID, netns path, netns name, or Docker container name/ID.
        #[arg(value_name = "GUEST")]
        guest: GuestRef,
        /// `ip route` arguments, e.g. `add 10.0.0.0/8 via 192.168.1.1`.
        #[arg(value_name = "ARGS", num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Add or delete a policy routing rule inside the container, over netlink
    ///
    /// `add|del [-4|-6] [not] [from PREFIX|all] [to PREFIX|all] [iif IF] [oif IF]
    /// [fwmark N[/MASK]] [priority N] [table ID | blackhole|unreachable|prohibit]`.
    #[command(after_help = RULE_HELP)]
    Rule {
        /// The container: PID, netns path, netns name, or Docker container name/ID.
        #[arg(value_name = "GUEST")]
        guest: GuestRef,
        /// `ip rule` arguments, e.g. `add from 10.1.0.0/16 table 100`.
        #[arg(value_name = "ARGS", num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Connect two containers with one veth pair: no bridge, no host-side interface
    ///
    /// Each end is created directly in its container, gets its address and is brought up;
    /// when the other end's address is outside its own prefix (e.g. 10.1.1.1/32 and
    /// 10.1.1.2/32) it gets a host route to it. Atomic: a failure deletes the pair again.
    #[command(after_help = LINK_HELP)]
    Link {
        /// The first container: PID, netns path, netns name, or Docker container name/ID.
        #[arg(value_name = "GUEST_A")]
        guest_a: GuestRef,
        /// Address of the first end (IP/PREFIX, or 0/0 for none).
        #[arg(value_name = "ADDR_A")]
        addr_a: AddrSpec,
        /// The second container.
        #[arg(value_name = "GUEST_B")]
        guest_b: GuestRef,
        /// Address of the second end.
        #[arg(value_name = "ADDR_B")]
        addr_b: AddrSpec,
        /// Interface name in the first container (and in the second, unless --peer-ifname).
        #[arg(
            short = 'i',
            long = "container-ifname",
            value_name = "IFNAME",
            default_value = "eth1"
        )]
        ifname: IfName,
        /// Interface name in the second container.
        #[arg(long, value_name = "IFNAME")]
        peer_ifname: Option<IfName>,
        /// MTU of both ends, 68 to 65535 (at least 1280 with IPv6; default 1500).
        #[arg(long, value_name = "N", value_parser = crate::domain::spec::parse_mtu)]
        mtu: Option<u32>,
        /// Seconds to wait for a starting container to get a PID (0 to 86400).
        #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
        timeout: Duration,
    },
    /// Run the main job on throwaway namespaces: real attaches, pings, a re-run, detach
    ///
    /// Creates uniquely named namespaces (a host, two containers, a LAN behind a
    /// "physical" veth), attaches both containers to a new bridge and one by macvlan to the
    /// LAN, pings across each, re-runs an attach (a no-op), tries 802.1Q and ipvlan where the
    /// kernel has them, detaches everything and checks that nothing is left. Touches nothing
    /// it did not create; its records go to a throwaway state directory. Exit 0 when every
    /// supported step passed.
    #[command(after_help = SELFTEST_HELP)]
    Selftest {
        /// Stop before the detach and leave the namespaces and attachments for inspection.
        #[arg(long, conflicts_with = "clean")]
        keep: bool,
        /// Remove what earlier `pipe selftest --keep` (or interrupted) runs left.
        #[arg(long)]
        clean: bool,
    },
    /// List the attachments pipe has records of, each checked against the kernel
    ///
    /// One line per attachment: its state (live: the kernel matches the record; drifted:
    /// it exists but differs, and what differs; stale: the container is gone, pipe gc would
    /// remove it; pending: an attach is under way), container, interface, kind, host side,
    /// MAC, addresses, gateways, VLAN, MTU, rate, persist. Changes nothing; works without
    /// Docker (names it could not check are said so).
    #[command(after_help = LIST_HELP)]
    List {
        /// Only this container (a label it was attached under: name, ID, PID, netns name or path).
        #[arg(value_name = "GUEST")]
        guest: Option<String>,
        /// Only attachments in this state.
        #[arg(long, value_name = "STATE", value_parser = crate::verbs::list::State::ALL)]
        state: Option<String>,
    },
    /// Check this host (and a host interface, a container) before attaching; changes nothing
    ///
    /// One line per check, ok / warn / fail, with the fix: privileges, the kernel's support
    /// of each link kind (asked of the kernel in a throwaway namespace), /var/run/netns, the
    /// state directory, the Docker Engine; for HOST_IF: exists, up, MTU, bridge, and the
    /// br_netfilter + FORWARD DROP trap; for GUEST: resolvable, IPv6, interface names in use.
    /// Exit 0 when nothing fails, 1 otherwise.
    #[command(after_help = DOCTOR_HELP)]
    Doctor {
        /// A host interface to check (a bridge or a macvlan parent).
        #[arg(value_name = "HOST_IF")]
        host_if: Option<String>,
        /// A container to check (PID, netns path, netns name, Docker name/ID).
        #[arg(value_name = "GUEST")]
        guest: Option<GuestRef>,
    },
    /// The DHCP lease keeper (started by an attach with `dhcp`; not for direct use).
    #[command(name = "__dhcp-keeper", hide = true)]
    DhcpKeeper {
        /// Its state file.
        state: std::path::PathBuf,
    },
    /// Run the host's `tc` with these arguments inside the container's namespace
    #[command(after_help = TC_HELP)]
    Tc {
        /// The container: PID, netns path, netns name, or Docker container name/ID.
        #[arg(value_name = "GUEST")]
        guest: GuestRef,
        /// `tc` arguments, e.g. `qdisc add dev eth1 root netem delay 10ms`.
        #[arg(value_name = "ARGS", num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

const SELFTEST_HELP: &str = "\
Examples:
  pipe selftest                 the whole run; one line per step, then a summary
  pipe selftest --json          the same as one JSON object
  pipe selftest --keep          leave the namespaces (pipe-selftest-*) to look at with ip netns exec
  pipe selftest --clean         remove what --keep left";

const LIST_HELP: &str = "\
Examples:
  pipe list                      every attachment, with its state
  pipe list web                  the attachments of container web
  pipe list --state stale        what pipe gc would remove
  pipe list --json               an array of objects: container, ifname, kind, host_if, mac,
                                 addresses, gateways, vlan, state, drift, ...";

const DOCTOR_HELP: &str = "\
Examples:
  pipe doctor                    the host: privileges, kernel features, state dir, Docker
  pipe doctor br1                ... and bridge br1 (br_netfilter/FORWARD trap)
  pipe doctor eth0 web           ... and container web
  pipe doctor --json

pipe selftest runs the real attach and detach on throwaway namespaces.";

const ROUTE_HELP: &str = "\
Examples:
  pipe route web add 10.0.0.0/8 via 192.168.1.1
  pipe route web replace default via 2001:db8::1 dev eth1 metric 10
  pipe route web add blackhole 10.66.0.0/16 table 100
  pipe route web del 10.0.0.0/8

The request is one netlink message: it is applied whole or not at all. Anything else
(nexthop, mtu, encap, show, ...) is refused with the equivalent `ip netns exec NAME ip route ...`.";

const RULE_HELP: &str = "\
Examples:
  pipe rule web add from 10.1.0.0/16 table 100 priority 1000
  pipe rule web add fwmark 0x1 lookup 7
  pipe rule web -6 add to 2001:db8::/32 unreachable
  pipe rule web del priority 1000";

const LINK_HELP: &str = "\
Example (Docker's point-to-point recipe):
  pipe link web 10.1.1.1/32 db 10.1.1.2/32
  pipe link -i p2p0 --peer-ifname p2p0 web fd00:1::1/128 db fd00:1::2/128";

const TC_HELP: &str = "\
Example:
  pipe tc web qdisc add dev eth1 root netem delay 20ms

For a plain egress rate limit no tc binary is needed: see --rate on attach.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IpvlanArg {
    L2,
    L3,
    L3s,
}

/// What `--wait` needs besides "exists, up, carrier, settled".
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// Nothing more (the default, as pipework): right for 0/0 and for DHCP run later
    Link,
    /// An address: IPv4, or IPv6 other than link-local, past duplicate address detection
    Addr,
    /// An IPv4 address
    Ipv4,
    /// An IPv6 address other than link-local, past duplicate address detection
    Ipv6,
}

impl WaitFor {
    /// The address requirements of a `--wait=...` list.
    pub fn want(list: &[WaitFor]) -> crate::verbs::wait::Want {
        let mut w = crate::verbs::wait::Want::default();
        for f in list {
            match f {
                WaitFor::Link => {}
                WaitFor::Addr => w.any = true,
                WaitFor::Ipv4 => w.v4 = true,
                WaitFor::Ipv6 => w.v6 = true,
            }
        }
        w
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Cli {
    pub fn into_spec(self) -> Result<AttachSpec> {
        self.top.into_spec()
    }
}

impl Top {
    pub fn into_spec(self) -> Result<AttachSpec> {
        let missing = |what: &str| Error::Usage(format!("missing {what}; see pipe --help"));
        let addr = self.addr.ok_or_else(|| missing("ADDR"))?;
        if let (Some(f), Some(a)) = (&self.family, addr.addr) {
            let want6 = f == "6";
            if a.is_ipv6() != want6 {
                return Err(Error::Usage(format!(
                    "-a {f} does not match address {a}; drop -a (the family is inferred from the address)"
                )));
            }
        }
        crate::domain::spec::check_mtu_family(self.mtu, &addr).map_err(Error::Usage)?;
        let timeout = self.timeout.unwrap_or(Duration::from_secs(5));
        let mv = self.mac_vlan.unwrap_or_default();
        Ok(AttachSpec {
            host_if: self.host_if.ok_or_else(|| missing("HOST_IF"))?,
            guest: self.guest.ok_or_else(|| missing("GUEST"))?,
            addr,
            mac: mv.mac,
            vlan: mv.vlan,
            ifname: self.ifname,
            host_ifname: self.host_ifname,
            mtu: self.mtu,
            macvlan_mode: match self.macvlan_mode.unwrap_or(ModeArg::Bridge) {
                ModeArg::Bridge => MacvlanMode::Bridge,
                ModeArg::Private => MacvlanMode::Private,
                ModeArg::Vepa => MacvlanMode::Vepa,
                ModeArg::Passthru => MacvlanMode::Passthru,
            },
            ipvlan: self.ipvlan.map(|m| match m {
                IpvlanArg::L2 => IpvlanMode::L2,
                IpvlanArg::L3 => IpvlanMode::L3,
                IpvlanArg::L3s => IpvlanMode::L3s,
            }),
            direct_phys: self.direct_phys,
            netns_link: !self.no_netns_link,
            timeout,
            rate: self.rate,
            host_shim: self.host_shim,
        })
    }
}

/// The longest `--timeout`: a day.
pub use crate::domain::spec::MAX_TIMEOUT_SECS;

/// A `--timeout` value: seconds (fractions allowed), 0 to 86400.
pub fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=MAX_TIMEOUT_SECS).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0 to {MAX_TIMEOUT_SECS} (a day)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pipe").chain(args.iter().copied()))
    }

    #[test]
    fn pipework_option_order_and_anywhere() {
        // pipework: options right after HOST_IF.
        let a = parse(&["br1", "-i", "eth2", "-l", "vh", "web", "10.0.0.2/24"]).unwrap();
        let s = a.into_spec().unwrap();
        assert_eq!(s.ifname.as_str(), "eth2");
        assert_eq!(s.host_ifname.unwrap().as_str(), "vh");
        // Options first, last, anywhere.
        let a = parse(&["-i", "eth2", "br1", "web", "10.0.0.2/24", "--mtu", "1400"]).unwrap();
        let s = a.into_spec().unwrap();
        assert_eq!(s.ifname.as_str(), "eth2");
        assert_eq!(s.mtu, Some(1400));
        assert!(s.netns_link);
    }

    #[test]
    fn route_rule_tc_take_raw_trailing_arguments() {
        let a = parse(&[
            "route", "web", "-6", "add", "default", "via", "fe80::1", "dev", "eth1",
        ])
        .unwrap();
        match a.command {
            Some(Command::Route { guest, args }) => {
                assert_eq!(guest, GuestRef::Name("web".into()));
                assert_eq!(args.join(" "), "-6 add default via fe80::1 dev eth1");
            }
            c => panic!("{c:?}"),
        }
        let a = parse(&[
            "rule",
            "-n",
            "42",
            "add",
            "from",
            "10.0.0.0/8",
            "table",
            "7",
        ])
        .unwrap();
        assert!(a.top.dry_run);
        assert!(matches!(
            a.command,
            Some(Command::Rule {
                guest: GuestRef::Pid(42),
                ..
            })
        ));
        let a = parse(&[
            "tc", "web", "qdisc", "add", "dev", "eth1", "root", "netem", "-h",
        ])
        .unwrap();
        match a.command {
            Some(Command::Tc { args, .. }) => assert_eq!(args.last().unwrap(), "-h"),
            c => panic!("{c:?}"),
        }
        assert!(parse(&["route", "web"]).is_err(), "ARGS are required");
    }

    #[test]
    fn defaults() {
        let s = parse(&["eth0", "123", "0/0"]).unwrap().into_spec().unwrap();
        assert_eq!(s.ifname.as_str(), "eth1");
        assert_eq!(s.guest, GuestRef::Pid(123));
        assert_eq!(s.addr.addr, None);
        assert_eq!(s.macvlan_mode, MacvlanMode::Bridge);
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn mac_and_vlan_positional() {
        let s = parse(&["eth0", "web", "10.0.0.2/24", "U:myhost.foo.com@100"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(s.mac.unwrap().to_string(), "02:72:6c:cd:9b:8d");
        assert_eq!(s.vlan.unwrap().get(), 100);
    }

    #[test]
    fn ipvlan_and_direct_phys_flags() {
        let s = parse(&["--ipvlan", "l3", "eth0", "web", "10.0.0.2/24", "@7"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(s.ipvlan, Some(IpvlanMode::L3));
        assert_eq!(s.vlan.unwrap().get(), 7);
        assert!(!s.direct_phys);
        let s = parse(&["eth0", "web", "0/0", "--ipvlan", "l3s"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(s.ipvlan, Some(IpvlanMode::L3s));
        let s = parse(&["--direct-phys", "dm0", "web", "0/0"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert!(s.direct_phys);
        assert_eq!(s.ipvlan, None);
        for bad in [
            &["--ipvlan", "l2", "--direct-phys", "eth0", "web", "0/0"][..],
            &[
                "--ipvlan",
                "l2",
                "--macvlan-mode",
                "vepa",
                "eth0",
                "web",
                "0/0",
            ],
            &[
                "--direct-phys",
                "--macvlan-mode",
                "vepa",
                "eth0",
                "web",
                "0/0",
            ],
            &["--ipvlan", "l4", "eth0", "web", "0/0"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_value() {
        let e = parse(&["eth0", "web", "10.0.0.2"]).unwrap_err();
        assert!(e.to_string().contains("no prefix length"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["eth0", "web", "10.0.0.2/24", "01:00:00:00:00:01"]).unwrap_err();
        assert!(e.to_string().contains("multicast"), "{e}");
        let e = parse(&["-i", "averyveryverylongname", "eth0", "web", "0/0"]).unwrap_err();
        assert!(e.to_string().contains("at most 15"), "{e}");
        let e = parse(&["-a", "6", "eth0", "web", "10.0.0.2/24"])
            .unwrap()
            .into_spec()
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn watch_help_example_parses() {
        // `pipe watch --help` (and the man page) show this example.
        let ex: String = WATCH_HELP
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .map(|l| format!("{l}\n"))
            .collect();
        let v = crate::domain::attachments::parse(&ex, "help").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1.vlan.unwrap().get(), 100);
    }

    #[test]
    fn systemd_unit_runs_a_valid_command() {
        use clap::Parser;
        let unit = include_str!("../../contrib/pipe-watch.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart=");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert!(args[0].ends_with("/pipe"), "{exec}");
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Watch { once: false, .. })
        ));
    }
}
