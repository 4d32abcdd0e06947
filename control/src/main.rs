//! `sluice`: the command-line entry point.

use clap::Parser;

/// sluice: a userspace dataplane for container networks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
