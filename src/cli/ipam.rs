//! `sriov-dra ipam`: look at and repair the node's address store.
//!
//! They work on the state file while the driver is stopped: `list` and
//! `show` open it read-only, `release` and `gc` change it. While the driver
//! runs it holds the file alone; every subcommand then fails with an error
//! that says so and points to the driver's debug API.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ipam::{Allocation, BlockUsage, Holder, Ipam, IpamReader, Owner, PoolStatus, StaticLease};
use serde::Serialize;

/// Options of `ipam`.
#[derive(Debug, Args)]
pub struct IpamArgs {
    /// Directory holding state.redb.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/sriov-dra",
        global = true
    )]
    pub state_dir: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: IpamCommand,
}

/// How `ipam` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    Table,
    /// JSON, for scripts.
    Json,
}

/// Subcommands of `ipam`.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Every allocation, with pool usage (read-only).
    List,
    /// One pool: definition, usage, allocations and orphans (read-only).
    Show {
        /// Pool name.
        pool: String,
    },
    /// Release what an owner holds: `<claim UID>/<device>/<request>`, or a
    /// bare claim UID for every owner of that claim (driver must be stopped).
    Release {
        /// Owner key or claim UID.
        owner: String,
    },
    /// Release every allocation whose owner is not listed in FILE (driver
    /// must be stopped).
    Gc {
        /// File of live owner keys: one per line (`#` comments allowed) or a
        /// JSON array of strings.
        #[arg(long, value_name = "FILE")]
        live_owners: PathBuf,
    },
}

/// Runs `ipam` and prints the result to stdout.
pub fn run(args: IpamArgs) -> anyhow::Result<()> {
    print!("{}", render(&args)?);
    Ok(())
}

