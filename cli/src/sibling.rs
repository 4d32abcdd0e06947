//! The commands `sluice` hands over to a binary installed next to it (`sluice bench` to
//! `sluice-e2e-bench`, `sluice demo` to `sluice-demo`): those link the namespace lab, which the
//! `sluice` binary itself must not.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

/// `explicit`, or the binary `name` in the directory of the running `sluice`; an error naming
/// the cargo `package` that builds it when it is not there.
pub fn path(name: &str, package: &str, explicit: Option<PathBuf>) -> Result<PathBuf> {
    let bin = match explicit {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locating the sluice binary")?
            .with_file_name(name),
    };
    if !bin.is_file() {
        anyhow::bail!(
            "{} is missing: build it with `cargo build --release -p {package}` (it is \
             installed next to sluice)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Replaces this process by `c`, so Ctrl-C reaches it directly and it removes its namespaces
/// itself.
pub fn exec(mut c: Command) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = c.exec();
    Err(err).with_context(|| format!("running {}", c.get_program().to_string_lossy()))
}
