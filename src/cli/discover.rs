//! `sriov-dra discover`: what this node has, and what it would publish.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use sriov::fixture::Fixture;
use sriov::inventory::Role;

use crate::block_yaml;
use crate::config::NodeConfig;
use crate::inventory::{NodeDevice, NodeInventory};
use crate::kube::slices::{self, SliceParams};

/// Options of `discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Read this sysfs tree instead of the config's (default `/sys`).
    #[arg(long, value_name = "PATH", conflicts_with = "fixture")]
    pub sysfs_root: Option<PathBuf>,
    /// Read a built-in fixture node: connectx6dx, e810, connectx7-ib,
    /// virtio, scale-2048.
    #[arg(long, value_name = "NAME")]
    pub fixture: Option<Fixture>,
    /// Node config file (selectors, driver name); defaults apply without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name for slices (default: config, $NODE_NAME, hostname).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// How `discover` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per function, for people.
    Table,
    /// The full inventory as JSON.
    Json,
    /// The full inventory as YAML.
    Yaml,
    /// The ResourceSlices the driver would publish, as YAML documents.
    Slices,
}

/// Runs `discover` and returns what to print.
pub fn run(args: &DiscoverArgs) -> anyhow::Result<String> {
    let mut out = Vec::new();
    run_to(args, &mut out)?;
    String::from_utf8(out).context("discover printed something that is not UTF-8")
}

/// Runs `discover`, writing what it prints to `out` as it goes: slices one
/// at a time, so a large node's output is never held whole.
pub fn run_to(args: &DiscoverArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::default(),
    };
    if let Some(node) = &args.node_name {
        config.node_name = Some(node.clone());
        config.validate()?;
    }
    // A fixture tree lives in a temporary directory for this run only.
    let fixture_dir;
    let root = match (&args.fixture, &args.sysfs_root) {
        (Some(f), _) => {
            fixture_dir = tempfile::tempdir_in(sriov::fixture::scratch_base())
                .context("cannot create a directory for the fixture")?;
            f.build(fixture_dir.path())
                .with_context(|| format!("cannot build fixture {f}"))?;
            fixture_dir.path().to_path_buf()
        }
        (None, Some(root)) => root.clone(),
        (None, None) => config.sysfs_root.clone(),
    };
    let mut inventory = NodeInventory::discover(&root)?;
    // The full views show what a scan leaves out; slices and the table
    // need only what a scan reads.
    if matches!(args.output, Format::Json | Format::Yaml) {
        inventory.read_rdma_details()?;
    }
    for s in &inventory.skipped {
        tracing::warn!(entry = %s.entry, reason = %s.reason, "skipped a PCI device");
    }
    match args.output {
        Format::Table => out.write_all(table(&inventory).as_bytes())?,
        Format::Json => {
            out.write_all((serde_json::to_string_pretty(&inventory)? + "\n").as_bytes())?
        }
        Format::Yaml => out.write_all(block_yaml::to_string(&inventory)?.as_bytes())?,
        Format::Slices => {
            let node = config.resolve_node_name()?;
            let params = SliceParams::new(&config, &node);
            // Built and turned into YAML on every core; printed in order.
            // The same text as serde_yaml's, in a fraction of its time.
            let yaml =
                |s: k8s_openapi::api::resource::v1::ResourceSlice| Ok(block_yaml::to_string(&s)?);
            slices::render_each_parallel(&inventory, &config, &params, yaml, |text: String| {
                out.write_all(b"---\n")?;
                out.write_all(text.as_bytes())?;
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Writes a fixture tree into `dir`, which must be empty or absent.
pub fn write_fixture(fixture: Fixture, dir: &Path) -> anyhow::Result<()> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} is not empty; the fixture needs an empty directory",
            dir.display()
        );
    }
    fixture
        .build(dir)
        .with_context(|| format!("cannot write fixture {fixture} into {}", dir.display()))
}

