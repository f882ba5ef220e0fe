//! A minimal OVSDB client (RFC 7047, JSON-RPC 1.0 over ovsdb-server's unix
//! socket) for the few transactions pipe needs on Open vSwitch: is a name a
//! bridge, create a bridge, add an access port that names its attachment in
//! `external_ids`, and remove such a port (only when it names that exact
//! attachment).
//!
//! Why not a crate: the Rust OVSDB crates are early (`ovsdb` 0.0.6, 2024, "heavily
//! WIP"; `ovsdb-client` 0.0.1, 2025, one release, async over jsonrpsee). These
//! five transactions are ~300 lines over `serde_json` and a blocking socket,
//! with no new dependency and no runtime.
//!
//! Writes that ovs-vswitchd must carry out (a new bridge, a new port) bump
//! `Open_vSwitch.next_cfg` in the same transaction and wait until the daemon
//! reports `cur_cfg` at least that far, as `ovs-vsctl` does: when pipe returns,
//! the port forwards.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DB: &str = "Open_vSwitch";
/// The `external_ids` key naming the attachment a port belongs to.
pub const OWNER_KEY: &str = "pipe-attachment";
/// The `external_ids` key on bridges pipe created.
pub const CREATED_KEY: &str = "pipe-created";
/// Where ovsdb-server listens, unless `PIPE_OVSDB` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/openvswitch/db.sock";
/// How long to wait for ovs-vswitchd to apply a change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The OVSDB socket: `$PIPE_OVSDB` (a path, or `unix:PATH`), else the default.
pub fn socket_path() -> PathBuf {
    match std::env::var("PIPE_OVSDB") {
        Ok(p) if !p.is_empty() => PathBuf::from(p.strip_prefix("unix:").unwrap_or(&p)),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Is there an OVSDB socket to talk to? (A cheap stat: hosts without Open
/// vSwitch never open a connection.)
pub fn available() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(socket_path()).is_ok_and(|m| m.file_type().is_socket())
}

#[derive(Debug)]
pub enum OvsError {
    Io(io::Error),
    /// The server answered with an error (JSON-RPC or a failed operation).
    Db(String),
}

impl std::fmt::Display for OvsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OvsError::Io(e) => write!(f, "{e}"),
            OvsError::Db(s) => write!(f, "{s}"),
        }
    }
}

impl From<io::Error> for OvsError {
    fn from(e: io::Error) -> Self {
        OvsError::Io(e)
    }
}

pub type OvsResult<T> = std::result::Result<T, OvsError>;

pub struct Ovsdb {
    tx: UnixStream,
    rx: serde_json::StreamDeserializer<
        'static,
        serde_json::de::IoRead<BufReader<UnixStream>>,
        Value,
    >,
    next_id: u64,
}

/// A port pipe made, as found in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedPort {
    pub name: String,
    /// The attachment's tag (`AttachmentId::tag`).
    pub owner: String,
}

impl Ovsdb {
    pub fn connect_default() -> OvsResult<Ovsdb> {
        Ovsdb::connect(&socket_path())
    }

    pub fn connect(path: &Path) -> OvsResult<Ovsdb> {
        let s = UnixStream::connect(path).map_err(|e| {
            OvsError::Io(io::Error::new(
                e.kind(),
                format!("connecting to ovsdb-server at {}: {e}", path.display()),
            ))
        })?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = s.try_clone()?;
        Ok(Ovsdb {
            tx: s,
            rx: serde_json::Deserializer::from_reader(BufReader::new(r)).into_iter(),
            next_id: 0,
        })
    }

