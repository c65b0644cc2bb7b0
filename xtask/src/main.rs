//! `cargo xtask`: set-up, build, test, demo and benchmarks for profiler. This file holds the
//! command line and its dispatch; each job has its module:
//! - setup.rs: `setup`, idempotent: Debian packages, nightly's rust-src, bpf-linker, the
//!   kernel filesystems, the container images (busybox here, the Debian image with
//!   PostgreSQL, memcached and a Python service in images.rs), podman, kubernetes-validate;
//! - run.rs: running commands, cargo, and the build of profiler (`build`);
//! - test.rs, demo.rs: `test` and `demo`;
//! - bench/: `bench`, one file per part.
//!
//! lib.rs names what setup makes and the integration tests use (images, podman storage).
mod bench;
mod demo;
mod images;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

use crate::run::{build, workspace_root};
use crate::setup::setup;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and packages (idempotent).
    Setup,
    /// Set up, then build profiler (with its eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run every test (unit and privileged integration tests).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Record the demo workload and write its profiles under profiles/demo.
    Demo,
    /// Measure profiler's overhead against its baselines; writes benchmarks/<cpu vendor>.md
    /// and BENCHMARKS.md.
    Bench {
        /// A short run that fits in CI time.
        #[arg(long)]
        quick: bool,
        /// Run only these parts (for working on one number); the report then goes to
        /// target/bench/partial.md, BENCHMARKS.md is left alone.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Part>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup(),
        Cmd::Build { release } => {
            setup()?;
            build(release)
        }
        Cmd::Test { args } => {
            setup()?;
            test::test(&args)
        }
        Cmd::Demo => {
            setup()?;
            demo::demo()
        }
        Cmd::Bench { quick, only } => {
            setup()?;
            build(true)?;
            bench::bench(&workspace_root(), quick, &only)
        }
    }
}
