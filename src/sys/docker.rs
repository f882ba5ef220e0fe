//! Docker Engine lookup: turns a container name or ID into the PID whose network namespace
//! `pipe` works on, and tells how that container's network is set up.
//!
//! This is the only module that talks to the Engine API (through `bollard`, over the socket
//! named by `DOCKER_HOST`); it imports nothing else from this crate. No `docker` CLI is spawned.
//! Podman's Docker-compatible socket works through the same code.

use std::fmt;
use std::io;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use log::debug;
use tokio::time::Instant;

/// Where the Docker CLI looks when `DOCKER_HOST` is unset or empty.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// API version of the first request, sent without asking `/version` first: that round trip would
/// double the cost of a name lookup. Docker 20.10 (Debian bookworm's docker.io) speaks 1.41, and
/// every Engine up to 28.x still accepts it. Engines that raised their minimum (Docker 29
/// requires 1.44) and older ones (< 20.10) reject it with HTTP 400; only then do we negotiate.
///
/// Quirk: bollard 0.21.1 joins the request path onto `/v1.41` as an absolute URL path, which
/// drops the version prefix, so requests actually go out unversioned and every Engine answers in
/// its own current API version (and Podman's compat API too). The fallback stays for the day
/// bollard sends the prefix; the unit tests accept both.
const FIRST_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// How often a starting container (no PID yet) is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// No single request may wait longer than this (or the caller's timeout, if longer): a wedged
/// daemon must not hang `pipe` for bollard's default two minutes.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A running container, as the Engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full 64-character ID.
    pub id: String,
    /// Name without the Engine's leading `/`.
    pub name: String,
    /// PID of the container's init process (in the host's PID namespace).
    pub pid: u32,
    /// Which network namespace that PID lives in.
    pub net: NetMode,
}

/// How the container's network namespace was set up (`docker run --net=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// `bridge`, `none`, a user-defined network...: a namespace of its own.
    Own,
    /// `--net=host`: the container shares the host's namespace.
    Host,
    /// `--net=container:OTHER`: the container shares OTHER's namespace.
    Shared {
        /// Name of the container whose namespace is shared (its ID if the name is unknown).
        with: String,
    },
}

impl NetMode {
    /// Reads `HostConfig.NetworkMode`.
    pub fn from_network_mode(mode: &str) -> NetMode {
        if mode == "host" {
            NetMode::Host
        } else if let Some(other) = mode.strip_prefix("container:") {
            NetMode::Shared {
                with: other.to_string(),
            }
        } else {
            NetMode::Own
        }
    }
}

pub use crate::domain::error::DockerError;

/// Finds a container by name (with or without the leading `/`), full ID or unique ID prefix,
/// through the Engine named by `DOCKER_HOST` (default `unix:///var/run/docker.sock`).
///
/// A container that is starting (state `created` or `restarting`, no PID yet) is polled every
/// 20 ms until `timeout` has passed: `docker run -d web && pipe ... web` and systemd
/// `ExecStartPost=` race with the start. Paused, exited and dead containers fail at once.
pub async fn resolve(query: &str, timeout: Duration) -> Result<Container, DockerError> {
    let env = std::env::var("DOCKER_HOST").ok();
    resolve_at(&Endpoint::from_env(env.as_deref())?, query, timeout).await
}

