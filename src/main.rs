//! The `sriov-dra` command line: parse, dispatch, print one clear error line.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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

/// `discover`, printed as it is produced (a large node's slices are
/// megabytes of YAML); a reader that went away ends it quietly.
fn discover(args: &cli::discover::DiscoverArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let done = cli::discover::run_to(args, &mut out).and_then(|()| Ok(out.flush()?));
    match done {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
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
    // `--version` names the features compiled in (build_info), so a test
    // build with failpoints is told from a release build by asking it.
    let version: &'static str = sriov_dra::build_info::version().leak();
    let matches = Cli::command().version(version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(&args),
        Command::Discover(args) => discover(&args),
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
