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
    /// The whole claim path on a simulated node: prepare a VF with a VLAN and
    /// a pool address, move it into a pod's netns, show it, remove it all
    /// (root).
    Demo(cli::demo::DemoArgs),
    /// List this node's PCI network functions, or the slices it would publish.
    Discover(cli::discover::DiscoverArgs),
    /// Run the node driver: kubelet DRA plugin, NRI plugin, slice publisher.
    Run {
        /// Node config file (see the README); defaults apply without it.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Node name (default: config, $NODE_NAME, hostname).
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
    },
    /// Inspect and repair the address store while the driver is stopped (while
    /// it runs, read the same data from its debug API).
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

fn run_driver(config: Option<std::path::PathBuf>, node_name: Option<String>) -> anyhow::Result<()> {
    let mut config = match config {
        Some(path) => sriov_dra::config::NodeConfig::load(&path)?,
        None => sriov_dra::config::NodeConfig::default(),
    };
    if node_name.is_some() {
        config.node_name = node_name;
        config.validate()?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(sriov_dra::driver::run(config))
}

/// Writes the command's output. A reader that went away (`discover | head
/// -1`) is a normal end, not an error: `print!` would panic on EPIPE.
fn write_stdout(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SRIOV_DRA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Test builds only: FAILPOINTS names where the driver is to die.
    #[cfg(feature = "failpoints")]
    let _failpoints = sriov_dra::failpoints::setup();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(&args),
        Command::Discover(args) => cli::discover::run(&args).and_then(|out| write_stdout(&out)),
        Command::Ipam(args) => cli::ipam::run(args),
        Command::Run { config, node_name } => run_driver(config, node_name),
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
