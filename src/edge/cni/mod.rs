//! pipe as a CNI plugin: when exec'd with `CNI_COMMAND` set, the same binary
//! answers the CNI verbs. ADD is pipe's attach, DEL its detach (through the
//! same planner and executor), CHECK compares `prevResult` with the kernel, GC
//! detaches what the runtime no longer lists, STATUS says whether ADD can work.
//!
//! Results go to stdout in the version the config asks for; errors go to
//! stdout as `{cniVersion, code, msg, details}` with exit status 1, and a
//! `pipe: ` line on stderr for the runtime's log.

pub mod config;
pub mod hostlocal;
pub mod ipam;
pub mod result;
pub mod store;

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use log::{debug, warn};
use serde_json::json;

use crate::domain::error::Error;
use crate::domain::identity::NsKey;
use crate::domain::spec::{AddrSpec, AttachSpec, GuestRef, IfName};
use crate::sys::netlink::Netlink;
use crate::sys::netns::{self, Netns, NsId};
use config::{Command, Env, NetConf, Options};
use result::{CniError, CniResult, Interface, IpConfig, RouteEntry, code};
use store::Mapping;

type CResult<T> = std::result::Result<T, CniError>;

/// Is this process a CNI plugin invocation?
pub fn invoked() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

/// The CNI entry point; returns the exit status.
pub fn main() -> i32 {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .try_init();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let ver = config::version_of(&stdin);
    match run(&stdin, &ver) {
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("pipe: {e}");
            println!("{}", e.json());
            1
        }
    }
}

