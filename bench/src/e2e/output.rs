//! The files `sluice bench --output DIR` writes: `results.json` (every sample and the
//! summaries), `results.md` (the Markdown section) and one SVG bar chart per test group. Pure
//! rendering, tested on recorded figures; `write_dir` is the only part that touches the disk.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::report::{baseline, ratio, reference, results_section, Cell, Row, RunInfo};
use super::{CpuUse, Shape, TestKind};

/// Everything one benchmark run produced, as the output files need it.
#[derive(Debug, Clone, Copy)]
pub struct Results<'a> {
    /// Machine, date and command.
    pub info: &'a RunInfo,
    /// Measured peers, in column order.
    pub peers: &'a [String],
    /// One row per metric.
    pub rows: &'a [Row],
    /// Skipped peers and tests, with the reason.
    pub skipped: &'a [String],
    /// True when the run stopped before all runs completed.
    pub interrupted: bool,
}

fn cpu_json(c: &CpuUse) -> Value {
    json!({
        "forwarder_pct": c.forwarder_pct,
        "softirq_pct": c.softirq_pct,
        "busy_pct": c.busy_pct,
        "forwarding_pct": c.forwarding_pct,
        "background_pct": c.background_pct,
    })
}

fn cell_json(peer: &str, c: &Cell, base: Option<&Cell>) -> Value {
    let samples: Vec<Value> = c
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "run": i + 1,
                "value": s.value.as_ref().ok(),
                "error": s.value.as_ref().err(),
                "note": s.note,
                "cpu": cpu_json(&s.cpu),
                "cost": s.cost,
            })
        })
        .collect();
    json!({
        "peer": peer,
        "shape": Shape::of_peer(peer).text(),
        "median": c.stats.map(|s| s.median),
        "min": c.stats.map(|s| s.min),
        "max": c.stats.map(|s| s.max),
        "ok": c.ok,
        "runs": c.runs,
        "ratio_to_baseline": base.and_then(|b| ratio(c, b)),
        "cpu_median": cpu_json(&c.cpu),
        "cost_median": c.cost,
        "first_error": c.first_error,
        "samples": samples,
    })
}

/// `results.json`: per test group, per metric, per measured peer: its shape, every sample, the
/// median, min and max, `ratio_to_baseline`: the ratio to its reference (the row's baseline, the kernel path, for
/// the bridge shape; the kernel bridge for a namespace <-> host peer where comparable, else
/// null), the CPU use and the forwarding cost (`cost` per sample, `cost_median`, in the
/// metric's `cost_unit`).
pub fn json(r: &Results) -> Value {
    let mut tests: Vec<Value> = Vec::new();
    for kind in TestKind::ALL {
        let metrics: Vec<Value> = r
            .rows
            .iter()
            .filter(|row| TestKind::of(&row.metric) == Some(kind))
            .map(|row| {
                let base = baseline(r.peers, row);
                let peers: Vec<Value> = r
                    .peers
                    .iter()
                    .zip(&row.cells)
                    .enumerate()
                    .filter(|(_, (_, c))| c.runs > 0)
                    .map(|(i, (p, c))| {
                        let reference = reference(r.peers, row, i).and_then(|b| row.cells.get(b));
                        cell_json(p, c, reference)
                    })
                    .collect();
                json!({
                    "metric": row.metric.name,
                    "unit": row.metric.unit.label(),
                    "better": row.metric.better.word(),
                    "cost_unit": row.metric.unit.cost_label(),
                    "baseline": base.and_then(|b| r.peers.get(b)),
                    "peers": peers,
                })
            })
            .collect();
        if !metrics.is_empty() {
            tests.push(json!({ "test": kind.name(), "metrics": metrics }));
        }
    }
    json!({
        "date": r.info.date,
        "command": r.info.command,
        "machine": {
            "kernel": r.info.kernel,
            "nproc": r.info.nproc,
            "cpu_model": r.info.cpu_model,
        },
        "peers": r.peers,
        "skipped": r.skipped,
        "interrupted": r.interrupted,
        "tests": tests,
    })
}

/// `results.md`: a title, then the same section `sluice-e2e-bench` appends to RESULTS.md.
pub fn markdown(r: &Results) -> String {
    let mut skipped = r.skipped.to_vec();
    if r.interrupted {
        skipped.push("interrupted before all runs completed".into());
    }
    format!(
        "# sluice bench\n{}",
        results_section(r.info, r.peers, r.rows, &skipped)
    )
}

/// Escapes text for XML content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis end and tick step (1, 2 or 5 times a power of ten) for values up to `max`.
pub fn nice_axis(max: f64) -> (f64, f64) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// Tick labels: no more decimals than the step needs.
fn fmt_tick(x: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{x:.decimals$}")
}