/// Runs `ipam` and returns what to print.
pub fn render(args: &IpamArgs) -> anyhow::Result<String> {
    match &args.command {
        IpamCommand::List => {
            let reader = IpamReader::open(&args.state_dir)?;
            let pools = reader.status()?;
            let orphans: BTreeSet<String> =
                reader.orphans()?.iter().map(|a| a.owner.key()).collect();
            let rows: Vec<Row> = reader
                .list()?
                .into_iter()
                .map(|a| Row {
                    orphaned: orphans.contains(&a.owner.key()),
                    allocation: a,
                })
                .collect();
            let blocks = reader.blocks()?;
            let singles = reader.static_leases()?;
            match args.output {
                Output::Json => json(&ListJson {
                    pools: pools.iter().map(summary).collect(),
                    blocks,
                    single_leases: singles,
                    allocations: rows,
                }),
                Output::Table => {
                    let mut out = pools_table(&pools);
                    if !blocks.is_empty() {
                        let _ = write!(out, "\n{}", blocks_table(&blocks));
                    }
                    if !singles.is_empty() {
                        let _ = write!(out, "\n{}", singles_table(&singles));
                    }
                    let _ = write!(out, "\n{}", allocations_table(&rows));
                    Ok(out)
                }
            }
        }
        IpamCommand::Show { pool } => {
            let reader = IpamReader::open(&args.state_dir)?;
            let all = reader.status()?;
            let Some(status) = all.iter().find(|p| p.name == *pool) else {
                let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                anyhow::bail!(
                    "pool {pool:?} is neither defined nor used in {}; known pools: {}",
                    ipam::state_file(&args.state_dir).display(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let blocks: Vec<BlockUsage> = reader
                .blocks()?
                .into_iter()
                .filter(|b| b.block.pool == *pool)
                .collect();
            let singles: Vec<StaticLease> = reader
                .static_leases()?
                .into_iter()
                .filter(|l| l.pool == *pool)
                .collect();
            match args.output {
                Output::Json => json(&ShowJson {
                    status,
                    blocks,
                    single_leases: singles,
                }),
                Output::Table => Ok(show_table(status, &blocks, &singles)),
            }
        }
        IpamCommand::Release { owner } => {
            let ipam = Ipam::open_existing(&args.state_dir)?;
            let released = if owner.contains('/') {
                let owner: Owner = owner.parse()?;
                ipam.release(&owner)?.into_iter().collect()
            } else {
                ipam.release_claim(owner)?
            };
            released_output(args.output, &released)
        }
        IpamCommand::Gc { live_owners } => {
            let live = read_live_owners(live_owners)?;
            let ipam = Ipam::open_existing(&args.state_dir)?;
            let released = ipam.gc(&live)?;
            released_output(args.output, &released)
        }
    }
}

/// One allocation line of `list`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    #[serde(flatten)]
    allocation: Allocation,
    orphaned: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolSummary {
    name: String,
    defined: bool,
    usage: Vec<ipam::FamilyUsage>,
    allocations: usize,
    orphaned: usize,
}

#[derive(Debug, Serialize)]
struct ListJson {
    pools: Vec<PoolSummary>,
    /// Blocks of cluster pools this node leases, with their lease objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<BlockUsage>,
    /// Single-address leases of cluster pools: this node's static
    /// addresses outside its blocks, and other nodes' inside them.
    #[serde(rename = "singleLeases", skip_serializing_if = "Vec::is_empty")]
    single_leases: Vec<StaticLease>,
    allocations: Vec<Row>,
}

/// `show -o json`: the pool's status with its blocks and single-address
/// leases.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ShowJson<'a> {
    #[serde(flatten)]
    status: &'a PoolStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<BlockUsage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    single_leases: Vec<StaticLease>,
}

fn summary(p: &PoolStatus) -> PoolSummary {
    PoolSummary {
        name: p.name.clone(),
        defined: p.config.is_some(),
        usage: p.usage.clone(),
        allocations: p.allocations.len() + p.orphaned.len(),
        orphaned: p.orphaned.len(),
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Reads owner keys from lines or a JSON array.
fn read_live_owners(path: &Path) -> anyhow::Result<BTreeSet<Owner>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading live owners from {}", path.display()))?;
    let keys: Vec<String> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON array of owner keys", path.display()))?
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            k.parse::<Owner>()
                .with_context(|| format!("{}: entry {}", path.display(), i + 1))
        })
        .collect()
}

fn released_output(output: Output, released: &[Allocation]) -> anyhow::Result<String> {
    match output {
        Output::Json => json(released),
        Output::Table if released.is_empty() => Ok("nothing to release\n".into()),
        Output::Table => {
            let rows: Vec<Vec<String>> = released
                .iter()
                .map(|a| vec![a.owner.key(), pool_label(a), addresses(a)])
                .collect();
            Ok(format!(
                "released {} allocation(s):\n{}",
                released.len(),
                table(&["OWNER", "POOL", "ADDRESSES"], &rows)
            ))
        }
    }
}

fn pool_label(a: &Allocation) -> String {
    a.pool.clone().unwrap_or_else(|| "(static)".into())
}

fn addresses(a: &Allocation) -> String {
    a.addresses
        .iter()
        .map(|x| x.address.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn usage_text(p: &PoolStatus) -> String {
    if p.config.is_none() {
        return "removed from config".into();
    }
    p.usage
        .iter()
        .map(|u| format!("{}: {}/{} in use", u.family, u.size - u.free, u.size))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pools_table(pools: &[PoolStatus]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| vec![p.name.clone(), usage_text(p), p.orphaned.len().to_string()])
        .collect();
    table(&["POOL", "USAGE", "ORPHANED"], &rows)
}

/// The blocks of cluster pools this node leases, with their IPBlock names.
fn blocks_table(blocks: &[BlockUsage]) -> String {
    let rows: Vec<Vec<String>> = blocks
        .iter()
        .map(|b| {
            vec![
                b.block.pool.clone(),
                b.block.cidr.to_string(),
                b.block.lease.clone(),
                b.used.to_string(),
                b.free.to_string(),
                if b.in_pool { "leased" } else { "outside pool" }.into(),
            ]
        })
        .collect();
    table(
        &["POOL", "BLOCK", "LEASE (IPBlock)", "USED", "FREE", "STATE"],
        &rows,
    )
}

fn singles_table(leases: &[StaticLease]) -> String {
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.pool.clone(),
                l.address.to_string(),
                l.lease.clone(),
                match &l.holder {
                    Holder::ThisNode => "this node (static)".to_string(),
                    Holder::Node(n) => format!("node {n} (kept out)"),
                },
            ]
        })
        .collect();
    table(
        &["POOL", "ADDRESS", "SINGLE LEASE (IPBlock)", "HOLDER"],
        &rows,
    )
}