/// Names of the running containers, for shell completion: best effort within `budget`
/// (connecting included), and an empty list on any error, with nothing logged above debug.
/// One request at API 1.41 (see `FIRST_VERSION`), no negotiation round trip.
pub async fn container_names(budget: Duration) -> Vec<String> {
    use bollard::query_parameters::ListContainersOptions;
    let env = std::env::var("DOCKER_HOST").ok();
    let Ok(endpoint) = Endpoint::from_env(env.as_deref()) else {
        return Vec::new();
    };
    let Ok(docker) = Engine::client(&endpoint, budget.as_secs().max(1), &FIRST_VERSION) else {
        return Vec::new();
    };
    let list = docker.list_containers(Some(ListContainersOptions {
        all: false,
        ..Default::default()
    }));
    match tokio::time::timeout(budget, list).await {
        Ok(Ok(list)) => list
            .into_iter()
            .filter_map(|c| c.names?.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect(),
        Ok(Err(e)) => {
            debug!("listing containers for completion: {e}");
            Vec::new()
        }
        Err(_) => {
            debug!("listing containers for completion: no answer within {budget:?}");
            Vec::new()
        }
    }
}

/// [`resolve`] against an explicit endpoint (tests cannot safely change the environment).
pub(crate) async fn resolve_at(
    endpoint: &Endpoint,
    query: &str,
    timeout: Duration,
) -> Result<Container, DockerError> {
    let wanted = normalize(query)?;
    let started = Instant::now();
    let mut engine = Engine::connect(endpoint, timeout)?;
    loop {
        debug!(
            "docker: inspect container {wanted} (fields used: Id, Name, State.Status, State.Pid, HostConfig.NetworkMode)"
        );
        let answer = engine.inspect(wanted, query).await?;
        match from_inspect(query, &answer) {
            Err(DockerError::Starting { name, state }) => {
                let waited = started.elapsed();
                if waited + POLL_INTERVAL > timeout {
                    return Err(DockerError::StillStarting {
                        name,
                        state,
                        waited: timeout,
                    });
                }
                debug!("container {name} is {state} without a PID; asking again in 20 ms");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Ok(mut container) => {
                if let NetMode::Shared { with } = &container.net {
                    // The Engine records the other container by ID; a name reads better in
                    // messages. Best effort: keep the ID if the lookup fails.
                    if let Some(name) = engine.name_of(with).await {
                        container.net = NetMode::Shared { with: name };
                    }
                }
                debug!(
                    "container {} is {} with PID {} ({:?})",
                    container.name, container.id, container.pid, container.net
                );
                return Ok(container);
            }
            Err(other) => return Err(other),
        }
    }
}

/// Maps the Engine's answer to `GET /containers/{query}/json` to a container we can attach to,
/// or to the reason we cannot. Pure: no I/O.
pub fn from_inspect(
    query: &str,
    answer: &ContainerInspectResponse,
) -> Result<Container, DockerError> {
    let bad = |what: &str| DockerError::BadResponse {
        query: query.to_string(),
        what: what.to_string(),
    };
    let id = answer
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad("no Id"))?;
    let name = answer
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| query.strip_prefix('/').unwrap_or(query))
        .to_string();
    let state = answer.state.as_ref().ok_or_else(|| bad("no State"))?;
    let pid = state.pid.unwrap_or(0);
    let status = match &state.status {
        Some(status) if *status != ContainerStateStatusEnum::EMPTY => status.as_ref(),
        // Engines that leave Status empty still set the flags.
        _ => match (state.dead, state.paused, state.restarting, state.running) {
            (Some(true), ..) => "dead",
            (_, Some(true), ..) => "paused",
            (_, _, Some(true), _) => "restarting",
            (.., Some(true)) => "running",
            _ if state.started_at.is_none() => "created",
            _ => "exited",
        },
    };
    let start_error = state.error.as_deref().map(str::trim).unwrap_or("");
    match (status, pid) {
        ("running", pid) if pid > 0 => {}
        // `docker run` of a command that cannot be executed leaves it created, with the reason.
        ("created", _) if !start_error.is_empty() => {
            return Err(DockerError::NotRunning {
                name,
                state: format!("created but failed to start ({start_error})"),
            });
        }
        // Starting: runc has not reported the init process yet.
        ("created" | "restarting", _) => {
            return Err(DockerError::Starting {
                name,
                state: status.to_string(),
            });
        }
        ("running", _) => {
            return Err(DockerError::Starting {
                name,
                state: "starting".to_string(),
            });
        }
        (other, _) => {
            return Err(DockerError::NotRunning {
                name,
                state: other.to_string(),
            });
        }
    }
    let pid = u32::try_from(pid).map_err(|_| bad(&format!("PID {pid} out of range")))?;
    let net = answer
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .map_or(NetMode::Own, NetMode::from_network_mode);
    Ok(Container { id, name, pid, net })
}

/// Strips the leading `/` the Engine puts on names and rejects what can be neither a name nor an
/// ID (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, the Engine's own rule), so the query is safe in a URL path.
fn normalize(query: &str) -> Result<&str, DockerError> {
    let wanted = query.strip_prefix('/').unwrap_or(query);
    let valid = wanted.starts_with(|c: char| c.is_ascii_alphanumeric())
        && wanted
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(wanted)
    } else {
        Err(DockerError::NoSuchContainer {
            query: query.to_string(),
        })
    }
}

/// The daemon's address, parsed from `DOCKER_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `unix:///path` or `tcp://host:port`, as bollard wants it.
    url: String,
    /// Where it came from, for messages: `unix:///var/run/docker.sock` or `DOCKER_HOST=...`.
    shown: String,
    unix: bool,
}