/// Bar colours, by peer column.
const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

const WIDTH: f64 = 820.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 640.0;
const BAR_ROW: f64 = 30.0;
const BAR_H: f64 = 18.0;

/// One SVG chart for a test group: a panel per metric, a horizontal bar per measured peer
/// (the median) with a min-max whisker and the figures beside it, and an axis with the unit.
/// `None` when the group has no row.
pub fn svg(kind: TestKind, peers: &[String], rows: &[Row]) -> Option<String> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| TestKind::of(&r.metric) == Some(kind))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut body = String::new();
    let mut y = 40.0;
    let host: Vec<&str> = peers
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            Shape::of_peer(p) == Shape::NsHost
                && rows
                    .iter()
                    .any(|r| r.cells.get(*i).is_some_and(|c| c.runs > 0))
        })
        .map(|(_, p)| p.as_str())
        .collect();
    if !host.is_empty() {
        let _ = writeln!(
            body,
            r#"<text class="note" x="10" y="42" font-size="11">{}: namespace -&gt; host loopback (their own shape); the others: endpoint a -&gt; endpoint b</text>"#,
            xml_escape(&host.join(", "))
        );
        y += 12.0;
    }
    let runs = rows
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.runs))
        .max()
        .unwrap_or(0);
    for row in &rows {
        let shown: Vec<(usize, &Cell)> = row
            .cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.runs > 0)
            .collect();
        let top = shown
            .iter()
            .filter_map(|(_, c)| c.stats.map(|s| s.max))
            .fold(0.0, f64::max);
        let (axis_max, step) = nice_axis(top);
        let x_of = |v: f64| LEFT + (v.max(0.0) / axis_max).min(1.0) * (RIGHT - LEFT);
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" font-weight="bold">{} — {}</text>"#,
            y + 14.0,
            xml_escape(row.metric.name),
            xml_escape(&row.metric.unit_text())
        );
        y += 26.0;
        let panel_top = y;
        for (i, c) in &shown {
            let name = peers.get(*i).map_or("?", String::as_str);
            let mid = y + BAR_ROW / 2.0;
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 8.0,
                mid + 5.0,
                xml_escape(name)
            );
            match c.stats {
                Some(s) => {
                    let (x0, xm, xa, xb) = (LEFT, x_of(s.median), x_of(s.min), x_of(s.max));
                    let _ = writeln!(
                        body,
                        r#"<rect class="bar" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{BAR_H}" fill="{}"><title>{}: median {}</title></rect>"#,
                        mid - BAR_H / 2.0,
                        xm - x0,
                        COLOURS[*i % COLOURS.len()],
                        xml_escape(name),
                        super::report::num(s.median)
                    );
                    let _ = writeln!(
                        body,
                        r##"<path class="whisker" d="M{xa:.1} {mid:.1}H{xb:.1}M{xa:.1} {:.1}V{:.1}M{xb:.1} {:.1}V{:.1}" stroke="#222" stroke-width="1.5" fill="none"/>"##,
                        mid - 5.0,
                        mid + 5.0,
                        mid - 5.0,
                        mid + 5.0
                    );
                    let mut label = format!(
                        "{} [{}–{}]",
                        super::report::num(s.median),
                        super::report::num(s.min),
                        super::report::num(s.max)
                    );
                    if c.ok < c.runs {
                        let _ = write!(label, " ({}/{} ok)", c.ok, c.runs);
                    }
                    if c.cost.is_some() {
                        let _ =
                            write!(label, " · {}", super::report::cost_text(c, row.metric.unit));
                    }
                    let _ = writeln!(
                        body,
                        r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                        xb.max(xm) + 8.0,
                        mid + 5.0,
                        xml_escape(&label)
                    );
                }
                None => {
                    let why = c.first_error.as_deref().unwrap_or("no value");
                    let why: String = why.chars().take(70).collect();
                    let _ = writeln!(
                        body,
                        r##"<text x="{:.1}" y="{:.1}" fill="#b00">FAIL: {}</text>"##,
                        LEFT + 4.0,
                        mid + 5.0,
                        xml_escape(&why)
                    );
                }
            }
            y += BAR_ROW;
        }
        let _ = writeln!(
            body,
            r##"<path class="axis" d="M{LEFT:.1} {panel_top:.1}V{y:.1}H{RIGHT:.1}" stroke="#444" fill="none"/>"##
        );
        let mut t = 0.0;
        while t <= axis_max + step / 2.0 {
            let x = x_of(t);
            let _ = writeln!(
                body,
                r##"<path d="M{x:.1} {y:.1}v5" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
                y + 18.0,
                fmt_tick(t, step)
            );
            t += step;
        }
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            (LEFT + RIGHT) / 2.0,
            y + 34.0,
            xml_escape(row.metric.unit.label())
        );
        y += 52.0;
    }
    let height = y;
    Some(format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "\n",
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h:.0}" viewBox="0 0 {w} {h:.0}" font-family="sans-serif" font-size="13">"#,
            "\n",
            r#"<rect class="background" width="100%" height="100%" fill="white"/>"#,
            "\n",
            r#"<text x="10" y="22" font-size="16" font-weight="bold">sluice bench: {title}</text>"#,
            "\n",
            r#"<text x="{wr}" y="22" text-anchor="end" font-size="11">bars: median of {runs} run(s); whiskers: min–max</text>"#,
            "\n{body}</svg>\n"
        ),
        w = WIDTH,
        wr = WIDTH - 10.0,
        h = height,
        title = kind.name(),
        runs = runs,
        body = body
    ))
}

