//! Where the namespace tests find sluice's release binaries, and whether they can run here.

use std::path::{Path, PathBuf};

/// The directory of the release binaries (`SLUICE_BIN` names the `sluice` binary; the others
/// are beside it), after checking that `needed` are there; `None`, with a line saying so, when
/// the tests cannot run here (not root). Missing binaries fail the test with the command that
/// builds them.
pub fn release_bin_dir(needed: &[&str]) -> Option<PathBuf> {
    if !crate::engines::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let sluice = std::env::var_os("SLUICE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sluice"),
        PathBuf::from,
    );
    let dir = sluice.parent().map(Path::to_path_buf)?;
    for b in needed {
        assert!(
            dir.join(b).is_file(),
            "{b} is missing in {}: run `cargo build --release --bins`",
            dir.display()
        );
    }
    Some(dir)
}
