//! `sluiced` and the `sluice` CLI end to end, in namespaces: networks, connect, traffic
//! through the userspace bridge and NAPT, and restart recovery. Needs root and the release
//! binaries (`cargo build --release -p sluice-control`; `SLUICE_BIN` names the `sluice` binary,
//! `sluiced` is expected beside it).

use std::path::{Path, PathBuf};

use sluice_control::daemonlab::{DaemonLab, OUTSIDE_IP};

fn bin_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return None;
    }
    let sluice = std::env::var_os("SLUICE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sluice"),
        PathBuf::from,
    );
    let dir = sluice.parent().map(Path::to_path_buf)?;
    assert!(
        dir.join("sluiced").is_file() && sluice.is_file(),
        "sluice and sluiced are missing in {}: run `cargo build --release -p sluice-control`",
        dir.display()
    );
    Some(dir)
}

#[test]
fn connect_bridges_routes_and_survives_kill_9() {
    let Some(bin) = bin_dir() else { return };
    let mut d = DaemonLab::start("dmn", &bin, &["--workers", "1"]).unwrap();
    d.sluice_ok(&["network", "create", "--subnet", "10.60.0.0/24", "front"])
        .unwrap();
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    d.sluice_ok(&["network", "connect", "--name", "web", "front", &c1])
        .unwrap();
    d.sluice_ok(&["network", "connect", "--name", "db", "front", &c2])
        .unwrap();
    let lab = d.lab();
    lab.wait_ping(
        "c1",
        "10.60.0.3".parse().unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    lab.wait_ping("c1", OUTSIDE_IP, std::time::Duration::from_secs(5))
        .unwrap();
    d.kill9();
    d.restart().unwrap();
    let ps = d.sluice_ok(&["ps"]).unwrap();
    assert!(ps.contains("web") && ps.contains("db"), "{ps}");
    d.lab()
        .wait_ping(
            "c2",
            "10.60.0.2".parse().unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
}