impl Endpoint {
    pub(crate) fn from_env(docker_host: Option<&str>) -> Result<Endpoint, DockerError> {
        let Some(host) = docker_host.filter(|h| !h.is_empty()) else {
            return Ok(Endpoint {
                url: DEFAULT_HOST.to_string(),
                shown: DEFAULT_HOST.to_string(),
                unix: true,
            });
        };
        let unsupported = |why| DockerError::UnsupportedHost {
            host: host.to_string(),
            why,
        };
        let shown = format!("DOCKER_HOST={host}");
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(unsupported("no socket path"));
            }
            Ok(Endpoint {
                url: host.to_string(),
                shown,
                unix: true,
            })
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            // The Docker CLI switches to TLS when DOCKER_TLS_VERIFY is set; without TLS support
            // we must not silently talk plain HTTP to a TLS port.
            if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
                return Err(unsupported("TLS (DOCKER_TLS_VERIFY) is not built in"));
            }
            Ok(Endpoint {
                url: host.to_string(),
                shown,
                unix: false,
            })
        } else if host.starts_with("ssh://") {
            Err(unsupported("ssh:// is not built in"))
        } else if host.starts_with("https://") {
            Err(unsupported("TLS is not built in"))
        } else {
            Err(unsupported("unknown scheme"))
        }
    }

    #[cfg(test)]
    fn unix(path: &str) -> Endpoint {
        Endpoint {
            url: format!("unix://{path}"),
            shown: format!("unix://{path}"),
            unix: true,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A client for one daemon, which remembers whether the API version was negotiated.
struct Engine<'a> {
    endpoint: &'a Endpoint,
    docker: Docker,
    request_secs: u64,
    negotiated: bool,
}

impl<'a> Engine<'a> {
    fn connect(endpoint: &'a Endpoint, timeout: Duration) -> Result<Engine<'a>, DockerError> {
        let request_secs = timeout.max(MIN_REQUEST_TIMEOUT).as_secs_f64().ceil() as u64;
        let docker = Self::client(endpoint, request_secs, &FIRST_VERSION)?;
        Ok(Engine {
            endpoint,
            docker,
            request_secs,
            negotiated: false,
        })
    }

    fn client(
        endpoint: &Endpoint,
        request_secs: u64,
        version: &ClientVersion,
    ) -> Result<Docker, DockerError> {
        debug!("connecting to the Docker daemon at {endpoint} (API {version})");
        let docker = if endpoint.unix {
            Docker::connect_with_unix(&endpoint.url, request_secs, version)
        } else {
            Docker::connect_with_http(&endpoint.url, request_secs, version)
        };
        docker.map_err(|e| unreachable(endpoint, &e))
    }

    /// `GET /containers/{wanted}/json`, negotiating the API version once if the daemon refuses
    /// the one we tried.
    async fn inspect(
        &mut self,
        wanted: &str,
        query: &str,
    ) -> Result<ContainerInspectResponse, DockerError> {
        debug!(
            "inspecting container {wanted} at {} (API {})",
            self.endpoint,
            self.docker.client_version()
        );
        let mut answer = self.docker.inspect_container(wanted, None).await;
        if !self.negotiated
            && let Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) = &answer
            && is_version_refusal(message)
        {
            debug!("the daemon refused API {FIRST_VERSION} ({message}); negotiating");
            self.negotiated = true;
            // Start from the newest version bollard knows; negotiate_version only lowers it.
            let fresh = Self::client(self.endpoint, self.request_secs, API_DEFAULT_VERSION)?;
            self.docker = fresh
                .negotiate_version()
                .await
                .map_err(|e| self.failure(query, e))?;
            debug!("negotiated API {}", self.docker.client_version());
            answer = self.docker.inspect_container(wanted, None).await;
        }
        answer.map_err(|e| self.failure(query, e))
    }

    /// The name of another container, if the daemon knows it.
    async fn name_of(&mut self, id: &str) -> Option<String> {
        let wanted = normalize(id).ok()?;
        let answer = self.inspect(wanted, id).await.ok()?;
        let name = answer.name?;
        Some(name.strip_prefix('/').unwrap_or(&name).to_string())
    }

    fn failure(&self, query: &str, err: BollardError) -> DockerError {
        match err {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NoSuchContainer {
                query: query.to_string(),
            },
            BollardError::DockerResponseServerError { message, .. } if is_ambiguous(&message) => {
                DockerError::Ambiguous {
                    query: query.to_string(),
                }
            }
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api {
                host: self.endpoint.to_string(),
                query: query.to_string(),
                message: format!("{} (HTTP {status_code})", message.trim()),
            },
            BollardError::JsonDataError { message, .. } => DockerError::BadResponse {
                query: query.to_string(),
                what: format!("cannot decode it: {message}"),
            },
            BollardError::RequestTimeoutError => DockerError::Unreachable {
                host: self.endpoint.to_string(),
                reason: format!("no answer within {}s", self.request_secs),
            },
            other => unreachable(self.endpoint, &other),
        }
    }
}

/// A refusal of the API version in the request path, from an Engine that is too new
/// ("client version 1.41 is too old. Minimum supported API version is 1.44") or too old
/// ("client version 1.41 is too new. Maximum supported API version is 1.40").
fn is_version_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("client version") && (m.contains("too old") || m.contains("too new"))
        || m.contains("supported api version")
}