fn run(stdin: &[u8], ver: &str) -> CResult<Option<String>> {
    let verb = std::env::var("CNI_COMMAND").unwrap_or_default();
    let cmd = Command::parse(&verb).ok_or_else(|| {
        CniError::new(
            ver,
            code::ENV,
            format!("CNI_COMMAND {verb:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )
    })?;
    if cmd == Command::Version {
        return Ok(Some(
            json!({"cniVersion": ver, "supportedVersions": result::SUPPORTED}).to_string(),
        ));
    }
    if !result::SUPPORTED.contains(&ver) {
        return Err(CniError::new(
            ver,
            code::INCOMPATIBLE,
            format!(
                "cniVersion {ver} is not supported; pipe speaks {}",
                result::SUPPORTED.join(", ")
            ),
        ));
    }
    let conf = NetConf::decode(stdin, ver)?;
    if let Some(d) = &conf.state_dir {
        crate::sys::store::set_state_dir(d.clone());
    }
    let env = Env::from_process();
    debug!("cni: {} network {:?}", cmd.as_str(), conf.network());
    crate::verbs::attach::check_privileges()
        .map_err(|e| CniError::new(ver, code::ATTACH, e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                ver,
                code::ATTACH,
                format!("starting the async runtime: {e}"),
            )
        })?;
    let ctx = Ctx {
        conf: &conf,
        raw: stdin,
        env: &env,
        ver,
    };
    rt.block_on(async {
        match cmd {
            Command::Add => ctx.add().await.map(|r| Some(r.for_version(ver).json())),
            Command::Del => ctx.del().await.map(|()| None),
            Command::Check => ctx.check().await.map(|()| None),
            Command::Gc => ctx.gc().await.map(|()| None),
            Command::Status => ctx.status().await.map(|()| None),
            Command::Version => unreachable!("answered above"),
        }
    })
}

/// How long a verb waits for another on the same network before answering
/// "try again" (11); `PIPE_CNI_LOCK_WAIT` (seconds) changes it.
fn lock_wait() -> Duration {
    std::env::var("PIPE_CNI_LOCK_WAIT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10))
}

struct Ctx<'a> {
    conf: &'a NetConf,
    raw: &'a [u8],
    env: &'a Env,
    ver: &'a str,
}

impl Ctx<'_> {
    fn err(&self, code: u32, msg: impl Into<String>) -> CniError {
        CniError::new(self.ver, code, msg)
    }

    /// A core error as a CNI error: usage errors are invalid config (7).
    fn core(&self, e: Error) -> CniError {
        let c = match e {
            Error::Usage(_) => code::CONFIG,
            _ => code::ATTACH,
        };
        self.err(c, e.to_string())
    }

    fn network(&self) -> CResult<&str> {
        match self.conf.network() {
            "" => Err(self.err(code::CONFIG, "the network configuration has no \"name\"")),
            n => Ok(n),
        }
    }

    fn lock(&self) -> CResult<store::Lock> {
        let net = self.network()?;
        store::lock(net, lock_wait()).map_err(|e| match e {
            store::LockError::Busy(p) => self.err(
                code::TRY_AGAIN,
                format!(
                    "another pipe is working on network {net} (lock {} held); try again",
                    p.display()
                ),
            ),
            store::LockError::Io(p, e) => self.err(
                code::STATE,
                format!(
                    "cannot lock {}: {e}; check pipe's state directory",
                    p.display()
                ),
            ),
        })
    }

    fn host(&self) -> CResult<Netlink> {
        Netlink::current()
            .map_err(|c| self.core(Error::kernel("opening a netlink socket on the host", c)))
    }

    fn guest_nl(&self, ns: &Netns) -> CResult<Netlink> {
        let sock = netns::socket_in(ns).map_err(|e| {
            self.err(
                code::ATTACH,
                format!("entering network namespace {}: {e}", ns.path.display()),
            )
        })?;
        Netlink::from_socket(sock).map_err(|c| {
            self.core(Error::kernel(
                "opening a netlink socket in the container",
                c,
            ))
        })
    }

    /// The interface pipe creates: the config's `ifname` (a second interface in
    /// a chain whose first plugin made CNI_IFNAME), else CNI_IFNAME.
    fn guest_ifname(&self, cni_ifname: &IfName) -> CResult<IfName> {
        match &self.conf.ifname {
            Some(n) => n
                .parse()
                .map_err(|e| self.err(code::CONFIG, format!("invalid \"ifname\": {e}"))),
            None => Ok(cni_ifname.clone()),
        }
    }

    fn ipam_call<'b>(&'b self, command: &'b str, cid: &'b str, ifname: &'b str) -> ipam::Call<'b> {
        ipam::Call {
            command,
            container_id: cid,
            ifname,
            netns: None,
            args: self.env.args_raw.as_deref(),
        }
    }

    /// Run IPAM `kind` for `command`: a plugin that is run (a process of its
    /// own) on a thread of its own, beside the namespace work; host-local,
    /// which pipe answers in process with a dozen system calls, right here
    /// (a thread would cost more than it). `f` is `ipam::add` or `ipam::run`.
    fn start_ipam<T: Send + 'static>(
        &self,
        kind: &str,
        command: &'static str,
        cid: &str,
        ifname: &str,
        ver: &str,
        f: fn(&str, &[std::path::PathBuf], &ipam::Call<'_>, &[u8], &str) -> T,
    ) -> Ipam<T> {
        let inline = kind == "host-local";
        let (kind, path, cid, ifname, raw, ver, args) = (
            kind.to_string(),
            self.env.path.clone(),
            cid.to_string(),
            ifname.to_string(),
            self.raw.to_vec(),
            ver.to_string(),
            self.env.args_raw.clone(),
        );
        let job = move || {
            let call = ipam::Call {
                command,
                container_id: &cid,
                ifname: &ifname,
                netns: None,
                args: args.as_deref(),
            };
            f(&kind, &path, &call, &raw, &ver)
        };
        if inline {
            Ipam::Done(job())
        } else {
            Ipam::Thread(std::thread::spawn(job))
        }
    }

    async fn add(&self) -> CResult<CniResult> {
        let ver = self.ver;
        let cid = self.env.container_id(ver)?;
        let cni_ifname = self.env.ifname(ver)?;
        let netns_path = self.env.netns(ver)?.clone();
        let ifname = self.guest_ifname(&cni_ifname)?;
        let opts = Options::from_conf(self.conf, self.env, ver)?;
        let prev = self
            .conf
            .prev_result
            .as_ref()
            .map(CniResult::parse)
            .transpose()
            .map_err(|e| {
                self.err(code::DECODE, "cannot decode prevResult")
                    .details(e)
            })?;
        let net = self.network()?.to_string();
        let _lock = self.lock()?;
        // The IPAM plugin (a process of its own) runs while pipe opens the
        // namespaces; an allocation is released again if what follows fails.
        let ipam_kind = self.conf.ipam_type().map(str::to_string);
        let pending = ipam_kind
            .clone()
            .map(|kind| self.start_ipam(&kind, "ADD", cid, cni_ifname.as_str(), ver, ipam::add));
        let pre = async {
            let mut target =
                crate::sys::guest::resolve(&GuestRef::Path(netns_path.clone()), Duration::from_secs(5))
                    .await
                    .map_err(|e| self.err(code::ENV, format!("CNI_NETNS: {e}")))?;
            // The attachment is named by the runtime's container ID: it labels
            // pipe's record and its ownership tags.
            target.label = cid.to_string();
            target.link_name = None;
            // A container ID names one sandbox: a restarted pod gets another.
            target.once = true;
            // One connection in the container: this lookup, then the attach.
            let guest = crate::verbs::attach::open_guest(&target).map_err(|e| self.core(e))?;
            if guest
                .nl
                .link(ifname.as_str())
                .await
                .map_err(|c| self.core(Error::kernel(format!("looking up {ifname}"), c)))?
                .is_some()
            {
                return Err(self.err(
                    code::IFNAME_EXISTS,
                    format!(
                        "interface {ifname} already exists in {}; the runtime must give a free CNI_IFNAME",
                        netns_path.display()
                    ),
                ));
            }
            let host = self.host()?;
            Ok((target, guest, host))
        }
        .await;
        let ipam_res: CResult<Option<CniResult>> = pending
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(self.err(code::IPAM, "the IPAM thread panicked")))
            })
            .transpose();
        let release_now = |s: &Self| {
            if let Some(kind) = &ipam_kind {
                s.release(kind, cid, cni_ifname.as_str(), s.raw);
            }
        };
        let (target, guest, host, ipam_res) = match (pre, ipam_res) {
            (Ok((t, g, h)), Ok(r)) => (t, g, h, r),
            (Err(e), Ok(Some(_))) => {
                release_now(self);
                return Err(e);
            }
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        };
        let ns_id = target.netns.id;

        // Addresses: the IPAM plugin's, else the static ones.
        let addr = match (&ipam_kind, &ipam_res) {
            (Some(kind), Some(r)) => match addr_from_ipam(r) {
                Ok(a) => a,
                Err(e) => {
                    release_now(self);
                    return Err(self.err(
                        code::IPAM,
                        format!("IPAM plugin {kind} gave addresses pipe cannot use: {e}"),
                    ));
                }
            },
            _ => opts.addresses.clone().unwrap_or_default(),
        };
        let spec = AttachSpec {
            host_if: opts.host_if.clone(),
            guest: GuestRef::Path(netns_path.clone()),
            addr,
            mac: opts.mac,
            vlan: opts.vlan,
            ifname: ifname.clone(),
            host_ifname: None,
            mtu: opts.mtu,
            macvlan_mode: opts.macvlan_mode,
            ipvlan: opts.ipvlan,
            direct_phys: opts.direct_phys,
            netns_link: false,
            timeout: Duration::from_secs(5),
            rate: opts.rate,
            host_shim: false,
        };
        let report =
            match crate::verbs::attach::attach_with(&spec, target, &host, &guest, false, false)
                .await
            {
                Ok(Some(r)) => r,
                Ok(None) => unreachable!("not a dry run"),
                Err(e) => {
                    release_now(self);
                    return Err(self.core(e));
                }
            };
        let mapping = Mapping {
            network: net,
            container_id: cid.to_string(),
            ifname: cni_ifname.to_string(),
            guest_ifname: ifname.to_string(),
            label: cid.to_string(),
            netns_path: netns_path.display().to_string(),
            netns: NsKey {
                dev: ns_id.dev,
                ino: ns_id.ino,
            },
            kind: report.kind.to_string(),
            host_if: report.host_if.clone(),
            host_ifname: report.host_ifname.clone(),
            config: serde_json::from_slice(self.raw).unwrap_or_default(),
        };
        // What the attach cannot express: IPAM routes other than the default.
        let finish = async {
            if let Some(r) = &ipam_res {
                self.extra_routes(&guest.nl, &ifname, r).await?;
            }
            store::save(&mapping).map_err(|e| {
                self.err(
                    code::STATE,
                    format!(
                        "cannot write {}: {e}",
                        store::path(&mapping.network, cid, cni_ifname.as_str()).display()
                    ),
                )
            })
        };
        if let Err(e) = finish.await {
            if let Err(t) = self.teardown(&mapping, None, &host).await {
                warn!("cni: undoing the attach after {e}: {t}");
            }
            release_now(self);
            return Err(e);
        }

        // The result: prevResult (chained) plus pipe's interface(s).
        let mut res = prev.unwrap_or_default();
        if let Some(h) = &report.host_ifname {
            let mac = host
                .link(h)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.mac)
                .map(|m| m.to_string());
            res.interfaces.push(Interface {
                name: h.clone(),
                mac,
                ..Default::default()
            });
        }
        let idx = res.interfaces.len();
        res.interfaces.push(Interface {
            name: ifname.to_string(),
            mac: report.mac.clone(),
            sandbox: Some(netns_path.display().to_string()),
            ..Default::default()
        });
        match ipam_res {
            Some(r) => {
                for mut ip in r.ips {
                    ip.interface = Some(idx);
                    res.ips.push(ip);
                }
                res.routes.extend(r.routes);
                if res.dns.is_null() {
                    res.dns = r.dns;
                }
            }
            None => {
                let gws = spec.addr.gateways();
                for a in spec.addr.all() {
                    let gw = gws.iter().find(|g| g.is_ipv4() == a.is_ipv4());
                    res.ips.push(IpConfig {
                        address: a.to_string(),
                        gateway: gw.map(|g| g.to_string()),
                        interface: Some(idx),
                        ..Default::default()
                    });
                }
                for g in gws {
                    res.routes.push(RouteEntry {
                        dst: if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.into(),
                        gw: Some(g.to_string()),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(res)
    }

    /// Routes from IPAM that are not default routes (those the attach made).
    async fn extra_routes(&self, guest: &Netlink, ifname: &IfName, r: &CniResult) -> CResult<()> {
        let extra: Vec<&RouteEntry> = r.routes.iter().filter(|r| !r.is_default()).collect();
        if extra.is_empty() {
            return Ok(());
        }
        let idx = guest
            .link(ifname.as_str())
            .await
            .ok()
            .flatten()
            .map(|l| l.index);
        for rt in extra {
            // A route without `gw` goes through the IP's gateway (as the
            // reference plugins do), else straight out of the interface.
            let gw = rt.gw.clone().or_else(|| {
                r.ips
                    .iter()
                    .filter(|i| i.address.contains(':') == rt.v6())
                    .find_map(|i| i.gateway.clone())
            });
            let mut args = vec!["add".to_string(), rt.dst.clone()];
            if let Some(gw) = gw {
                args.extend(["via".into(), gw]);
            }
            args.extend(["dev".into(), ifname.to_string()]);
            let spec = crate::domain::iproute::parse_route(&args)
                .map_err(|e| self.err(code::IPAM, format!("IPAM route {}: {e}", rt.dst)))?;
            guest.route_request(&spec, idx).await.map_err(|c| {
                self.core(Error::kernel(
                    format!("adding route {} in the container", rt.dst),
                    c,
                ))
            })?;
        }
        Ok(())
    }

    /// Release an IPAM allocation, best effort (after a failed ADD, in GC).
    fn release(&self, kind: &str, cid: &str, ifname: &str, conf: &[u8]) {
        let call = self.ipam_call("DEL", cid, ifname);
        if let Err(e) = ipam::run(kind, &self.env.path, &call, conf, self.ver) {
            warn!("cni: releasing the {kind} address of {cid}/{ifname}: {e}");
        }
    }

    /// Undo one attachment with pipe's detach: through its namespace when that
    /// still is the one the ADD saw, else from the host side and the record.
    async fn teardown(
        &self,
        m: &Mapping,
        netns_path: Option<&Path>,
        host: &Netlink,
    ) -> std::result::Result<Vec<String>, String> {
        let path = netns_path.unwrap_or(Path::new(&m.netns_path));
        let want = NsId {
            dev: m.netns.dev,
            ino: m.netns.ino,
        };
        let ns = match Netns::open(path) {
            Ok(ns) if ns.id == want => Some(ns),
            Ok(_) => {
                debug!(
                    "cni: {} now is another namespace: host side only",
                    path.display()
                );
                None
            }
            Err(e) => {
                debug!("cni: {}: {e}: host side only", path.display());
                None
            }
        };
        let guest = match &ns {
            Some(ns) => Some(self.guest_nl(ns).map_err(|e| e.msg)?),
            None => None,
        };
        self.detach_label(
            m.netns,
            &m.label,
            &m.guest_ifname,
            ns.as_ref().zip(guest.as_ref()),
            host,
        )
        .await
    }

    /// Detach pipe's attachment (namespace `ns`, `ifname`) with the core's
    /// detach: nothing left, or an interface that is not this attachment's, is done.
    async fn detach_label(
        &self,
        ns: crate::domain::identity::NsKey,
        label: &str,
        ifname: &str,
        guest: Option<(&Netns, &Netlink)>,
        host: &Netlink,
    ) -> std::result::Result<Vec<String>, String> {
        let ifname: crate::domain::spec::IfName = ifname.parse()?;
        let id = crate::domain::identity::AttachmentId::new(ns, ifname);
        let store = crate::verbs::detach::open_store().map_err(|e| e.to_string())?;
        match crate::verbs::detach::detach_id(&store, host, guest, id, label).await {
            Ok(o) => Ok(o.removed),
            Err(e) => {
                let m = e.to_string();
                if m.contains("nothing to detach")
                    || m.contains("not made by pipe")
                    || m.contains("another attachment's tag")
                {
                    debug!("cni: nothing to detach for {label}: {m}");
                    Ok(Vec::new())
                } else {
                    Err(m)
                }
            }
        }
    }

    async fn del(&self) -> CResult<()> {
        let ver = self.ver;
        let cid = self.env.container_id(ver)?;
        let cni_ifname = self.env.ifname(ver)?;
        let net = self.network()?;
        let _lock = self.lock()?;
        // Release the address while the links go: the IPAM plugin is a process
        // of its own, and the two do not depend on each other.
        let release = self
            .conf
            .ipam_type()
            .map(|kind| self.start_ipam(kind, "DEL", cid, cni_ifname.as_str(), ver, ipam::run));
        let torn: CResult<()> = async {
            let host = self.host()?;
            let m = store::load(net, cid, cni_ifname.as_str()).map_err(|e| {
                self.err(
                    code::STATE,
                    format!(
                        "cannot read {}: {e}; remove it if it is damaged",
                        store::path(net, cid, cni_ifname.as_str()).display()
                    ),
                )
            })?;
            match &m {
                Some(m) => {
                    let r = self.teardown(m, self.env.netns.as_deref(), &host).await;
                    r.map_err(|e| self.err(code::TEARDOWN, e))?;
                }
                None => {
                    // No mapping (DEL twice, or after a failed ADD): only an
                    // interface carrying this attachment's exact tag is pipe's.
                    if let Some(p) = &self.env.netns
                        && let Ok(ns) = Netns::open(p)
                        && ns.is_netns()
                        && netns::own_id().ok() != Some(ns.id)
                    {
                        let ifname = self.guest_ifname(&cni_ifname)?;
                        let guest = self.guest_nl(&ns)?;
                        let tag =
                            crate::domain::identity::AttachmentId::new(ns.id, ifname.clone()).tag();
                        if let Ok(Some(l)) = guest.link(ifname.as_str()).await
                            && l.alias.as_deref() == Some(tag.as_str())
                        {
                            self.detach_label(
                                ns.id.into(),
                                cid,
                                ifname.as_str(),
                                Some((&ns, &guest)),
                                &host,
                            )
                            .await
                            .map_err(|e| self.err(code::TEARDOWN, e))?;
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        // Wait for the release even when the teardown failed: both are reported.
        let released = match release {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(self.err(code::IPAM, "the IPAM release thread panicked")))
                .map(|_| ()),
            None => Ok(()),
        };
        torn?;
        released?;
        store::remove(net, cid, cni_ifname.as_str())
            .map_err(|e| self.err(code::STATE, format!("removing pipe's CNI record: {e}")))
    }

    async fn check(&self) -> CResult<()> {
        let ver = self.ver;
        let cid = self.env.container_id(ver)?;
        let cni_ifname = self.env.ifname(ver)?;
        let netns_path = self.env.netns(ver)?.clone();
        let net = self.network()?;
        let prev =
            self.conf.prev_result.as_ref().ok_or_else(|| {
                self.err(code::CONFIG, "CHECK needs prevResult in the configuration")
            })?;
        let prev = CniResult::parse(prev).map_err(|e| {
            self.err(code::DECODE, "cannot decode prevResult")
                .details(e)
        })?;
        let bad = |msg: String| self.err(code::CHECK_MISMATCH, msg);
        let m = store::load(net, cid, cni_ifname.as_str())
            .ok()
            .flatten()
            .ok_or_else(|| {
                bad(format!(
                    "pipe has no attachment {cid}/{cni_ifname} on network {net}"
                ))
            })?;
        if let Some(kind) = self.conf.ipam_type() {
            let call = self.ipam_call("CHECK", cid, cni_ifname.as_str());
            ipam::run(kind, &self.env.path, &call, self.raw, ver)?;
        }
        let ns = Netns::open(&netns_path).map_err(|e| {
            self.err(
                code::ENV,
                format!("CNI_NETNS {}: {e}", netns_path.display()),
            )
        })?;
        if ns.id.dev != m.netns.dev || ns.id.ino != m.netns.ino {
            return Err(bad(format!(
                "{} is not the namespace {cid}/{cni_ifname} was attached in",
                netns_path.display()
            )));
        }
        let sandbox = netns_path.display().to_string();
        let ifname = &m.guest_ifname;
        let (idx, want) = prev
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| &i.name == ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
            .ok_or_else(|| bad(format!("prevResult has no interface {ifname} in {sandbox}")))?;
        let guest = self.guest_nl(&ns)?;
        let link = guest
            .link(ifname)
            .await
            .map_err(|c| self.core(Error::kernel(format!("looking up {ifname}"), c)))?
            .ok_or_else(|| bad(format!("interface {ifname} is gone from {sandbox}")))?;
        if let (Some(w), Some(have)) = (&want.mac, link.mac)
            && !w.eq_ignore_ascii_case(&have.to_string())
        {
            return Err(bad(format!("{ifname} has MAC {have}, prevResult says {w}")));
        }
        let have: Vec<String> = guest
            .addresses(link.index)
            .await
            .map_err(|c| self.core(Error::kernel(format!("reading addresses of {ifname}"), c)))?
            .iter()
            .map(|a| a.net.to_string())
            .collect();
        for ip in prev.ips.iter().filter(|i| i.interface == Some(idx)) {
            if !have.contains(&ip.address) {
                return Err(bad(format!(
                    "{ifname} lacks address {} (has {})",
                    ip.address,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )));
            }
        }
        // Default routes through this interface's gateways.
        for r in prev.routes.iter().filter(|r| r.is_default()) {
            let gw = r.gw_ip().or_else(|| {
                prev.ips
                    .iter()
                    .filter(|i| i.interface == Some(idx))
                    .filter_map(|i| i.gateway.as_deref()?.parse::<IpAddr>().ok())
                    .find(|g| g.is_ipv6() == r.v6())
            });
            let Some(gw) = gw else { continue };
            let ours = prev
                .ips
                .iter()
                .any(|i| i.interface == Some(idx) && i.address.contains(':') == gw.is_ipv6());
            if !ours {
                continue;
            }
            let cur = guest
                .default_route(gw.is_ipv6(), 0)
                .await
                .map_err(|c| self.core(Error::kernel("reading the default route", c)))?;
            if cur.as_ref().and_then(|c| c.gateway()) != Some(gw) {
                return Err(bad(format!("the default route no longer goes via {gw}")));
            }
        }
        if let Some(h) = &m.host_ifname {
            let host = self.host()?;
            let hl = host
                .link(h)
                .await
                .map_err(|c| self.core(Error::kernel(format!("looking up {h}"), c)))?
                .ok_or_else(|| bad(format!("host interface {h} is gone")))?;
            let master = match hl.master {
                Some(i) => host.link_by_index(i).await.ok().flatten().map(|l| l.name),
                None => None,
            };
            if master.as_deref() != Some(m.host_if.as_str()) {
                return Err(bad(format!(
                    "host interface {h} is no longer a port of {}",
                    m.host_if
                )));
            }
        }
        Ok(())
    }

    async fn gc(&self) -> CResult<()> {
        let net = self.network()?;
        let valid = self.conf.valid_attachments.clone().ok_or_else(|| {
            self.err(
                code::CONFIG,
                "GC needs cni.dev/valid-attachments in the configuration",
            )
        })?;
        let _lock = self.lock()?;
        let host = self.host()?;
        let mut fails = Vec::new();
        for m in store::list(net) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    fails.push(format!("unreadable record {e}"));
                    continue;
                }
            };
            if valid
                .iter()
                .any(|a| a.container_id == m.container_id && a.ifname == m.ifname)
            {
                continue;
            }
            debug!("cni: GC {}/{}", m.container_id, m.ifname);
            if let Err(e) = self.teardown(&m, None, &host).await {
                fails.push(format!("{}/{}: {e}", m.container_id, m.ifname));
                continue;
            }
            if let Some(kind) = m
                .config
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(|t| t.as_str())
            {
                let body = serde_json::to_vec(&m.config).unwrap_or_default();
                let call = self.ipam_call("DEL", &m.container_id, &m.ifname);
                if let Err(e) = ipam::run(kind, &self.env.path, &call, &body, self.ver) {
                    fails.push(format!("{}/{}: {e}", m.container_id, m.ifname));
                    continue;
                }
            }
            if let Err(e) = store::remove(net, &m.container_id, &m.ifname) {
                fails.push(format!("{}/{}: {e}", m.container_id, m.ifname));
            }
        }
        if fails.is_empty() {
            Ok(())
        } else {
            Err(self.err(
                code::TEARDOWN,
                format!("GC could not remove everything: {}", fails.join("; ")),
            ))
        }
    }

    async fn status(&self) -> CResult<()> {
        let opts = Options::from_conf(self.conf, self.env, self.ver)?;
        let na = |msg: String| self.err(code::NOT_AVAILABLE, msg);
        let host = self.host()?;
        let links = host
            .links()
            .await
            .map_err(|c| self.core(Error::kernel("listing host interfaces", c)))?;
        match &opts.host_if {
            crate::domain::spec::HostIfRef::Name(n) => {
                let found = links.iter().any(|l| l.name == n.as_str());
                let on_demand = n.as_str().starts_with("br") && !opts.direct_phys;
                if !found && !on_demand {
                    return Err(na(format!(
                        "host interface {n} does not exist (only bridges named br* are created on demand)"
                    )));
                }
            }
            crate::domain::spec::HostIfRef::Mac(mac) => {
                if !links.iter().any(|l| l.mac == Some(*mac)) {
                    return Err(na(format!("no host interface has MAC {mac}")));
                }
            }
        }
        if let Some(kind) = self.conf.ipam_type()
            && !ipam::available(kind, &self.env.path, self.raw, self.env.args_raw.as_deref())
        {
            return Err(na(format!("IPAM plugin {kind} is not in CNI_PATH")));
        }
        Ok(())
    }
}

/// IPAM's addresses in pipe's terms: a gateway becomes the default route only
/// when IPAM's routes ask for one in that family (as the reference plugins do).
fn addr_from_ipam(r: &CniResult) -> std::result::Result<AddrSpec, String> {
    if r.ips.is_empty() {
        return Ok(AddrSpec::default());
    }
    let mut parts = Vec::new();
    let mut used = [false; 2];
    for ip in &r.ips {
        let v6 = ip.address.contains(':');
        let default = r.routes.iter().find(|rt| rt.is_default() && rt.v6() == v6);
        let gw = default
            .and_then(|d| d.gw.clone())
            .or_else(|| default.and(ip.gateway.clone()));
        match gw {
            Some(g) if !used[v6 as usize] => {
                used[v6 as usize] = true;
                parts.push(format!("{}@{g}", ip.address));
            }
            _ => parts.push(ip.address.clone()),
        }
    }
    parts.join(",").parse()
}

/// An IPAM call under way on its thread, or answered already.
enum Ipam<T> {
    Done(T),
    Thread(std::thread::JoinHandle<T>),
}

impl<T> Ipam<T> {
    fn join(self) -> std::thread::Result<T> {
        match self {
            Ipam::Done(t) => Ok(t),
            Ipam::Thread(h) => h.join(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_gateway_only_with_a_default_route() {
        let mut r: CniResult = serde_json::from_str(
            r#"{"ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}],"routes":[]}"#,
        )
        .unwrap();
        assert_eq!(addr_from_ipam(&r).unwrap().to_string(), "10.1.0.5/24");
        r.routes.push(RouteEntry {
            dst: "0.0.0.0/0".into(),
            ..Default::default()
        });
        assert_eq!(
            addr_from_ipam(&r).unwrap().to_string(),
            "10.1.0.5/24@10.1.0.1"
        );
        r.routes[0].gw = Some("10.1.0.254".into());
        assert_eq!(
            addr_from_ipam(&r).unwrap().to_string(),
            "10.1.0.5/24@10.1.0.254"
        );
    }
}