fn allocations_table(rows: &[Row]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.allocation.owner.key(),
                pool_label(&r.allocation),
                addresses(&r.allocation),
                if r.orphaned { "orphaned" } else { "ok" }.into(),
            ]
        })
        .collect();
    table(&["OWNER", "POOL", "ADDRESSES", "STATE"], &rows)
}

fn show_table(p: &PoolStatus, blocks: &[BlockUsage], singles: &[StaticLease]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pool:      {}", p.name);
    if let Some(config) = &p.config {
        let scope = match (config.scope, config.block_size) {
            (Some(ipam::PoolScope::Cluster), Some(b)) => {
                let sizes: Vec<String> = [("IPv4", b.ipv4), ("IPv6", b.ipv6)]
                    .into_iter()
                    .filter_map(|(f, p)| p.map(|p| format!("/{p} ({f})")))
                    .collect();
                format!("cluster, blocks {}", sizes.join(" "))
            }
            _ => "node".into(),
        };
        let _ = writeln!(out, "scope:     {scope}");
        for s in &config.subnets {
            let range = match (s.range_start, s.range_end) {
                (None, None) => String::new(),
                (a, b) => format!(
                    " range {}-{}",
                    a.map_or("start".into(), |x| x.to_string()),
                    b.map_or("end".into(), |x| x.to_string())
                ),
            };
            let gw = s.gateway.map_or(String::new(), |g| format!(" gateway {g}"));
            let _ = writeln!(out, "subnet:    {}{range}{gw}", s.subnet);
        }
        for e in &config.exclude {
            let _ = writeln!(out, "exclude:   {e}");
        }
        for r in &config.routes {
            let via = r.gw.map_or(" (on-link)".into(), |g| format!(" via {g}"));
            let _ = writeln!(out, "route:     {}{via}", r.dst);
        }
    }
    let _ = writeln!(out, "usage:     {}", usage_text(p));
    if !blocks.is_empty() {
        let _ = write!(out, "\n{}", blocks_table(blocks));
    }
    if !singles.is_empty() {
        let _ = write!(out, "\n{}", singles_table(singles));
    }
    let mut rows: Vec<Row> = p
        .allocations
        .iter()
        .map(|a| Row {
            allocation: a.clone(),
            orphaned: false,
        })
        .collect();
    rows.extend(p.orphaned.iter().map(|a| Row {
        allocation: a.clone(),
        orphaned: true,
    }));
    let _ = write!(out, "\n{}", allocations_table(&rows));
    out
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> Vec<ipam::PoolConfig> {
        serde_json::from_str(
            r#"[{"name":"fronthaul","scope":"node","subnets":[{"subnet":"10.1.0.0/24","gateway":"10.1.0.1"},{"subnet":"fd00:1::/64"}]}]"#,
        )
        .unwrap()
    }

    fn args(dir: &Path, output: Output, command: IpamCommand) -> IpamArgs {
        IpamArgs {
            state_dir: dir.to_path_buf(),
            output,
            command,
        }
    }

    fn seeded() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), &pools()).unwrap();
        for (uid, dev) in [("uid-1", "pci-0000-3b-02-1"), ("uid-2", "pci-0000-3b-02-2")] {
            ipam.allocate(&Owner::new(uid, "nic", dev).unwrap(), "fronthaul")
                .unwrap();
        }
        dir
    }

    #[test]
    fn list_prints_pools_and_allocations() {
        let dir = seeded();
        let out = render(&args(dir.path(), Output::Table, IpamCommand::List)).unwrap();
        assert!(out.contains("fronthaul  IPv4: 2/253 in use"), "{out}");
        assert!(
            out.contains("uid-1/pci-0000-3b-02-1/nic  fronthaul  10.1.0.2/24,fd00:1::1/64  ok"),
            "{out}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &render(&args(dir.path(), Output::Json, IpamCommand::List)).unwrap(),
        )
        .unwrap();
        assert_eq!(json["allocations"][1]["owner"]["claimUid"], "uid-2");
        assert_eq!(json["allocations"][1]["orphaned"], false);
    }

    #[test]
    fn show_names_known_pools_when_asked_for_an_unknown_one() {
        let dir = seeded();
        let show = |pool: &str| {
            render(&args(
                dir.path(),
                Output::Table,
                IpamCommand::Show { pool: pool.into() },
            ))
        };
        assert!(show("fronthaul").unwrap().contains("gateway 10.1.0.1"));
        let err = show("midhaul").unwrap_err().to_string();
        assert!(err.contains("known pools: fronthaul"), "{err}");
    }

    /// A store with the cluster pool `midhaul` (/27 blocks over
    /// 10.2.0.0/22) holding the block 10.2.0.64/27.
    fn midhaul_with_a_block(dir: &Path) -> Ipam {
        let cluster: Vec<ipam::PoolConfig> = serde_json::from_str(
            r#"[{"name":"midhaul","scope":"cluster","blockSize":{"ipv4":27},"subnets":[{"subnet":"10.2.0.0/22"}]}]"#,
        )
        .unwrap();
        let ipam = Ipam::open(dir, &cluster).unwrap();
        let block = "10.2.0.64/27".parse().unwrap();
        ipam.add_block("midhaul", block, &ipam::lease_name("midhaul", &block))
            .unwrap();
        ipam
    }

    #[test]
    fn list_and_show_print_the_blocks_of_a_cluster_pool_with_their_leases() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ipam = midhaul_with_a_block(dir.path());
            ipam.allocate(
                &Owner::new("uid-1", "nic", "pci-0000-3b-02-1").unwrap(),
                "midhaul",
            )
            .unwrap();
        }
        let out = render(&args(dir.path(), Output::Table, IpamCommand::List)).unwrap();
        assert!(out.contains("midhaul  IPv4: 1/32 in use"), "{out}");
        assert!(
            out.contains("midhaul  10.2.0.64/27  midhaul-10-2-0-64-27  1     31    leased"),
            "{out}"
        );
        let show = render(&args(
            dir.path(),
            Output::Table,
            IpamCommand::Show {
                pool: "midhaul".into(),
            },
        ))
        .unwrap();
        assert!(
            show.contains("scope:     cluster, blocks /27 (IPv4)"),
            "{show}"
        );
        assert!(show.contains("midhaul-10-2-0-64-27"), "{show}");
        let json: serde_json::Value = serde_json::from_str(
            &render(&args(dir.path(), Output::Json, IpamCommand::List)).unwrap(),
        )
        .unwrap();
        assert_eq!(json["blocks"][0]["lease"], "midhaul-10-2-0-64-27");
    }

    #[test]
    fn list_and_show_print_single_address_leases_with_their_holders() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ipam = midhaul_with_a_block(dir.path());
            let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
            ipam.reserve_foreign(
                "midhaul",
                ip("10.2.0.75"),
                "midhaul-10-2-0-75-32",
                "worker-2",
            )
            .unwrap();
            let txn = ipam.database().begin_write().unwrap();
            ipam.record_static_lease_in(&txn, "midhaul", ip("10.2.0.200"), "midhaul-10-2-0-200-32")
                .unwrap();
            ipam.allocate_static_in(
                &txn,
                &Owner::new("uid-1", "nic", "pci-0000-3b-02-1").unwrap(),
                &["10.2.0.200/22".parse().unwrap()],
            )
            .unwrap();
            txn.commit().unwrap();
        }
        let list = render(&args(dir.path(), Output::Table, IpamCommand::List)).unwrap();
        let show = render(&args(
            dir.path(),
            Output::Table,
            IpamCommand::Show {
                pool: "midhaul".into(),
            },
        ))
        .unwrap();
        for out in [&list, &show] {
            assert!(
                out.contains(
                    "midhaul  10.2.0.75   midhaul-10-2-0-75-32    node worker-2 (kept out)"
                ),
                "{out}"
            );
            assert!(
                out.contains("midhaul  10.2.0.200  midhaul-10-2-0-200-32   this node (static)"),
                "{out}"
            );
        }
        let json: serde_json::Value = serde_json::from_str(
            &render(&args(dir.path(), Output::Json, IpamCommand::List)).unwrap(),
        )
        .unwrap();
        assert_eq!(json["singleLeases"][1]["lease"], "midhaul-10-2-0-200-32");
        assert_eq!(json["singleLeases"][1]["holder"]["kind"], "thisNode");
        let json: serde_json::Value = serde_json::from_str(
            &render(&args(
                dir.path(),
                Output::Json,
                IpamCommand::Show {
                    pool: "midhaul".into(),
                },
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(json["name"], "midhaul");
        assert_eq!(json["singleLeases"][0]["holder"]["node"], "worker-2");
        assert_eq!(json["blocks"][0]["lease"], "midhaul-10-2-0-64-27");
    }

    #[test]
    fn release_by_owner_or_claim_and_gc_from_a_file() {
        let dir = seeded();
        let release = |owner: &str| {
            render(&args(
                dir.path(),
                Output::Table,
                IpamCommand::Release {
                    owner: owner.into(),
                },
            ))
            .unwrap()
        };
        assert!(release("uid-1").contains("released 1 allocation(s)"));
        assert_eq!(release("uid-1"), "nothing to release\n");
        let live = dir.path().join("live.txt");
        std::fs::write(&live, "# nothing is live\n").unwrap();
        let out = render(&args(
            dir.path(),
            Output::Json,
            IpamCommand::Gc { live_owners: live },
        ))
        .unwrap();
        let released: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(released[0]["owner"]["claimUid"], "uid-2");
    }

    #[test]
    fn every_subcommand_says_when_the_driver_is_running() {
        let dir = seeded();
        let _driver = Ipam::open(dir.path(), &pools()).unwrap();
        let err = render(&args(
            dir.path(),
            Output::Table,
            IpamCommand::Release {
                owner: "uid-1".into(),
            },
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("the driver is running"), "{err}");
        let err = render(&args(dir.path(), Output::Table, IpamCommand::List))
            .unwrap_err()
            .to_string();
        assert!(err.contains("debug API"), "{err}");
    }

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCommand {
        Ipam(IpamArgs),
    }

    fn parse(argv: &[&str]) -> IpamArgs {
        use clap::Parser;
        let TestCommand::Ipam(args) = TestCli::try_parse_from(argv).unwrap().command;
        args
    }

    #[test]
    fn flags_go_before_or_after_the_subcommand() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
        let a = parse(&["sriov-dra", "ipam", "-o", "json", "show", "fronthaul"]);
        assert_eq!(a.output, Output::Json);
        assert_eq!(a.state_dir, Path::new("/var/lib/sriov-dra"));
        assert!(matches!(a.command, IpamCommand::Show { ref pool } if pool == "fronthaul"));
        let b = parse(&[
            "sriov-dra",
            "ipam",
            "gc",
            "--live-owners",
            "live.txt",
            "--state-dir",
            "/s",
        ]);
        assert_eq!(b.state_dir, Path::new("/s"));
        assert!(matches!(b.command, IpamCommand::Gc { .. }));
    }

    #[test]
    fn bad_live_owner_file_names_the_entry() {
        let dir = seeded();
        let live = dir.path().join("live.json");
        std::fs::write(&live, r#"["uid-1/dev/req", "bad"]"#).unwrap();
        let err = render(&args(
            dir.path(),
            Output::Table,
            IpamCommand::Gc { live_owners: live },
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("entry 2"), "{err:#}");
    }
}
