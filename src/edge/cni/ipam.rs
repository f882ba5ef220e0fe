//! The IPAM plugin named in the config's `ipam.type`: `host-local` in process
//! (see [`super::hostlocal`]) when pipe reads the request exactly as the
//! plugin would; otherwise, and for every other type (static, dhcp...), the
//! plugin found in CNI_PATH, run with the same environment and the same
//! network configuration on stdin, as the spec prescribes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};

use log::debug;
use serde_json::Value;

use super::hostlocal::{self, Failure, Request};
use super::result::{CniError, CniResult, code};

/// Find `kind` in the CNI_PATH directories.
pub fn find(kind: &str, path: &[PathBuf]) -> Option<PathBuf> {
    if kind.is_empty() || kind.contains('/') {
        return None;
    }
    path.iter().map(|d| d.join(kind)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The per-call environment that differs from this process's own.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// `None` keeps this process's CNI_NETNS (empty for a DEL without one).
    pub netns: Option<&'a str>,
    /// The raw CNI_ARGS the plugin would see (this process's own).
    pub args: Option<&'a str>,
}

/// The request, when host-local can answer it in process.
fn in_process(kind: &str, call: &Call<'_>, stdin: &[u8], ver: &str) -> Option<Request> {
    if kind != "host-local" {
        return None;
    }
    // The plugin's skeleton refuses CHECK before 0.4.0: its error, not ours.
    if call.command == "CHECK" && matches!(ver, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1") {
        return None;
    }
    let r = hostlocal::config::check_call(call.container_id, call.ifname)
        .and_then(|()| Request::parse(stdin, call.args));
    match r {
        Ok(r) => Some(r),
        Err(why) => {
            debug!("cni: host-local: {}; running the plugin", why.0);
            None
        }
    }
}

/// Can ADD get addresses from `kind` (for STATUS)? host-local in process
/// needs no plugin in CNI_PATH.
pub fn available(kind: &str, path: &[PathBuf], stdin: &[u8], args: Option<&str>) -> bool {
    (kind == "host-local" && Request::parse(stdin, args).is_ok()) || find(kind, path).is_some()
}

/// An error of host-local in process, as the plugin's reaches pipe.
fn plugin_error(kind: &str, call: &Call<'_>, ver: &str, msg: String) -> CniError {
    CniError::new(
        ver,
        code::PLUGIN_INTERNAL,
        format!("IPAM plugin {kind} ({}): {msg}", call.command),
    )
}

/// DEL and CHECK (and anything else): in process or by the plugin; the
/// plugin's stdout, if any.
pub fn run(
    kind: &str,
    path: &[PathBuf],
    call: &Call<'_>,
    stdin: &[u8],
    ver: &str,
) -> Result<Option<Value>, CniError> {
    if let Some(req) = in_process(kind, call, stdin, ver) {
        let r = match call.command {
            "DEL" => Some(hostlocal::del(&req, call.container_id, call.ifname)),
            "CHECK" => Some(hostlocal::check(&req, call.container_id, call.ifname)),
            _ => None,
        };
        match r {
            Some(Ok(())) => return Ok(None),
            Some(Err(Failure::Plugin(m))) => return Err(plugin_error(kind, call, ver, m)),
            Some(Err(Failure::Fallback(why))) => {
                debug!("cni: host-local: {}; running the plugin", why.0)
            }
            None => {}
        }
    }
    exec(kind, path, call, stdin, ver)
}

/// Run the IPAM plugin `kind` itself with `stdin`; its stdout on success. A plugin
/// older than the config (host-local 1.1.1 knows spec 1.0.0 at most) is asked
/// again in 1.0.0, whose IPAM results have the same shape.
fn exec(
    kind: &str,
    path: &[PathBuf],
    call: &Call<'_>,
    stdin: &[u8],
    ver: &str,
) -> Result<Option<Value>, CniError> {
    match exec_once(kind, path, call, stdin, ver) {
        Err(e) if e.code == code::INCOMPATIBLE && ver.starts_with("1.") && ver != "1.0.0" => {
            let mut v: Value = serde_json::from_slice(stdin).map_err(|_| e.clone())?;
            v["cniVersion"] = "1.0.0".into();
            let body = serde_json::to_vec(&v).map_err(|_| e.clone())?;
            debug!("cni: IPAM plugin {kind} does not speak {ver}; asking in 1.0.0");
            exec_once(kind, path, call, &body, ver)
        }
        r => r,
    }
}

fn exec_once(
    kind: &str,
    path: &[PathBuf],
    call: &Call<'_>,
    stdin: &[u8],
    ver: &str,
) -> Result<Option<Value>, CniError> {
    let bin = find(kind, path).ok_or_else(|| {
        CniError::new(
            ver,
            code::IPAM,
            format!(
                "IPAM plugin {kind:?} is not in CNI_PATH ({}); install it (containernetworking-plugins) or fix ipam.type",
                path.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        )
    })?;
    debug!("cni: {} {}", call.command, bin.display());
    let mut cmd = Proc::new(&bin);
    cmd.env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_IFNAME", call.ifname)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(n) = call.netns {
        cmd.env("CNI_NETNS", n);
    }
    let mut child = cmd.spawn().map_err(|e| {
        CniError::new(
            ver,
            code::IPAM,
            format!("cannot run IPAM plugin {}: {e}", bin.display()),
        )
    })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            ver,
            code::IPAM,
            format!("waiting for IPAM plugin {}: {e}", bin.display()),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Pass the IPAM plugin's own error on, code and all.
        if let Ok(mut e) = serde_json::from_str::<CniError>(text.trim()) {
            e.cni_version = ver.to_string();
            e.msg = format!("IPAM plugin {kind} ({}): {}", call.command, e.msg);
            return Err(e);
        }
        return Err(CniError::new(
            ver,
            code::IPAM,
            format!(
                "IPAM plugin {kind} ({}) failed with {}: {}",
                call.command,
                out.status,
                text.trim()
            ),
        ));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text.trim()).map(Some).map_err(|e| {
        CniError::new(
            ver,
            code::IPAM,
            format!("IPAM plugin {kind} answered something that is not JSON: {e}"),
        )
    })
}

/// ADD: the addresses, routes and DNS the IPAM plugin hands out.
pub fn add(
    kind: &str,
    path: &[PathBuf],
    call: &Call<'_>,
    stdin: &[u8],
    ver: &str,
) -> Result<CniResult, CniError> {
    if let Some(req) = in_process(kind, call, stdin, ver) {
        match hostlocal::add(&req, call.container_id, call.ifname) {
            Ok(r) => return Ok(r),
            Err(Failure::Plugin(m)) => return Err(plugin_error(kind, call, ver, m)),
            Err(Failure::Fallback(why)) => {
                debug!("cni: host-local: {}; running the plugin", why.0)
            }
        }
    }
    let v = exec(kind, path, call, stdin, ver)?.ok_or_else(|| {
        CniError::new(
            ver,
            code::IPAM,
            format!("IPAM plugin {kind} answered ADD with nothing"),
        )
    })?;
    CniResult::parse(&v).map_err(|e| {
        CniError::new(
            ver,
            code::IPAM,
            format!("IPAM plugin {kind} answered ADD with an unreadable result: {e}"),
        )
    })
}
