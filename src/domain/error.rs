//! Errors as the operator sees them: one line naming the object, what failed
//! and the fix. Usage errors exit 2, everything else 1.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line itself is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The request is well-formed but cannot be done on this host as it is.
    #[error("{0}")]
    Refused(String),
    /// A kernel request failed; `action` says what we were doing.
    #[error("{action}: {cause}{}", hint_suffix(.hint))]
    Kernel {
        action: String,
        cause: KernelCause,
        hint: Option<String>,
    },
    #[error("{0}")]
    Docker(#[from] DockerError),
    /// An attach failed and was rolled back; `undo_failures` lists what the
    /// rollback itself could not undo (empty when the host is clean again).
    #[error("{cause}; {}", rollback_summary(.undo_failures))]
    RolledBack {
        cause: Box<Error>,
        undo_failures: Vec<String>,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::RolledBack { cause, .. } => cause.exit_code(),
            _ => 1,
        }
    }

    pub fn kernel(action: impl Into<String>, cause: KernelCause) -> Error {
        let hint = cause.default_hint();
        Error::Kernel {
            action: action.into(),
            cause,
            hint,
        }
    }

    /// Replace the hint of a kernel error (keeps other errors as they are).
    pub fn with_hint(self, h: impl Into<String>) -> Error {
        match self {
            Error::Kernel { action, cause, .. } => Error::Kernel {
                action,
                cause,
                hint: Some(h.into()),
            },
            e => e,
        }
    }

    /// `with_hint` when there is one.
    pub fn with_hint_opt<S: Into<String>>(self, h: Option<S>) -> Error {
        match h {
            Some(h) => self.with_hint(h),
            None => self,
        }
    }

    /// The errno of a kernel error, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { cause, .. } => Some(cause.errno),
            _ => None,
        }
    }
}

/// An errno from the kernel plus its extended ack message, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCause {
    pub errno: i32,
    pub detail: Option<String>,
}

impl KernelCause {
    pub fn from_io(e: &std::io::Error) -> KernelCause {
        KernelCause {
            errno: e.raw_os_error().unwrap_or(libc_eio()),
            detail: None,
        }
    }

    fn default_hint(&self) -> Option<String> {
        match self.errno {
            1 => Some("pipe needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run it as root".into()),
            // EACCES is also the kernel's answer to an IPv6 address where IPv6
            // is disabled (disable_ipv6=1, as in docker run --net=none).
            13 => Some(
                "pipe needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run it as root); for an IPv6 address, \
                 IPv6 may be disabled there: start the container with --sysctl net.ipv6.conf.all.disable_ipv6=0"
                    .into(),
            ),
            _ => None,
        }
    }
}

const fn libc_eio() -> i32 {
    5
}

impl fmt::Display for KernelCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = std::io::Error::from_raw_os_error(self.errno);
        // io::Error's Display appends " (os error N)"; keep the text only.
        let text = os.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_string();
        write!(f, "{text}")?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

fn hint_suffix(h: &Option<String>) -> String {
    h.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
}

fn rollback_summary(fails: &[String]) -> String {
    if fails.is_empty() {
        "everything done before it was undone".to_string()
    } else {
        format!(
            "rollback could not undo: {} (remove these by hand)",
            fails.join(", ")
        )
    }
}

/// Why a container could not be resolved. Each message is one line that names the container or
/// the daemon, says what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {host}: {reason}; start dockerd or point DOCKER_HOST \
         at it, or pass the container's PID or a netns path instead of its name"
    )]
    Unreachable { host: String, reason: String },

    #[error(
        "DOCKER_HOST={host} is not supported ({why}); use unix:///PATH or tcp://HOST:PORT, or \
         pass the container's PID or a netns path instead of its name"
    )]
    UnsupportedHost { host: String, why: &'static str },

    #[error("no such container: {query}; list containers with docker ps -a")]
    NoSuchContainer { query: String },

    #[error(
        "container ID prefix {query} matches more than one container; give more characters of \
         the ID, or the container's name"
    )]
    Ambiguous { query: String },

    #[error("container {name} is {state}; {}", stopped_fix(.name, .state))]
    NotRunning { name: String, state: String },

    /// Transient: the container is starting and has no PID yet. [`resolve`] keeps polling and
    /// turns this into [`DockerError::StillStarting`] when its timeout runs out.
    #[error("container {name} is {state} and has no process yet")]
    Starting { name: String, state: String },

    #[error("container {name} is still {state} after {}; {}", secs(.waited), starting_fix(.name, .state))]
    StillStarting {
        name: String,
        state: String,
        waited: std::time::Duration,
    },

    #[error(
        "the Docker daemon at {host} failed to inspect container {query}: {message}; pass the \
         container's PID or a netns path instead of its name"
    )]
    Api {
        host: String,
        query: String,
        message: String,
    },

    #[error(
        "the Docker daemon gave an unusable answer for container {query} ({what}); pass the \
         container's PID instead of its name"
    )]
    BadResponse { query: String, what: String },
}

fn stopped_fix(name: &str, state: &str) -> String {
    match state {
        "paused" => format!("resume it with docker unpause {name}"),
        "dead" => format!("remove it with docker rm {name} and run it again"),
        "removing" => "it is being removed; run a new container".to_string(),
        _ => format!("start it with docker start {name}"),
    }
}

fn starting_fix(name: &str, state: &str) -> String {
    match state {
        "created" => format!("start it with docker start {name}, or raise --timeout"),
        _ => format!("see docker logs {name}, or raise --timeout"),
    }
}

fn secs(d: &std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}