    /// One JSON-RPC request; answers the server's `echo` requests meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> OvsResult<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let req = json!({"method": method, "params": params, "id": id});
        self.tx.write_all(req.to_string().as_bytes())?;
        loop {
            let msg = match self.rx.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => return Err(OvsError::Io(io::Error::other(e))),
                None => {
                    return Err(OvsError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ovsdb-server closed the connection",
                    )));
                }
            };
            if msg.get("method").and_then(Value::as_str) == Some("echo") {
                let reply = json!({"id": msg["id"], "result": msg["params"], "error": null});
                self.tx.write_all(reply.to_string().as_bytes())?;
                continue;
            }
            if msg.get("id") != Some(&json!(id)) {
                continue; // a notification, or an answer to nothing we wait for
            }
            if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
                return Err(OvsError::Db(format!("ovsdb-server: {e}")));
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// `transact` on the Open_vSwitch database; fails if any operation did
    /// (the server then committed nothing).
    pub fn transact(&mut self, ops: Vec<Value>) -> OvsResult<Vec<Value>> {
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let r = self.call("transact", Value::Array(params))?;
        let results = r
            .as_array()
            .cloned()
            .ok_or_else(|| OvsError::Db(format!("ovsdb-server: unexpected answer {r}")))?;
        for x in &results {
            if let Some(e) = x.get("error").filter(|e| !e.is_null()) {
                let details = x.get("details").and_then(Value::as_str).unwrap_or("");
                return Err(OvsError::Db(format!(
                    "ovsdb-server refused the transaction: {}{}{}",
                    e.as_str().unwrap_or("error"),
                    if details.is_empty() { "" } else { ": " },
                    details
                )));
            }
        }
        Ok(results)
    }

    fn select(&mut self, table: &str, cond: Value, columns: &[&str]) -> OvsResult<Vec<Value>> {
        let r = self.transact(vec![json!({
            "op": "select", "table": table, "where": cond, "columns": columns
        })])?;
        Ok(r.first()
            .and_then(|x| x["rows"].as_array().cloned())
            .unwrap_or_default())
    }

    /// Is `name` a bridge in the database?
    pub fn is_bridge(&mut self, name: &str) -> OvsResult<bool> {
        Ok(!self
            .select("Bridge", json!([["name", "==", name]]), &["name"])?
            .is_empty())
    }

    /// Create bridge `name` (with its internal port), marked as pipe's.
    /// `Ok(false)`: another writer created it first (the name is unique).
    pub fn add_bridge(&mut self, name: &str) -> OvsResult<bool> {
        let r = self.transact_and_apply(vec![
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                   "row": {"name": name, "type": "internal"}}),
            json!({"op": "insert", "table": "Port", "uuid-name": "port",
                   "row": {"name": name, "interfaces": ["named-uuid", "iface"]}}),
            json!({"op": "insert", "table": "Bridge", "uuid-name": "br",
                   "row": {"name": name, "ports": ["named-uuid", "port"],
                           "external_ids": ["map", [[CREATED_KEY, "true"]]]}}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                   "mutations": [["bridges", "insert", ["set", [["named-uuid", "br"]]]]]}),
        ]);
        match r {
            Ok(()) => Ok(true),
            Err(OvsError::Db(e))
                if e.contains("constraint violation") && self.is_bridge(name)? =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete bridge `name` if pipe created it and it has no port but its own.
    pub fn del_bridge_if_unused(&mut self, name: &str) -> OvsResult<bool> {
        let rows = self.select(
            "Bridge",
            json!([["name", "==", name]]),
            &["_uuid", "ports", "external_ids"],
        )?;
        let Some(b) = rows.first() else {
            return Ok(false);
        };
        if map_get(&b["external_ids"], CREATED_KEY).is_none() || set_len(&b["ports"]) > 1 {
            return Ok(false);
        }
        let uuid = b["_uuid"].clone();
        self.transact_and_apply(vec![
            json!({"op": "wait", "table": "Bridge", "timeout": 0, "where": [["_uuid", "==", uuid]],
                   "columns": ["ports"], "until": "==", "rows": [{"ports": b["ports"]}]}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                   "mutations": [["bridges", "delete", ["set", [uuid]]]]}),
        ])?;
        Ok(true)
    }

    /// Add port `port` (an existing kernel link) to `bridge`, as an access port
    /// of VLAN `tag` if given, with `external_ids:pipe-attachment=owner` on the
    /// port and its interface. Fails (changing nothing) if the bridge is gone.
    pub fn add_port(
        &mut self,
        bridge: &str,
        port: &str,
        tag: Option<u16>,
        owner: &str,
    ) -> OvsResult<()> {
        let ids = json!(["map", [[OWNER_KEY, owner]]]);
        let tag = match tag {
            Some(t) => json!(t),
            None => json!(["set", []]),
        };
        self.transact_and_apply(vec![
            json!({"op": "wait", "table": "Bridge", "timeout": 0, "where": [["name", "==", bridge]],
                   "columns": ["name"], "until": "==", "rows": [{"name": bridge}]}),
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                   "row": {"name": port, "external_ids": ids}}),
            json!({"op": "insert", "table": "Port", "uuid-name": "port",
                   "row": {"name": port, "interfaces": ["named-uuid", "iface"],
                           "tag": tag, "external_ids": ids}}),
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
                   "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
        ])
    }

    /// Remove port `port` from its bridge if its `external_ids` name exactly
    /// the attachment `owner` (the Port and Interface rows go with it).
    /// `Ok(false)`: no such port, or not that attachment's (kept).
    pub fn del_port_owned(&mut self, port: &str, owner: &str) -> OvsResult<bool> {
        let rows = self.select(
            "Port",
            json!([["name", "==", port]]),
            &["_uuid", "external_ids"],
        )?;
        let Some(p) = rows.first() else {
            return Ok(false);
        };
        if map_get(&p["external_ids"], OWNER_KEY) != Some(owner) {
            return Ok(false);
        }
        let uuid = p["_uuid"].clone();
        let r = self.transact(vec![
            // The port must still be the one read above (optimistic concurrency).
            json!({"op": "wait", "table": "Port", "timeout": 0, "where": [["_uuid", "==", uuid]],
                   "columns": ["external_ids"], "until": "==",
                   "rows": [{"external_ids": p["external_ids"]}]}),
            json!({"op": "mutate", "table": "Bridge", "where": [["ports", "includes", uuid]],
                   "mutations": [["ports", "delete", ["set", [uuid]]]]}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                   "mutations": [["next_cfg", "+=", 1]]}),
        ]);
        match r {
            Ok(_) => Ok(true),
            // Changed or deleted meanwhile: not ours to decide any more.
            Err(OvsError::Db(e)) if e.contains("timed out") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every port whose `external_ids` name an attachment.
    pub fn owned_ports(&mut self) -> OvsResult<Vec<OwnedPort>> {
        let rows = self.select("Port", json!([]), &["name", "external_ids"])?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(OwnedPort {
                    name: r["name"].as_str()?.to_string(),
                    owner: map_get(&r["external_ids"], OWNER_KEY)?.to_string(),
                })
            })
            .collect())
    }

    /// Run `ops` plus a `next_cfg` bump, then wait for ovs-vswitchd to apply it.
    fn transact_and_apply(&mut self, mut ops: Vec<Value>) -> OvsResult<()> {
        ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                        "mutations": [["next_cfg", "+=", 1]]}));
        ops.push(json!({"op": "select", "table": "Open_vSwitch", "where": [],
                        "columns": ["next_cfg"]}));
        let r = self.transact(ops)?;
        let want = r
            .last()
            .and_then(|x| x["rows"][0]["next_cfg"].as_i64())
            .ok_or_else(|| OvsError::Db("ovsdb-server: no Open_vSwitch row".into()))?;
        self.wait_applied(want)
    }

    fn wait_applied(&mut self, want: i64) -> OvsResult<()> {
        let start = Instant::now();
        loop {
            let rows = self.select("Open_vSwitch", json!([]), &["cur_cfg"])?;
            let cur = rows
                .first()
                .and_then(|r| r["cur_cfg"].as_i64())
                .unwrap_or(0);
            if cur >= want {
                return Ok(());
            }
            if start.elapsed() > APPLY_TIMEOUT {
                return Err(OvsError::Db(format!(
                    "ovs-vswitchd did not apply the change within {} s (cur_cfg {cur} < {want}); \
                     is ovs-vswitchd running?",
                    APPLY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The value of `key` in an OVSDB map (`["map", [[k, v], ...]]`).
fn map_get<'a>(m: &'a Value, key: &str) -> Option<&'a str> {
    m.get(1)?
        .as_array()?
        .iter()
        .find(|kv| kv[0].as_str() == Some(key))
        .and_then(|kv| kv[1].as_str())
}

/// The number of elements of an OVSDB set (a bare atom is a set of one).
fn set_len(s: &Value) -> usize {
    match s {
        Value::Array(a) if a.first().and_then(Value::as_str) == Some("set") => {
            a.get(1).and_then(Value::as_array).map_or(0, Vec::len)
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn ovsdb_values() {
        let m = json!(["map", [["a", "1"], [OWNER_KEY, "pipe:1-2:eth1"]]]);
        assert_eq!(map_get(&m, OWNER_KEY), Some("pipe:1-2:eth1"));
        assert_eq!(map_get(&m, "zz"), None);
        assert_eq!(map_get(&json!(["map", []]), OWNER_KEY), None);
        assert_eq!(set_len(&json!(["uuid", "x"])), 1);
        assert_eq!(set_len(&json!(["set", [["uuid", "x"], ["uuid", "y"]]])), 2);
        assert_eq!(set_len(&json!(["set", []])), 0);
    }

    /// Protocol framing only (a recorded exchange, not an OVSDB): messages
    /// arrive back to back without separators and split across reads, the
    /// server's `echo` is answered, and a failed operation is an error.
    #[test]
    fn framing_echo_and_errors_against_a_recorded_exchange() {
        let dir = std::env::temp_dir().join(format!("pipe-ovsdb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("db.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut read_one = |s: &mut UnixStream| -> Value {
                loop {
                    let mut de = serde_json::Deserializer::from_slice(&got).into_iter::<Value>();
                    if let Some(Ok(v)) = de.next() {
                        let used = de.byte_offset();
                        got.drain(..used);
                        return v;
                    }
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "client closed");
                    got.extend_from_slice(&buf[..n]);
                }
            };
            // 1: select Bridge -> an echo first, then the answer in two pieces.
            let q = read_one(&mut s);
            assert_eq!(q["method"], "transact");
            assert_eq!(q["params"][0], "Open_vSwitch");
            assert_eq!(q["params"][1]["table"], "Bridge");
            s.write_all(br#"{"id":"echo","method":"echo","params":[]}"#)
                .unwrap();
            let echo = read_one(&mut s);
            assert_eq!(echo["id"], "echo");
            let ans = format!(
                r#"{{"id":{},"result":[{{"rows":[{{"name":"ovsbr0"}}]}}],"error":null}}"#,
                q["id"]
            );
            let (a, b) = ans.split_at(10);
            s.write_all(a.as_bytes()).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b.as_bytes()).unwrap();
            // 2: select Port -> a constraint error in the result list.
            let q = read_one(&mut s);
            let ans = format!(
                r#"{{"id":{},"result":[{{"error":"constraint violation","details":"duplicate name"}}],"error":null}}{{"id":{},"result":[{{"rows":[{{"name":"v1","external_ids":["map",[["pipe-attachment","pipe:1-2:eth1"]]]}},{{"name":"other","external_ids":["map",[]]}}]}}],"error":null}}"#,
                q["id"],
                q["id"].as_u64().unwrap() + 1
            );
            s.write_all(ans.as_bytes()).unwrap();
            let q2 = read_one(&mut s);
            assert_eq!(q2["params"][1]["table"], "Port");
        });
        let mut c = Ovsdb::connect(&sock).unwrap();
        assert!(c.is_bridge("ovsbr0").unwrap());
        let e = c
            .transact(vec![json!({"op": "select", "table": "Port", "where": []})])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("constraint violation: duplicate name"),
            "{e}"
        );
        assert_eq!(
            c.owned_ports().unwrap(),
            vec![OwnedPort {
                name: "v1".into(),
                owner: "pipe:1-2:eth1".into()
            }]
        );
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
