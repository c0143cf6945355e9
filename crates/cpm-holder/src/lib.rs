//! cpm-holder: lets a control-plane image that has no shell hold a pod.
//!
//! The image-holder pods keep the control-plane images (kube-apiserver, etcd, …) pulled on every
//! master. Those images have no shell and no `sleep`, so an init container running cpm's
//! `cpm-holder` image copies the binary into an `emptyDir` (`cpm-holder install /holder`), and
//! each holder container, running a control-plane image, executes `/holder/cpm-holder hold`:
//! it sleeps until SIGTERM or SIGINT and exits 0. The binary is statically linked, so it runs in
//! any image whatever its libc.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use cpm_core::reconcile::Termination;

/// The name the binary installs itself under.
pub const BINARY_NAME: &str = "cpm-holder";

/// What `hold` prints on stderr once its signal handlers are in place.
pub const HOLDING_LINE: &str = "cpm-holder: holding until SIGTERM or SIGINT";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cpm-holder",
    version = cpm_core::build::LONG_VERSION,
    about = "Copies itself into a directory, or sleeps until SIGTERM/SIGINT (for image-holder pods)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The two verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy this binary into DIR as DIR/cpm-holder (atomically, mode 0755) and exit.
    Install {
        /// The target directory (created when missing), e.g. an emptyDir mount.
        dir: PathBuf,
    },
    /// Sleep until SIGTERM or SIGINT, then exit 0.
    Hold,
}

/// Why cpm-holder failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The running executable could not be read.
    #[error("cannot read the running executable {path}")]
    ReadSelf {
        /// What was read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The copy could not be written.
    #[error("cannot install {path}")]
    Install {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime or the signal handlers could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] io::Error),
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Install { dir } => install(&dir).map(|_| ()),
        Command::Hold => hold(),
    }
}

/// Copies the running executable to `dir/cpm-holder` (atomic, 0755) and returns that path.
pub fn install(dir: &Path) -> Result<PathBuf, Error> {
    let bytes = read_self()?;
    let target = dir.join(BINARY_NAME);
    let install_err = |source| Error::Install {
        path: target.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(install_err)?;
    cpm_core::apply::write_atomic(&target, &bytes, 0o755, None, None).map_err(install_err)?;
    Ok(target)
}

/// The bytes of the running executable: `/proc/self/exe` (works even when the file was
/// replaced), else the path `std::env::current_exe` reports.
fn read_self() -> Result<Vec<u8>, Error> {
    let proc_self = Path::new("/proc/self/exe");
    match std::fs::read(proc_self) {
        Ok(b) => Ok(b),
        Err(first) => {
            let path = std::env::current_exe().map_err(|_| Error::ReadSelf {
                path: proc_self.to_path_buf(),
                source: first,
            })?;
            std::fs::read(&path).map_err(|source| Error::ReadSelf { path, source })
        }
    }
}

/// Sleeps until SIGTERM or SIGINT. As PID 1 of a container a process gets no default signal
/// handling, so both handlers are installed explicitly before the `holding` line is printed.
pub fn hold() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(Error::Signals)?;
    rt.block_on(async {
        let mut termination = Termination::install().map_err(Error::Signals)?;
        eprintln!("{HOLDING_LINE}");
        termination.recv().await;
        Ok(())
    })
}
