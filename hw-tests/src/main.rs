//! `hw-tests`: run the lab's cases on this node's NIC, or on a simulated one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use hw_tests::cases::{self, CaseResult, NoIndependentReader, Outcome};
use hw_tests::iproute::IpLinkReader;
use hw_tests::sim::{DriverProfile, SimulatedPf};
use hw_tests::sim_sysfs::SimSysfs;
use sriov::PciAddress;
use sriov::bind::{DriverBinder, FsSysfsWriter};
use sriov::fixture::Fixture;
use sriov::netlink::RouteSocket;
use sriov::testing::RecordingSysfsWriter;
use sriov::vf_config::VfTarget;

/// Checks PF-side VF settings, vfio binding and VF creation on a real NIC.
/// Every change is restored; run it on a lab node, not in production.
#[derive(Debug, Parser)]
struct Args {
    /// The PF's interface name (required unless --simulate).
    #[arg(long)]
    pf: Option<String>,
    /// The VF index to use.
    #[arg(long, default_value_t = 0)]
    vf: u32,
    /// sysfs root.
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Also resize the PF's VFs (destroys and recreates every VF of the PF).
    #[arg(long)]
    allow_resize: bool,
    /// Run on a simulated NIC and fixture sysfs instead (what CI does).
    #[arg(long)]
    simulate: bool,
    /// Write the Markdown report here as well as to stdout.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(results)
            if results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Fail(_))) =>
        {
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<Vec<CaseResult>> {
    let (title, results) = if args.simulate {
        ("hw-tests on a simulated mlx5 NIC".to_string(), simulated()?)
    } else {
        let Some(pf) = args.pf.clone() else {
            bail!("--pf is required on real hardware (or use --simulate)");
        };
        (
            format!("hw-tests on PF {pf}, VF {}", args.vf),
            real(&args, &pf)?,
        )
    };
    let text = cases::report(&title, &results);
    print!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(results)
}

fn real(args: &Args, pf: &str) -> anyhow::Result<Vec<CaseResult>> {
    let pf_dev = args.sysfs_root.join("class/net").join(pf).join("device");
    let pf_addr: PciAddress = link_name(&pf_dev)?.parse().context("PF device link")?;
    let vf_addr: PciAddress = link_name(&pf_dev.join(format!("virtfn{}", args.vf)))?
        .parse()
        .context("VF device link")?;
    let target = VfTarget {
        pf: pf.to_string(),
        vf: args.vf,
    };
    let mut socket = RouteSocket::new().context("cannot open a netlink socket (run as root)")?;
    let mut results: Vec<CaseResult> = cases::setting_cases()
        .iter()
        .map(|c| cases::run_setting_case(&mut socket, &mut IpLinkReader, &target, c))
        .collect();
    let mut binder = DriverBinder::new(
        &args.sysfs_root,
        "/dev",
        FsSysfsWriter::new(&args.sysfs_root),
    );
    results.push(cases::run_bind_case(&mut binder, vf_addr));
    if args.allow_resize {
        let mut writer = FsSysfsWriter::new(&args.sysfs_root);
        results.push(cases::run_resize_case(
            &mut writer,
            &args.sysfs_root,
            pf_addr,
        ));
    } else {
        results.push(CaseResult {
            name: "policy/numvfs-resize".into(),
            outcome: Outcome::Skipped("needs --allow-resize".into()),
        });
    }
    Ok(results)
}

fn link_name(path: &std::path::Path) -> anyhow::Result<String> {
    let target =
        std::fs::read_link(path).with_context(|| format!("cannot read link {}", path.display()))?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} points nowhere", path.display()))
}

/// The cases on a simulated ConnectX (mlx5, legacy eswitch) and the E810 fixture.
pub fn simulated() -> anyhow::Result<Vec<CaseResult>> {
    let mut pf = SimulatedPf::new("ens1f0", 8, DriverProfile::mlx5_legacy());
    let target = VfTarget {
        pf: "ens1f0".into(),
        vf: 3,
    };
    let mut results: Vec<CaseResult> = cases::setting_cases()
        .iter()
        .map(|c| cases::run_setting_case(&mut pf, &mut NoIndependentReader, &target, c))
        .collect();
    let dir = tempfile_dir()?;
    Fixture::E810.build(dir.path()).context("fixture")?;
    let vf: PciAddress = "0000:af:01.0".parse()?;
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev)?;
    let writer = RecordingSysfsWriter::new(dir.path()).with_default_driver(vf, "iavf");
    let mut binder = DriverBinder::new(dir.path(), &dev, SimSysfs::new(dir.path(), writer));
    results.push(cases::run_bind_case(&mut binder, vf));
    let mut writer = SimSysfs::new(dir.path(), RecordingSysfsWriter::new(dir.path()));
    results.push(cases::run_resize_case(
        &mut writer,
        dir.path(),
        "0000:af:00.0".parse()?,
    ));
    Ok(results)
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    TempDir::new()
}

/// A directory removed on drop (kept dependency-free for the binary).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path = sriov::fixture::scratch_base().join(format!("hw-tests-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
