//! `sriov-dra demo`: the claim path on a simulated node (see `crate::demo`).
//!
//! The subcommand always parses, so a binary built without the `demo`
//! feature (the image) says why it cannot run it instead of "unrecognized
//! subcommand".

use clap::Args;

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the pod running until Ctrl-C, to look around (debug API, `ip -n`).
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo (needs root: it makes links and a network namespace).
#[cfg(feature = "demo")]
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "sriov-dra demo needs root: it creates network links and a network namespace (run: sudo cargo run --release -- demo)"
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(crate::demo::run(crate::demo::DemoOptions {
            keep: args.keep,
        }))
}

/// Without the `demo` feature there are no test doubles to run it with.
#[cfg(not(feature = "demo"))]
pub fn run(_args: &DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "this sriov-dra was built without the demo feature (release images leave out the test doubles it runs on); run it from a source checkout: sudo cargo run --release -- demo"
    )
}
