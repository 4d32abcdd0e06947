//! Bulk TCP between two namespaces of a lab, checked end to end: a file sent over one
//! connection (socat), its SHA-256 computed by the receiver.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_lab::lab::Lab;

/// Sends `file` over one TCP connection (socat) from namespace `from` to a listener in `to` at
/// `to_ip` (IPv4 or IPv6), port 5300; returns the SHA-256 the receiver computed of what it got
/// (as [`sha256`] prints it), empty when it got nothing.
pub fn bulk_tcp(lab: &mut Lab, file: &Path, (from, to): (&str, &str), to_ip: IpAddr) -> String {
    let sum = lab.dir().join(format!("received-{to}"));
    let (listen, connect) = match to_ip {
        IpAddr::V4(ip) => ("TCP-LISTEN", format!("TCP:{ip}:5300")),
        IpAddr::V6(ip) => ("TCP6-LISTEN", format!("TCP6:[{ip}]:5300")),
    };
    let script = format!(
        "socat -u {listen}:5300,reuseaddr - | sha256sum > {}",
        sum.display()
    );
    let pid = lab.spawn(to, &["sh", "-c", &script], "socat").unwrap();
    lab.wait_listen(to, 5300, Duration::from_secs(5)).unwrap();
    let src = format!("OPEN:{}", file.display());
    let out = lab
        .exec_output(from, &["timeout", "60", "socat", "-u", &src, &connect])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while lab.alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&sum).unwrap_or_default()
}

/// SHA-256 of a file, as `sha256sum` prints it for its standard input.
pub fn sha256(file: &Path) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("sha256sum < {}", file.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
