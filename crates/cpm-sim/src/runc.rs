//! runc invocations: every container of a cluster lives under one state root
//! (`/run/cpm-sim/<tag>/runc`), so teardown and leftover reaping find them all.
//!
//! A container runs in the foreground (`runc run`, no terminal): runc passes the log file as
//! the container's stdout and stderr, stays its parent and exits with its exit code (128 + n
//! for signal n), which is what the pod worker waits on.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::error::{Result, SimError};

/// The runc state root of one cluster.
#[derive(Debug, Clone)]
pub struct Runc {
    root: PathBuf,
}

impl Runc {
    /// runc with state root `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("runc");
        c.arg("--root").arg(&self.root).stdin(Stdio::null());
        c
    }

    /// Starts container `id` from `bundle` (holding `config.json`), output appended to `log`.
    pub fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<tokio::process::Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(SimError::io("open log", log))?;
        let err = file.try_clone().map_err(SimError::io("open log", log))?;
        self.command()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| SimError::Spawn {
                argv: vec!["runc".into(), "run".into(), id.into()],
                source,
            })
    }

    /// Sends `signal` (`TERM`, `KILL`) to the container's init process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.checked(&["kill", id, signal]).await.map(|_| ())
    }

    /// Removes the container, killing it if it still runs.
    pub async fn delete(&self, id: &str) {
        let _ = self.checked(&["delete", "--force", id]).await;
    }

    /// Runs `argv` in the running container (`runc exec`), killed after `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<std::process::Output> {
        let mut c = self.command();
        c.arg("exec").arg(id).args(argv).kill_on_drop(true);
        let run = c.output();
        match tokio::time::timeout(timeout, run).await {
            Ok(out) => out.map_err(|source| SimError::Spawn {
                argv: vec!["runc".into(), "exec".into(), id.into()],
                source,
            }),
            Err(_) => Err(SimError::invalid(
                format!("container {id}"),
                format!("exec {argv:?} timed out after {timeout:?}"),
            )),
        }
    }

    async fn checked(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|source| SimError::Spawn {
                argv: args.iter().map(ToString::to_string).collect(),
                source,
            })?;
        if !out.status.success() {
            return Err(SimError::Command {
                argv: args.iter().map(ToString::to_string).collect(),
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The container ids under state root `root`.
pub fn list(root: &Path) -> Vec<String> {
    if !root.is_dir() {
        return Vec::new();
    }
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Kills and removes every container under `root` (synchronously: used on drop).
pub fn remove_all(root: &Path) {
    for id in list(root) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", &id])
            .stdin(Stdio::null())
            .output();
    }
}
