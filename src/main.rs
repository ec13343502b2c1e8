//! The `sriov-dra` command line: parse, dispatch, print one clear error line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sriov_dra::cli;

/// Kubernetes DRA node driver for SR-IOV virtual functions and RDMA devices.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List this node's PCI network functions, or the slices it would publish.
    Discover(cli::discover::DiscoverArgs),
    /// Inspect and repair the address store (read-only while the driver runs).
    Ipam(cli::ipam::IpamArgs),
    /// Write a built-in fixture node's sysfs tree into a directory, to use
    /// with `--sysfs-root` (development and lab dry runs).
    Fixture {
        /// connectx6dx, e810, connectx7-ib, virtio, scale-2048.
        name: sriov::fixture::Fixture,
        /// An empty or new directory.
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SRIOV_DRA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Discover(args) => cli::discover::run(&args).map(|out| print!("{out}")),
        Command::Ipam(args) => cli::ipam::run(args),
        Command::Fixture { name, dir } => cli::discover::write_fixture(name, &dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