/// Docker: "Multiple IDs found with provided prefix: 0"; Podman: "more than one result for
/// container ...".
fn is_ambiguous(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("multiple ids") || m.contains("more than one result") || m.contains("ambiguous")
}

/// Turns a transport failure into the one-line reason a user can act on.
fn unreachable(endpoint: &Endpoint, err: &BollardError) -> DockerError {
    let reason = match err {
        BollardError::SocketNotFoundError(_) => "socket not found".to_string(),
        _ => {
            let mut cause: &dyn std::error::Error = err;
            let mut io_kind = None;
            loop {
                if let Some(e) = cause.downcast_ref::<io::Error>() {
                    io_kind = Some(e.kind());
                }
                match cause.source() {
                    Some(next) => cause = next,
                    None => break,
                }
            }
            match io_kind {
                Some(io::ErrorKind::NotFound) => "socket not found".to_string(),
                Some(io::ErrorKind::ConnectionRefused) => {
                    "connection refused (no daemon listening)".to_string()
                }
                Some(io::ErrorKind::PermissionDenied) => {
                    "permission denied (run as root)".to_string()
                }
                _ => cause.to_string(),
            }
        }
    };
    DockerError::Unreachable {
        host: endpoint.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    fn inspect(json: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(json).expect("valid inspect JSON")
    }

    fn state(status: &str, pid: i64) -> ContainerInspectResponse {
        inspect(json!({
            "Id": "bec3447c0664e4cb2f4d208e8f6c2baabeb70094370f0232deba9126465aaffb",
            "Name": "/web",
            "State": {"Status": status, "Pid": pid},
            "HostConfig": {"NetworkMode": "none"},
        }))
    }

    fn message(r: Result<Container, DockerError>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn running_container_with_own_namespace() {
        let c = from_inspect("web", &state("running", 6165)).unwrap();
        assert_eq!(
            c,
            Container {
                id: "bec3447c0664e4cb2f4d208e8f6c2baabeb70094370f0232deba9126465aaffb".into(),
                name: "web".into(),
                pid: 6165,
                net: NetMode::Own,
            }
        );
    }

    #[test]
    fn real_docker_20_10_answer_decodes() {
        // `curl --unix-socket /var/run/docker.sock http://d/v1.41/containers/web2/json` from
        // Debian's docker.io 20.10.24 (a container on the default bridge): bollard's models have
        // strict enums, so this checks a real answer still decodes.
        let answer: ContainerInspectResponse = serde_json::from_str(DOCKER_20_10_WEB2).unwrap();
        let c = from_inspect("web2", &answer).unwrap();
        assert_eq!(c.name, "web2");
        assert_eq!(c.pid, 6257);
        assert_eq!(c.net, NetMode::Own);
        assert!(c.id.starts_with("52690f3ef72f"));
    }

    #[test]
    fn network_modes() {
        assert_eq!(NetMode::from_network_mode("host"), NetMode::Host);
        assert_eq!(NetMode::from_network_mode("none"), NetMode::Own);
        assert_eq!(NetMode::from_network_mode("default"), NetMode::Own);
        assert_eq!(NetMode::from_network_mode("bridge"), NetMode::Own);
        assert_eq!(NetMode::from_network_mode("mynet"), NetMode::Own);
        assert_eq!(
            NetMode::from_network_mode("container:74ef74cf1737"),
            NetMode::Shared {
                with: "74ef74cf1737".into()
            }
        );
        let shared = inspect(json!({
            "Id": "c3", "Name": "/c3",
            "State": {"Status": "running", "Pid": 10},
            "HostConfig": {"NetworkMode": "container:bec3447c0664"},
        }));
        assert_eq!(
            from_inspect("c3", &shared).unwrap().net,
            NetMode::Shared {
                with: "bec3447c0664".into()
            }
        );
        let host = inspect(json!({
            "Id": "h", "Name": "/h",
            "State": {"Status": "running", "Pid": 10},
            "HostConfig": {"NetworkMode": "host"},
        }));
        assert_eq!(from_inspect("h", &host).unwrap().net, NetMode::Host);
    }

    #[test]
    fn starting_states_are_transient() {
        for (status, pid, shown) in [
            ("created", 0, "created"),
            ("restarting", 0, "restarting"),
            ("running", 0, "starting"),
        ] {
            match from_inspect("web", &state(status, pid)) {
                Err(DockerError::Starting { name, state }) => {
                    assert_eq!(name, "web");
                    assert_eq!(state, shown);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn stopped_states_name_the_state_and_the_fix() {
        assert_eq!(
            message(from_inspect("web", &state("exited", 0))),
            "container web is exited; start it with docker start web"
        );
        assert_eq!(
            message(from_inspect("web", &state("paused", 42))),
            "container web is paused; resume it with docker unpause web"
        );
        assert_eq!(
            message(from_inspect("web", &state("dead", 0))),
            "container web is dead; remove it with docker rm web and run it again"
        );
        assert!(message(from_inspect("web", &state("removing", 0))).contains("is removing"));
    }

    #[test]
    fn failed_start_is_not_waited_for() {
        let failed = inspect(json!({
            "Id": "x", "Name": "/ex",
            "State": {"Status": "created", "Pid": 0, "Error": "exec: \"true\": executable file not found in $PATH"},
        }));
        assert_eq!(
            message(from_inspect("ex", &failed)),
            "container ex is created but failed to start (exec: \"true\": executable file not \
             found in $PATH); start it with docker start ex"
        );
    }

    #[test]
    fn empty_status_falls_back_to_flags() {
        let flags = |f: serde_json::Value| inspect(json!({"Id": "x", "Name": "/web", "State": f}));
        let c = from_inspect(
            "web",
            &flags(json!({"Status": "", "Running": true, "Pid": 7})),
        );
        assert_eq!(c.unwrap().pid, 7);
        let paused = flags(json!({"Running": true, "Paused": true, "Pid": 7}));
        assert!(message(from_inspect("web", &paused)).contains("is paused"));
        let exited =
            flags(json!({"Running": false, "Pid": 0, "StartedAt": "2026-01-01T00:00:00Z"}));
        assert!(message(from_inspect("web", &exited)).contains("is exited"));
    }

    #[test]
    fn unusable_answers() {
        let no_state = inspect(json!({"Id": "x", "Name": "/web"}));
        assert!(message(from_inspect("web", &no_state)).contains("no State"));
        let no_id = inspect(json!({"Name": "/web", "State": {"Status": "running", "Pid": 1}}));
        assert!(message(from_inspect("web", &no_id)).contains("no Id"));
        let huge = inspect(json!({"Id": "x", "State": {"Status": "running", "Pid": 1i64 << 40}}));
        assert!(message(from_inspect("web", &huge)).contains("out of range"));
    }

    #[test]
    fn name_falls_back_to_query_without_slash() {
        let unnamed = inspect(json!({"Id": "x", "State": {"Status": "running", "Pid": 1}}));
        assert_eq!(from_inspect("/web", &unnamed).unwrap().name, "web");
    }

    #[test]
    fn queries_are_names_or_ids() {
        assert_eq!(normalize("/web").unwrap(), "web");
        assert_eq!(normalize("web_1.a-b").unwrap(), "web_1.a-b");
        assert_eq!(normalize("bec3447c").unwrap(), "bec3447c");
        for bad in ["", "/", "//web", "a/b", "-web", "web?x", "../x", "we b"] {
            assert_eq!(
                normalize(bad).unwrap_err().to_string(),
                format!("no such container: {bad}; list containers with docker ps -a")
            );
        }
    }

    #[test]
    fn docker_host_parsing() {
        let default = Endpoint::from_env(None).unwrap();
        assert_eq!(default.url, DEFAULT_HOST);
        assert_eq!(default.to_string(), DEFAULT_HOST);
        assert_eq!(Endpoint::from_env(Some("")).unwrap(), default);
        let unix = Endpoint::from_env(Some("unix:///run/podman/podman.sock")).unwrap();
        assert!(unix.unix);
        assert_eq!(
            unix.to_string(),
            "DOCKER_HOST=unix:///run/podman/podman.sock"
        );
        let tcp = Endpoint::from_env(Some("tcp://127.0.0.1:2375")).unwrap();
        assert!(!tcp.unix);
        for bad in [
            "ssh://me@host",
            "npipe:////./pipe/docker",
            "https://x:2376",
            "unix://",
        ] {
            let e = Endpoint::from_env(Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("DOCKER_HOST={bad} is not supported")),
                "{e}"
            );
        }
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(is_version_refusal(
            "client version 1.41 is too old. Minimum supported API version is 1.44, please \
             upgrade your client to a newer version"
        ));
        assert!(is_version_refusal(
            "client version 1.53 is too new. Maximum supported API version is 1.41"
        ));
        assert!(!is_version_refusal("No such container: web"));
        assert!(is_ambiguous("Multiple IDs found with provided prefix: 0"));
        assert!(!is_ambiguous("No such container: 0"));
    }

    #[test]
    fn timeout_message() {
        let e = DockerError::StillStarting {
            name: "web".into(),
            state: "created".into(),
            waited: Duration::from_secs(5),
        };
        assert_eq!(
            e.to_string(),
            "container web is still created after 5s; start it with docker start web, or raise \
             --timeout"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_socket_says_where_it_looked() {
        let e = resolve_at(
            &Endpoint::unix("/nonexistent/docker.sock"),
            "web",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "cannot reach the Docker daemon at unix:///nonexistent/docker.sock: socket not \
             found; start dockerd or point DOCKER_HOST at it, or pass the container's PID or a \
             netns path instead of its name"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stale_socket_is_connection_refused() {
        let dir = tempdir();
        let path = format!("{dir}/docker.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the socket file, nobody listening
        let e = resolve_at(&Endpoint::unix(&path), "web", Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(": connection refused (no daemon listening);"),
            "{e}"
        );
    }

    /// A fake Engine on a Unix socket: answers each request with `respond(path)` and records the
    /// request paths. Each connection carries one request (bollard keeps no idle connections).
    struct FakeEngine {
        socket: String,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl FakeEngine {
        fn start(respond: impl Fn(&str, usize) -> (u16, String) + Send + 'static) -> FakeEngine {
            let dir = tempdir();
            let socket = format!("{dir}/docker.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap() <= 2 {
                            break;
                        }
                    }
                    let n = {
                        let mut seen = log.lock().unwrap();
                        seen.push(path.clone());
                        seen.len()
                    };
                    let (status, body) = respond(&path, n);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.flush();
                    let _ = reader.read(&mut [0; 1]);
                }
            });
            FakeEngine { socket, seen }
        }

        fn endpoint(&self) -> Endpoint {
            Endpoint::unix(&self.socket)
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// `/v1.41/containers/x/json` -> `/containers/x/json`.
    fn unversioned(path: &str) -> &str {
        match path.strip_prefix("/v") {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                rest.find('/').map_or(path, |i| &rest[i..])
            }
            _ => path,
        }
    }

    fn running(name: &str, pid: u32, mode: &str) -> String {
        json!({
            "Id": format!("{name}0000000000000000"),
            "Name": format!("/{name}"),
            "State": {"Status": "running", "Running": true, "Pid": pid},
            "HostConfig": {"NetworkMode": mode},
        })
        .to_string()
    }

    fn error(message: &str) -> String {
        json!({ "message": message }).to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_request_per_lookup() {
        let engine = FakeEngine::start(|_, _| (200, running("web", 42, "none")));
        let c = resolve_at(&engine.endpoint(), "/web", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((c.name.as_str(), c.pid), ("web", 42));
        // bollard 0.21.1 drops the version prefix (so the daemon answers in its own current API
        // version); should it start sending one, it must be the one we chose.
        let seen = engine.seen();
        assert!(
            seen == ["/containers/web/json"] || seen == ["/v1.41/containers/web/json"],
            "{seen:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn engine_that_refuses_1_41_still_answers() {
        // Docker 29 refuses a /v1.41/ prefix and speaks 1.52.
        let engine = FakeEngine::start(|path, _| match path {
            "/v1.41/containers/web/json" => (
                400,
                error(
                    "client version 1.41 is too old. Minimum supported API version is 1.44, \
                     please upgrade your client to a newer version",
                ),
            ),
            "/version" | "/v1.53/version" => (200, json!({"ApiVersion": "1.52"}).to_string()),
            "/containers/web/json" | "/v1.52/containers/web/json" => {
                (200, running("web", 43, "bridge"))
            }
            _ => (404, error("unexpected")),
        });
        let c = resolve_at(&engine.endpoint(), "web", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(c.pid, 43);
        assert!(engine.seen().len() <= 3, "{:?}", engine.seen());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn starting_container_is_polled_until_it_has_a_pid() {
        let engine = FakeEngine::start(|_, n| match n {
            1 => (
                200,
                json!({"Id": "w", "Name": "/web", "State": {"Status": "created", "Pid": 0}})
                    .to_string(),
            ),
            2 => (
                200,
                json!({"Id": "w", "Name": "/web", "State": {"Status": "running", "Pid": 0}})
                    .to_string(),
            ),
            _ => (200, running("web", 44, "none")),
        });
        let c = resolve_at(&engine.endpoint(), "web", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(c.pid, 44);
        assert_eq!(engine.seen().len(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn container_that_never_starts_times_out() {
        let engine = FakeEngine::start(|_, _| {
            let created =
                json!({"Id": "w", "Name": "/web", "State": {"Status": "created", "Pid": 0}});
            (200, created.to_string())
        });
        let t0 = std::time::Instant::now();
        let e = resolve_at(&engine.endpoint(), "web", Duration::from_millis(200))
            .await
            .unwrap_err()
            .to_string();
        let took = t0.elapsed();
        assert_eq!(
            e,
            "container web is still created after 0.20s; start it with docker start web, or \
             raise --timeout"
        );
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(
            engine.seen().len() >= 5,
            "polled {} times",
            engine.seen().len()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn engine_errors_map_to_messages() {
        let engine = FakeEngine::start(|path, _| match unversioned(path) {
            "/containers/nope/json" => (404, error("No such container: nope")),
            "/containers/0/json" => (500, error("Multiple IDs found with provided prefix: 0")),
            _ => (500, error("boom")),
        });
        let at = engine.endpoint();
        let t = Duration::from_secs(1);
        let e = resolve_at(&at, "nope", t).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "no such container: nope; list containers with docker ps -a"
        );
        let e = resolve_at(&at, "0", t).await.unwrap_err().to_string();
        assert!(
            e.starts_with("container ID prefix 0 matches more than one container"),
            "{e}"
        );
        let e = resolve_at(&at, "x", t).await.unwrap_err().to_string();
        assert!(
            e.contains("failed to inspect container x: boom (HTTP 500); pass the"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shared_namespace_is_reported_by_name() {
        let engine = FakeEngine::start(|path, _| match unversioned(path) {
            "/containers/c3/json" => (200, running("c3", 45, "container:abc123")),
            "/containers/abc123/json" => (200, running("web", 46, "none")),
            _ => (404, error("No such container")),
        });
        let c = resolve_at(&engine.endpoint(), "c3", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(c.net, NetMode::Shared { with: "web".into() });
        assert_eq!(c.pid, 45);
    }

    /// A fresh directory under the system temp dir, removed at exit by nobody (tiny, unique).
    fn tempdir() -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pipe-docker-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_string_lossy().into_owned()
    }

    const DOCKER_20_10_WEB2: &str = r#"{"Id":"52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24","Created":"2026-11-26T02:38:22.235729752Z","Path":"sleep","Args":["1000"],"State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,"Pid":6257,"ExitCode":0,"Error":"","StartedAt":"2026-11-26T02:38:22.519278048Z","FinishedAt":"0001-01-01T00:00:00Z"},"Image":"sha256:f5dfb015959aa3bfc846f463d416e630d30372755d450d2da6681d13733010a4","ResolvConfPath":"/var/lib/pipe-test-docker/containers/52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24/resolv.conf","HostnamePath":"/var/lib/pipe-test-docker/containers/52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24/hostname","HostsPath":"/var/lib/pipe-test-docker/containers/52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24/hosts","LogPath":"/var/lib/pipe-test-docker/containers/52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24/52690f3ef72fdf8fc41dcc11b76c9090ab969d184ac0c46691373bed43d6ee24-json.log","Name":"/web2","RestartCount":0,"Driver":"overlay2","Platform":"linux","MountLabel":"","ProcessLabel":"","AppArmorProfile":"","ExecIDs":null,"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"json-file","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"CapAdd":null,"CapDrop":null,"CgroupnsMode":"host","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"private","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":67108864,"Runtime":"runc","ConsoleSize":[0,0],"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"KernelMemory":0,"KernelMemoryTCP":0,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":null,"OomKillDisable":false,"PidsLimit":null,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":["/proc/asound","/proc/acpi","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/proc/scsi","/sys/firmware"],"ReadonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]},"GraphDriver":{"Data":{"LowerDir":"/var/lib/pipe-test-docker/overlay2/29b73a40e8a788fe92734578ad70746dfa5d024a0d809a25a6bf6462e8c60109-init/diff:/var/lib/pipe-test-docker/overlay2/c8bf71e51a74bd591c2fda2417ec2f52041d5d16ff1e8809bead6f7e3ebc7ff7/diff","MergedDir":"/var/lib/pipe-test-docker/overlay2/29b73a40e8a788fe92734578ad70746dfa5d024a0d809a25a6bf6462e8c60109/merged","UpperDir":"/var/lib/pipe-test-docker/overlay2/29b73a40e8a788fe92734578ad70746dfa5d024a0d809a25a6bf6462e8c60109/diff","WorkDir":"/var/lib/pipe-test-docker/overlay2/29b73a40e8a788fe92734578ad70746dfa5d024a0d809a25a6bf6462e8c60109/work"},"Name":"overlay2"},"Mounts":[],"Config":{"Hostname":"52690f3ef72f","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["sleep","1000"],"Image":"local/busybox","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{}},"NetworkSettings":{"Bridge":"","SandboxID":"c0339afbe45b4c1e17a765a66657f01b99d7fc510830dc1bc381fac5fa03f500","HairpinMode":false,"LinkLocalIPv6Address":"","LinkLocalIPv6PrefixLen":0,"Ports":{},"SandboxKey":"/var/run/pipe-test-docker/netns/c0339afbe45b","SecondaryIPAddresses":null,"SecondaryIPv6Addresses":null,"EndpointID":"201d96ae588b7bfd38dceb62f7ab626e50441ea8eadfbbf87c750114b520d5ab","Gateway":"172.17.0.1","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"IPAddress":"172.17.0.2","IPPrefixLen":16,"IPv6Gateway":"","MacAddress":"02:42:ac:11:00:02","Networks":{"bridge":{"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"1c8589a4a307921ed4c854cad0eb89d74853234aa2bb68f4e92f796a3523455b","EndpointID":"201d96ae588b7bfd38dceb62f7ab626e50441ea8eadfbbf87c750114b520d5ab","Gateway":"172.17.0.1","IPAddress":"172.17.0.2","IPPrefixLen":16,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"02:42:ac:11:00:02","DriverOpts":null}}}}"#;
}

// ---- the Engine's events and container list, for `pipe watch` ----------------------------

/// A container's `pipe.*` labels, sorted by key.
pub type Labels = Vec<(String, String)>;

/// A container lifecycle event, as watch needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start {
        id: String,
        name: String,
        /// The container's `pipe.*` labels (attachments declared on it).
        labels: Labels,
        /// The daemon's timestamp, nanoseconds since the epoch.
        time_nano: Option<i64>,
    },
    Die {
        id: String,
        name: String,
    },
}

pub use events::Watcher;

mod events {
    use super::{DEFAULT_HOST, Event, Labels};
    use std::collections::HashMap;
    use std::time::Duration;

    use bollard::Docker;
    use bollard::query_parameters::{EventsOptions, ListContainersOptions};
    use futures::{Stream, StreamExt};

    use crate::domain::error::{Error, Result};

    pub struct Watcher {
        docker: Docker,
    }

    fn err(what: &str, e: impl std::fmt::Display) -> Error {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Error::Refused(format!("Docker daemon at {host}: {what}: {e}"))
    }

    fn pipe_labels(all: HashMap<String, String>) -> Labels {
        let mut v: Labels = all
            .into_iter()
            .filter(|(k, _)| k.starts_with(crate::domain::labels::PREFIX))
            .collect();
        v.sort();
        v
    }

    impl Watcher {
        /// Connect as the docker CLI would (`DOCKER_HOST`, else the default
        /// socket) and agree on an API version.
        pub async fn connect() -> Result<Watcher> {
            let docker = Docker::connect_with_defaults()
                .map_err(|e| err("connecting", e))?
                .with_timeout(Duration::from_secs(10));
            let docker = docker
                .negotiate_version()
                .await
                .map_err(|e| err("connecting", e))?;
            Ok(Watcher { docker })
        }

        /// Running containers: (ID, name without the leading '/', `pipe.*` labels).
        pub async fn running(&self) -> Result<Vec<(String, String, Labels)>> {
            let list = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: false,
                    ..Default::default()
                }))
                .await
                .map_err(|e| err("listing containers", e))?;
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    let id = c.id?;
                    let name = c.names?.into_iter().next()?;
                    let labels = pipe_labels(c.labels.unwrap_or_default());
                    Some((id, name.trim_start_matches('/').to_string(), labels))
                })
                .collect())
        }

        /// Container start and die events from `since` on.
        pub fn events(&self, since: Duration) -> impl Stream<Item = Result<Event>> + '_ {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "event".to_string(),
                    vec!["start".to_string(), "die".to_string()],
                ),
            ]);
            let opts = EventsOptions {
                since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
                until: None,
                filters: Some(filters),
            };
            self.docker.events(Some(opts)).filter_map(|m| async move {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return Some(Err(err("event stream", e))),
                };
                let actor = m.actor?;
                let id = actor.id?;
                let attrs = actor.attributes.unwrap_or_default();
                let name = attrs.get("name").cloned().unwrap_or_else(|| id.clone());
                // The Engine puts the container's labels among the event's attributes.
                let labels = pipe_labels(attrs);
                match m.action.as_deref() {
                    Some("start") => Some(Ok(Event::Start {
                        id,
                        name,
                        labels,
                        time_nano: m.time_nano,
                    })),
                    Some("die") => Some(Ok(Event::Die { id, name })),
                    _ => None,
                }
            })
        }
    }
}
