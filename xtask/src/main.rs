//! cargo xtask: the project's automation, one file per subcommand, run with explicit argv.

mod bench;
mod ci;
mod cmd;
mod demo;
mod images;
mod manifests;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "cpm project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run exactly what CI runs: fmt check, clippy -D warnings, per-crate checks, all tests.
    Ci {
        /// Skip installing missing Debian packages (.ci/install-deps).
        #[arg(long)]
        no_install: bool,
    },
    /// The main job: a scratch cluster of simulated masters with their PKI, checked with real tools.
    Demo {
        /// Where to build the demo tree.
        #[arg(long, default_value = "target/demo")]
        dir: std::path::PathBuf,
        /// Number of masters (1 to 3), on 127.0.0.1..3.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
        masters: u8,
        /// Remove the demo tree and exit.
        #[arg(long)]
        clean: bool,
    },
    /// Benchmarks; results go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// Static release builds of every binary, one reproducible OCI image each (no daemon).
    Images(images::Args),
    /// Generate the Kubernetes objects under manifests/ (or check them with --check).
    Manifests {
        /// Fail (exit 1, naming each file) when the committed files differ from the generated ones.
        #[arg(long)]
        check: bool,
        /// Image registry prefix: images are <PREFIX>/<binary>:<workspace version>.
        #[arg(long, default_value = "cpm")]
        registry: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ci { no_install } => ci::run(no_install),
        Command::Demo {
            dir,
            masters,
            clean,
        } => demo::run(&dir, masters, clean),
        Command::Bench { which } => bench::run(which),
        Command::Images(args) => images::run(&args),
        Command::Manifests { check, registry } => manifests::run(check, &registry),
    }
}
