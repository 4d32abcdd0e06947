//! What every benchmark binary does first: note its command line for the results, check that
//! it runs as root, find sluice's binaries.

use std::path::PathBuf;

use anyhow::{bail, Context as _};

use crate::e2e::report::shell_quote;

/// This process's command line, quoted for the shell (the results say how they were made).
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fails unless the process runs as root: the benchmarks create network namespaces.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root: it creates network namespaces");
    }
    Ok(())
}

/// The directory of sluice's binaries: `given`, else the one this binary is in.
pub fn bin_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf()),
    }
}