/// Writes `results.json`, `results.md` and `<test>.svg` per test group into `dir` (created if
/// needed); returns the paths written.
pub fn write_dir(dir: &Path, r: &Results) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str| -> std::io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        written.push(p);
        Ok(())
    };
    let text = serde_json::to_string_pretty(&json(r)).map_err(std::io::Error::other)?;
    put("results.json", &(text + "\n"))?;
    put("results.md", &markdown(r))?;
    for kind in TestKind::ALL {
        if let Some(s) = svg(kind, r.peers, r.rows) {
            put(&format!("{}.svg", kind.name()), &s)?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::super::report::cell;
    use super::super::{metrics, Sample};
    use super::*;

    fn s(v: Result<f64, &str>) -> Sample {
        Sample {
            value: v.map_err(String::from),
            note: "retr 0".into(),
            cpu: CpuUse {
                forwarder_pct: Some(70.0),
                softirq_pct: Some(50.0),
                busy_pct: Some(180.0),
                forwarding_pct: Some(60.0),
                background_pct: Some(1.0),
            },
            // Half the figure: costs that survive the JSON round trip exactly.
            cost: v.ok().map(|x| x / 2.0),
        }
    }

    /// Figures from the run recorded in RESULTS.md (2026-11-24), plus an iptables-nat column
    /// that measures only the NAT rows and one failed sample.
    fn recorded() -> (Vec<String>, Vec<Row>) {
        let peers = vec!["kernel".into(), "sluice".into(), "iptables-nat".into()];
        let rows = vec![
            Row {
                metric: metrics::TCP1,
                cells: vec![
                    cell(&[s(Ok(16.8)), s(Ok(15.1)), s(Ok(17.9))]),
                    cell(&[s(Ok(11.8)), s(Ok(11.7)), s(Err("iperf3: refused"))]),
                    cell(&[]),
                ],
            },
            Row {
                metric: metrics::TCP_RR,
                cells: vec![
                    cell(&[s(Ok(78.2)), s(Ok(74.1)), s(Ok(89.1))]),
                    cell(&[s(Ok(41.5)), s(Ok(41.4)), s(Ok(42.6))]),
                    cell(&[]),
                ],
            },
            Row {
                metric: metrics::UDP_RR,
                cells: vec![
                    cell(&[s(Ok(81.5)), s(Ok(73.9)), s(Ok(82.3))]),
                    cell(&[s(Ok(42.7)), s(Ok(42.3)), s(Ok(45.0))]),
                    cell(&[]),
                ],
            },
            Row {
                metric: metrics::NAT_OUT_TCP1,
                cells: vec![
                    cell(&[]),
                    cell(&[s(Ok(12.7)), s(Ok(11.7)), s(Ok(12.9))]),
                    cell(&[s(Ok(15.4)), s(Ok(14.3)), s(Ok(16.0))]),
                ],
            },
        ];
        (peers, rows)
    }

    fn info() -> RunInfo {
        RunInfo {
            date: "2026-11-24 01:52:23 UTC".into(),
            kernel: "6.18".into(),
            nproc: 2,
            cpu_model: "AMD EPYC".into(),
            command: "sluice bench --runs 3".into(),
        }
    }

    /// A tiny XML well-formedness check: tags balance, attributes are quoted, no stray `<`
    /// or `&`; returns the element names in document order.
    fn check_xml(doc: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = doc;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for (i, _) in text.match_indices('&') {
                let ent = &text[i..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            let close = rest[open..].find('>').ok_or("unclosed <")? + open;
            let tag = &rest[open + 1..close];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            rest = &rest[close + 1..];
            if tag.starts_with('?') {
                if !tag.ends_with('?') {
                    return Err(format!("bad declaration {tag:?}"));
                }
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => continue,
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag
                .split_whitespace()
                .next()
                .ok_or("empty tag")?
                .to_string();
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in {tag:?}"));
            }
            for attr in tag.split('"').step_by(2) {
                if attr.contains('=') && !attr.trim_end().ends_with('=') {
                    return Err(format!("unquoted attribute in {tag:?}"));
                }
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        if !rest.trim().is_empty() || !stack.is_empty() {
            return Err(format!("unclosed {stack:?} / trailing {rest:?}"));
        }
        Ok(names)
    }

    #[test]
    fn the_xml_check_catches_broken_documents() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1></a>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml("<a>").is_err());
    }

    #[test]
    fn svg_is_well_formed_with_one_bar_per_measured_peer() {
        let (peers, rows) = recorded();
        for kind in [TestKind::Tcp, TestKind::Rr, TestKind::Nat] {
            let doc = svg(kind, &peers, &rows).unwrap();
            let names = check_xml(&doc).unwrap_or_else(|e| panic!("{kind:?}: {e}\n{doc}"));
            assert_eq!(names[0], "svg");
            assert!(doc.contains(r#"viewBox="0 0 820 "#));
            let panels = rows
                .iter()
                .filter(|r| TestKind::of(&r.metric) == Some(kind))
                .count();
            // Two measured peers per row in the recorded data.
            assert_eq!(
                doc.matches(r#"class="bar""#).count(),
                2 * panels,
                "{kind:?}"
            );
            assert_eq!(doc.matches(r#"class="axis""#).count(), panels);
        }
        let tcp = svg(TestKind::Tcp, &peers, &rows).unwrap();
        assert!(tcp.contains("tcp1 a-&gt;b"));
        assert!(tcp.contains(">Gbit/s</text>"));
        assert!(tcp.contains("16.8 [15.1–17.9]"));
        assert!(tcp.contains("(2/3 ok)"));
        // The cost of each bar, the median of its runs' costs.
        assert!(tcp.contains("16.8 [15.1–17.9] · 8.40 %CPU/Gbit/s"));
        assert!(!tcp.contains(">iptables-nat<"));
        let nat = svg(TestKind::Nat, &peers, &rows).unwrap();
        assert!(nat.contains(">iptables-nat<") && !nat.contains(">kernel<"));
        assert_eq!(svg(TestKind::Udp64, &peers, &rows), None);
    }

    #[test]
    fn failed_peer_is_text_not_a_bar() {
        let peers = vec!["kernel".to_string(), "sluice".to_string()];
        let rows = vec![Row {
            metric: metrics::TCP1,
            cells: vec![cell(&[s(Ok(10.0))]), cell(&[s(Err("no <route> & gone"))])],
        }];
        let doc = svg(TestKind::Tcp, &peers, &rows).unwrap();
        check_xml(&doc).unwrap();
        assert_eq!(doc.matches(r#"class="bar""#).count(), 1);
        assert!(doc.contains("FAIL: no &lt;route&gt; &amp; gone"));
    }

    #[test]
    fn axis_is_round() {
        assert_eq!(nice_axis(17.9), (20.0, 5.0));
        assert_eq!(nice_axis(89.1), (100.0, 20.0));
        assert_eq!(nice_axis(0.37), (0.4, 0.1));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(f64::NAN), (1.0, 0.2));
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(40.0, 20.0), "40");
    }

    #[test]
    fn json_has_samples_medians_ratios_and_cpu() {
        let (peers, rows) = recorded();
        let i = info();
        let skipped = vec!["ovs: skipped, ovs-vswitchd is not installed".to_string()];
        let v = json(&Results {
            info: &i,
            peers: &peers,
            rows: &rows,
            skipped: &skipped,
            interrupted: false,
        });
        assert_eq!(v["peers"][2], "iptables-nat");
        assert_eq!(
            v["skipped"][0],
            "ovs: skipped, ovs-vswitchd is not installed"
        );
        assert_eq!(v["machine"]["nproc"], 2);
        let tests = v["tests"].as_array().unwrap();
        let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
        assert_eq!(names, ["tcp", "rr", "nat"]);
        let tcp = &tests[0]["metrics"][0];
        assert_eq!(tcp["unit"], "Gbit/s");
        assert_eq!(tcp["baseline"], "kernel");
        let p = tcp["peers"].as_array().unwrap();
        assert_eq!(p.len(), 2, "iptables-nat did not run tcp");
        assert_eq!(p[0]["median"], 16.8);
        assert_eq!(p[0]["min"], 15.1);
        assert_eq!(p[0]["max"], 17.9);
        assert_eq!(p[0]["ratio_to_baseline"], 1.0);
        assert_eq!(p[1]["ok"], 2);
        assert_eq!(p[1]["samples"].as_array().unwrap().len(), 3);
        assert_eq!(p[1]["samples"][2]["error"], "iperf3: refused");
        assert_eq!(p[1]["samples"][2]["value"], Value::Null);
        assert_eq!(p[1]["samples"][0]["cpu"]["forwarder_pct"], 70.0);
        assert_eq!(p[1]["cpu_median"]["busy_pct"], 180.0);
        assert_eq!(p[1]["cpu_median"]["forwarding_pct"], 60.0);
        assert_eq!(tcp["cost_unit"], "%CPU/Gbit/s");
        assert_eq!(p[0]["samples"][0]["cost"], 8.4);
        assert_eq!(p[0]["cost_median"], 8.4);
        let r = p[1]["ratio_to_baseline"].as_f64().unwrap();
        assert!((r - 11.75 / 16.8).abs() < 1e-9);
        let nat = &tests[2]["metrics"][0];
        assert_eq!(nat["baseline"], "iptables-nat");
        let r = nat["peers"][0]["ratio_to_baseline"].as_f64().unwrap();
        assert!((r - 12.7 / 15.4).abs() < 1e-9);
    }

    #[test]
    fn other_shapes_in_json_svg_and_text() {
        let peers: Vec<String> = ["kernel", "sluice", "slirp4netns", "ovs"]
            .map(String::from)
            .to_vec();
        let row = |metric, v: [f64; 4]| Row {
            metric,
            cells: v.iter().map(|x| cell(&[s(Ok(*x))])).collect(),
        };
        let rows = vec![
            row(metrics::TCP1, [10.0, 8.0, 2.0, 4.0]),
            row(metrics::UDP64, [200.0, 300.0, 80.0, 150.0]),
        ];
        let i = info();
        let r = Results {
            info: &i,
            peers: &peers,
            rows: &rows,
            skipped: &["slirp4netns: nat n/a for this peer's shape (namespace <-> host)".into()],
            interrupted: false,
        };
        let v = json(&r);
        let tcp = &v["tests"][0]["metrics"][0];
        assert_eq!(tcp["baseline"], "kernel");
        assert_eq!(tcp["peers"][2]["shape"], "namespace <-> host");
        assert_eq!(tcp["peers"][2]["ratio_to_baseline"], 0.2);
        assert_eq!(tcp["peers"][3]["shape"], "bridge");
        assert_eq!(tcp["peers"][3]["ratio_to_baseline"], 0.4);
        let udp = &v["tests"][1]["metrics"][0];
        assert_eq!(udp["peers"][2]["ratio_to_baseline"], Value::Null);
        let doc = svg(TestKind::Tcp, &peers, &rows).unwrap();
        check_xml(&doc).unwrap();
        assert_eq!(doc.matches(r#"class="bar""#).count(), 4);
        assert!(doc.contains(r#"class="note""#) && doc.contains(">slirp4netns: namespace"));
        let bridge_only = svg(TestKind::Tcp, &peers[..2], &rows).unwrap();
        assert!(!bridge_only.contains(r#"class="note""#));
        let md = markdown(&r);
        assert!(md.contains("- slirp4netns: their own shape (namespace <-> host)"));
        assert!(md.contains("- ovs: Open vSwitch userspace datapath"));
        assert!(md.contains("nat n/a for this peer's shape"));
    }

    #[test]
    fn markdown_table_and_files() {
        let (peers, rows) = recorded();
        let i = info();
        let r = Results {
            info: &i,
            peers: &peers,
            rows: &rows,
            skipped: &[],
            interrupted: true,
        };
        let md = markdown(&r);
        assert!(md.starts_with("# sluice bench\n"));
        assert!(md.contains("- skipped: interrupted before all runs completed"));
        let head = md.lines().find(|l| l.starts_with("| test")).unwrap();
        assert!(head.contains("iptables-nat median") && head.ends_with("sluice/kernel |"));
        let nat = md.lines().find(|l| l.starts_with("| nat_out")).unwrap();
        let cols: Vec<&str> = nat.split('|').map(str::trim).collect();
        assert_eq!(cols[cols.len() - 2], "0.82");

        let dir = std::env::temp_dir().join(format!("sluice-bench-out-{}", std::process::id()));
        let written = write_dir(&dir, &r).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["results.json", "results.md", "tcp.svg", "rr.svg", "nat.svg"]
        );
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(back, json(&r));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
