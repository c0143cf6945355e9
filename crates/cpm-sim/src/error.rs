//! The simulator's error type: every variant names the object, container, path or command.

use std::path::PathBuf;

/// Why a simulator step failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A filesystem operation on `path` failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done (`create directory`, `read manifest`, …).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command could not be started.
    #[error("cannot run {argv:?}")]
    Spawn {
        /// The command line.
        argv: Vec<String>,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{argv:?} exited with {code:?}: {stderr}")]
    Command {
        /// The command line.
        argv: Vec<String>,
        /// The exit code (`None` when killed by a signal).
        code: Option<i32>,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An object (pod, container, manifest, volume) cannot be run as written.
    #[error("{object}: {message}")]
    Invalid {
        /// The object, e.g. `pod cpm-system/cpm-x container cpm-certs`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("{action} {object}")]
    Kube {
        /// `create`, `get`, `patch status`, …
        action: &'static str,
        /// The object, `kind namespace/name`.
        object: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A YAML or JSON document could not be parsed.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// The document (a path or an object).
        what: String,
        /// The parser's message.
        message: String,
    },
    /// The test API server could not start or make a client.
    #[error("test API server")]
    ApiServer(#[source] cpm_testing::apiserver::ApiServerError),
    /// A certificate could not be made.
    #[error("pki: {what}")]
    Pki {
        /// Which certificate.
        what: String,
        /// The cause.
        #[source]
        source: cpm_core::pki::PkiError,
    },
    /// A required tool (`runc`, `ip`) is missing.
    #[error("`{0}` is not installed (bash .ci/install-deps)")]
    MissingTool(&'static str),
}

impl SimError {
    /// An [`SimError::Io`] for `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }

    /// An [`SimError::Invalid`] for `object`.
    pub fn invalid(object: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            object: object.to_string(),
            message: message.to_string(),
        }
    }

    /// A [`SimError::Kube`] for `object`.
    pub fn kube(
        action: &'static str,
        object: impl std::fmt::Display,
    ) -> impl FnOnce(kube::Error) -> Self {
        let object = object.to_string();
        move |source| Self::Kube {
            action,
            object,
            source,
        }
    }
}

/// Results of the simulator.
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// Runs `argv` (never a shell string) and returns its stdout; a non-zero exit is an error
/// carrying stderr.
pub fn run(argv: &[&str]) -> Result<String> {
    let owned: Vec<String> = argv.iter().map(ToString::to_string).collect();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| SimError::invalid("command", "empty argv"))?;
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SimError::Spawn {
            argv: owned.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SimError::Command {
            argv: owned,
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
