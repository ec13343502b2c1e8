//! `hw-tests`: run a lab profile's cases on this node's NICs, or the
//! built-in profile on a simulated NIC; print the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use hw_tests::profile::{CaseKind, NicProfile, NodeInfo, Profile};
use hw_tests::report::Report;
use hw_tests::runner;
use sriov::policy::PfStatus;

/// Checks what sriov-dra relies on, on a lab node's real NICs. Every change
/// is restored; run it on a lab node, not in production.
#[derive(Debug, Parser)]
struct Args {
    /// The lab profile (TOML, see hw-tests/README.md and hw-tests/profiles/).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pf", "simulate"])]
    profile: Option<PathBuf>,
    /// Without a profile: the PF's interface name to run the VF-settings
    /// and vfio cases on.
    #[arg(long, conflicts_with = "simulate")]
    pf: Option<String>,
    /// Without a profile: the VF index to use.
    #[arg(long, default_value_t = 0)]
    vf: u32,
    /// sysfs root.
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Without a profile: also resize the PF's VFs (destroys and recreates
    /// every VF of the PF).
    #[arg(long)]
    allow_resize: bool,
    /// Run the built-in profile on a simulated NIC and fixture sysfs (what
    /// CI does); no case is reported as a pass.
    #[arg(long)]
    simulate: bool,
    /// Write the Markdown report here as well as to stdout.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(report) if report.failed() => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<Report> {
    let report = if args.simulate {
        let scratch = TempDir::new()?;
        runner::run_simulated(scratch.path()).map_err(anyhow::Error::msg)?
    } else if let Some(path) = &args.profile {
        let profile = Profile::load(path).map_err(anyhow::Error::msg)?;
        runner::run_on_node(&profile, &args.sysfs_root)
    } else {
        let Some(pf) = args.pf.clone() else {
            bail!("--profile FILE or --pf NAME is required on real hardware (or use --simulate)");
        };
        runner::run_on_node(&ad_hoc(&args, &pf)?, &args.sysfs_root)
    };
    let text = report.markdown();
    print!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// A one-NIC profile for `--pf`: the VF settings and vfio cases (and the
/// resize with `--allow-resize`) on that PF as it is now.
fn ad_hoc(args: &Args, pf: &str) -> anyhow::Result<Profile> {
    let device = args.sysfs_root.join("class/net").join(pf).join("device");
    let address = std::fs::read_link(&device)
        .with_context(|| format!("PF {pf}: cannot read {}", device.display()))?;
    let address = address
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("PF {pf}: {} is no PCI device", device.display()))?;
    let status = PfStatus::read(&args.sysfs_root, address)?;
    let id = |file: &str| read_id(&device.join(file));
    let mut cases = vec![CaseKind::VfSettings, CaseKind::Vfio];
    if args.allow_resize {
        cases.push(CaseKind::VfPolicy);
    }
    Ok(Profile {
        node: NodeInfo {
            name: format!("PF {pf}, VF {}", args.vf),
            description: String::new(),
        },
        nics: vec![NicProfile {
            model: format!("PF {pf} ({}:{})", id("vendor"), id("device")),
            vendor_id: id("vendor"),
            device_id: id("device"),
            driver: String::new(),
            pfs: vec![pf.to_string()],
            num_vfs: status.num_vfs,
            test_vf: args.vf,
            pair_vfs: [0, 1],
            cases,
            allow_resize: args.allow_resize,
            peer: None,
        }],
    })
}

/// A sysfs ID file (`0x15b3`) as 4 hex digits, or `????`.
fn read_id(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().trim_start_matches("0x").to_string())
        .unwrap_or_else(|_| "????".into())
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path = sriov::fixture::scratch_base().join(format!("hw-tests-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