/// The operator's view: one function per line, aligned columns.
pub fn table(inventory: &NodeInventory) -> String {
    let header = [
        "PCI ADDRESS",
        "ROLE",
        "VENDOR",
        "DEVICE",
        "DRIVER",
        "NUMA",
        "PCIE ROOT",
        "NETDEV",
        "MAC",
        "RDMA",
    ];
    let rows: Vec<[String; 10]> = inventory.devices.iter().map(row).collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for r in &rows {
        line(r);
    }
    if inventory.devices.is_empty() {
        out.push_str("(no PCI network functions found)\n");
    }
    out
}

fn row(d: &NodeDevice) -> [String; 10] {
    let f = &d.function;
    let dash = || "-".to_string();
    let role = match &f.role {
        Role::Pf {
            num_vfs, total_vfs, ..
        } => format!("PF {num_vfs}/{total_vfs} VFs"),
        Role::Vf { pf, index } => format!("VF {index} of {pf}"),
        Role::Plain => "-".into(),
    };
    let vendor = f
        .vendor_name
        .clone()
        .unwrap_or_else(|| format!("{:04x}", f.vendor_id));
    let device = match &f.device_name {
        Some(n) => format!("{n} [{:04x}:{:04x}]", f.vendor_id, f.device_id),
        None => format!("[{:04x}:{:04x}]", f.vendor_id, f.device_id),
    };
    [
        f.address.to_string(),
        role,
        vendor,
        device,
        f.driver.clone().unwrap_or_else(dash),
        f.numa_node.map_or_else(dash, |n| n.to_string()),
        f.pcie_root.clone().unwrap_or_else(dash),
        f.netdev.as_ref().map_or_else(dash, |n| n.name.clone()),
        f.netdev
            .as_ref()
            .and_then(|n| n.mac.clone())
            .unwrap_or_else(dash),
        d.rdma.as_ref().map_or_else(dash, |r| r.name.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(fixture: Fixture, output: Format) -> DiscoverArgs {
        DiscoverArgs {
            sysfs_root: None,
            fixture: Some(fixture),
            config: None,
            node_name: Some("node-a".into()),
            output,
        }
    }

    #[test]
    fn every_fixture_renders_in_every_format() {
        for f in [
            Fixture::ConnectX6Dx,
            Fixture::E810,
            Fixture::ConnectX7Ib,
            Fixture::Virtio,
        ] {
            for o in [Format::Table, Format::Json, Format::Yaml, Format::Slices] {
                let out = run(&args(f, o)).unwrap_or_else(|e| panic!("{f} {o:?}: {e:#}"));
                assert!(!out.is_empty(), "{f} {o:?}");
                match o {
                    Format::Json => drop(serde_json::from_str::<serde_json::Value>(&out).unwrap()),
                    Format::Yaml => drop(serde_yaml::from_str::<serde_yaml::Value>(&out).unwrap()),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn table_reads_at_a_glance() {
        let out = run(&args(Fixture::ConnectX6Dx, Format::Table)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("PCI ADDRESS"));
        assert_eq!(lines.len(), 19);
        let vf = lines
            .iter()
            .find(|l| l.starts_with("0000:3b:02.1"))
            .unwrap();
        for cell in [
            "VF 7 of 0000:3b:00.1",
            "Mellanox Technologies",
            "[15b3:101e]",
            "mlx5_core",
            "pci0000:3a",
            "ens1f1v7",
            "mlx5_17",
        ] {
            assert!(vf.contains(cell), "{cell} missing in {vf}");
        }
    }

    #[test]
    fn slices_output_is_valid_resource_slice_yaml() {
        let out = run(&args(Fixture::ConnectX6Dx, Format::Slices)).unwrap();
        let docs: Vec<k8s_openapi::api::resource::v1::ResourceSlice> = out
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 1);
        assert!(
            out.contains("apiVersion: resource.k8s.io/v1\n")
                && out.contains("kind: ResourceSlice\n")
        );
        assert_eq!(docs[0].spec.devices.as_ref().unwrap().len(), 16);
    }

    #[test]
    fn a_missing_config_file_is_a_clear_error() {
        let mut a = args(Fixture::Virtio, Format::Table);
        a.config = Some("/nonexistent/node.yaml".into());
        let err = format!("{:#}", run(&a).unwrap_err());
        assert!(err.contains("/nonexistent/node.yaml"), "{err}");
    }
}
