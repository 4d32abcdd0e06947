//! The four-stream rows: four iperf3 clients, one stream each, against four servers, run at
//! once. iperf3 3.12 (Debian 12's) sends all of `-P 4`'s streams from one thread, so on a
//! two-vCPU machine that row measured the client's single thread (at 94-99 % CPU, the machine
//! 27-35 % idle) and how the forwarding work happened to be split between it and the server,
//! not the forwarding path: the kernel bridge's figure swung between 13.6 and 23.7 Gbit/s from
//! run to run. Four processes keep both CPUs busy, as iperf3 3.16's threaded `-P` does.

use super::parse::{self, IperfTcp, ParseError};
use sluice_lab::lab::Lab;

/// How many streams (client processes, server ports) a four-stream row runs.
pub const STREAMS: u16 = 4;

/// The server ports of a four-stream row whose first server listens on `base`.
pub fn ports(base: u16) -> impl Iterator<Item = u16> {
    (0..STREAMS).map(move |k| base + k)
}

/// The servers of a four-stream row beyond the one on `base`, as (command, port): the bed
/// starts them beside its usual server.
pub fn extra_servers(base: u16, bind: Option<&str>) -> Vec<(Vec<String>, u16)> {
    ports(base)
        .skip(1)
        .map(|p| {
            let mut cmd = vec![
                "iperf3".to_string(),
                "-s".into(),
                "-p".into(),
                p.to_string(),
            ];
            if let Some(ip) = bind {
                cmd.extend(["-B".to_string(), ip.to_string()]);
            }
            (cmd, p)
        })
        .collect()
}

/// The command of one stream's client: `iperf3 -c IP -p PORT -t DUR -J` under a timeout.
pub fn client(ip: &str, port: u16, dur: u32) -> Vec<String> {
    let (t, p, d) = ((dur + 15).to_string(), port.to_string(), dur.to_string());
    ["timeout", &t, "iperf3", "-c", ip, "-p", &p, "-t", &d, "-J"]
        .map(String::from)
        .to_vec()
}

/// Runs the four clients at once in namespace `ns` of `lab` against `ip`'s servers from
/// `base` on; their summed result, or the first client's error.
pub fn run(lab: &Lab, ns: &str, ip: &str, base: u16, dur: u32) -> Result<IperfTcp, String> {
    let outputs: Vec<Result<String, String>> = std::thread::scope(|s| {
        let clients: Vec<_> = ports(base)
            .map(|p| {
                s.spawn(move || {
                    let args = client(ip, p, dur);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let o = lab.exec_output(ns, &args).map_err(|e| e.to_string())?;
                    let out = String::from_utf8_lossy(&o.stdout).into_owned();
                    if out.trim().is_empty() {
                        let err = String::from_utf8_lossy(&o.stderr);
                        return Err(format!(
                            "iperf3: {}",
                            err.lines().next().unwrap_or("no output")
                        ));
                    }
                    Ok(out)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| Err("iperf3 client thread panicked".into()))
            })
            .collect()
    });
    let outputs = outputs.into_iter().collect::<Result<Vec<_>, _>>()?;
    sum(outputs.iter().map(String::as_str)).map_err(|e| e.to_string())
}

/// The result of streams run at once: throughput, retransmits and both ends' CPU summed.
pub fn sum<'a>(outputs: impl IntoIterator<Item = &'a str>) -> Result<IperfTcp, ParseError> {
    let mut total = IperfTcp {
        gbps: 0.0,
        retransmits: 0,
        client_cpu: 0.0,
        server_cpu: 0.0,
    };
    for out in outputs {
        let r = parse::iperf3_tcp(out)?;
        total.gbps += r.gbps;
        total.retransmits += r.retransmits;
        total.client_cpu += r.client_cpu;
        total.server_cpu += r.server_cpu;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP1: &str = include_str!("testdata/iperf3_tcp1.json");
    const REFUSED: &str = include_str!("testdata/iperf3_refused.json");

    #[test]
    fn four_ports_from_the_base_and_three_more_servers() {
        assert_eq!(ports(5201).collect::<Vec<_>>(), [5201, 5202, 5203, 5204]);
        let extra = extra_servers(5211, Some("fd00::2"));
        assert_eq!(
            extra.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            [5212, 5213, 5214]
        );
        assert_eq!(extra[0].0, ["iperf3", "-s", "-p", "5212", "-B", "fd00::2"]);
        assert_eq!(
            extra_servers(5201, None)[2].0,
            ["iperf3", "-s", "-p", "5204"]
        );
    }

    #[test]
    fn one_stream_per_client() {
        let c = client("10.0.0.2", 5203, 5);
        assert_eq!(
            c[2..],
            ["iperf3", "-c", "10.0.0.2", "-p", "5203", "-t", "5", "-J"]
        );
        assert!(!c.contains(&"-P".to_string()));
    }

    #[test]
    fn streams_add_up() {
        let one = parse::iperf3_tcp(TCP1).unwrap();
        let four = sum([TCP1; 4]).unwrap();
        assert!((four.gbps - 4.0 * one.gbps).abs() < 1e-9);
        assert_eq!(four.retransmits, 4 * one.retransmits);
        assert!((four.client_cpu - 4.0 * one.client_cpu).abs() < 1e-9);
        assert!((four.server_cpu - 4.0 * one.server_cpu).abs() < 1e-9);
    }

    #[test]
    fn one_failed_stream_fails_the_row() {
        assert!(matches!(
            sum([TCP1, REFUSED, TCP1]),
            Err(ParseError::Tool { .. })
        ));
    }
}
