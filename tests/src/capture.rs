//! What a namespace's interface saw while a test did something: `tcpdump -e` around an action,
//! for the tests that check what leaves on the wire (tags, MACs).

use std::thread::sleep;
use std::time::Duration;

use sluice_lab::lab::Lab;

/// The lines `tcpdump -l -n -e -i DEV FILTER` printed in namespace `ns` while `during` ran
/// (it gets half a second to start first, and the frames a moment to arrive after).
pub fn tcpdump_during(
    lab: &mut Lab,
    ns: &str,
    dev: &str,
    filter: &str,
    during: impl FnOnce(&Lab),
) -> String {
    let cap = lab.log_path("tcpdump");
    let pid = lab
        .spawn(
            ns,
            &["tcpdump", "-l", "-n", "-e", "-i", dev, filter],
            "tcpdump",
        )
        .expect("tcpdump starts");
    sleep(Duration::from_millis(500));
    during(lab);
    sleep(Duration::from_millis(300));
    lab.stop(pid);
    std::fs::read_to_string(cap).unwrap_or_default()
}
