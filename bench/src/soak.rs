//! The soak benchmark's figures: samples of the daemon's resident memory and open files over
//! time, the verdict (memory after the soak within a tolerance of memory after warm-up) and a
//! line chart of both, as an SVG.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::e2e::output::nice_axis;

/// One sample of the daemon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the soak started.
    pub secs: f64,
    /// Resident memory (VmRSS), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Endpoints connected at that moment (traffic and churn).
    pub endpoints: usize,
}

/// A finished soak: its samples, where warm-up ended, and the churn it did.
#[derive(Clone, Debug, PartialEq)]
pub struct Soak {
    /// The samples, in time order.
    pub samples: Vec<Sample>,
    /// When warm-up ended, seconds.
    pub warmup_secs: f64,
    /// Connects and disconnects made during the soak.
    pub connects: u64,
    /// Disconnects made during the soak.
    pub disconnects: u64,
}

/// How many samples are averaged for "memory after warm-up" and "after the soak".
const WINDOW: usize = 5;

fn mean_rss(s: &[Sample]) -> Option<f64> {
    (!s.is_empty()).then(|| s.iter().map(|x| x.rss_kib as f64).sum::<f64>() / s.len() as f64)
}

impl Soak {
    /// Mean RSS (KiB) of the last samples of warm-up.
    pub fn rss_after_warmup(&self) -> Option<f64> {
        let n = self
            .samples
            .iter()
            .take_while(|s| s.secs <= self.warmup_secs)
            .count();
        mean_rss(&self.samples[n.saturating_sub(WINDOW)..n])
    }

    /// Mean RSS (KiB) of the last samples.
    pub fn rss_at_end(&self) -> Option<f64> {
        let n = self.samples.len();
        mean_rss(&self.samples[n.saturating_sub(WINDOW)..])
    }

    /// Growth of memory from warm-up to the end, relative (0.05 = 5 %).
    pub fn growth(&self) -> Option<f64> {
        Some(self.rss_at_end()? / self.rss_after_warmup()? - 1.0)
    }

    /// Whether memory after the soak is within `tolerance` (0.10 = 10 %) of after warm-up.
    pub fn holds(&self, tolerance: f64) -> bool {
        self.growth().is_some_and(|g| g <= tolerance)
    }

    /// The figures as JSON (samples included).
    pub fn json(&self) -> Value {
        let fds: Vec<u64> = self.samples.iter().map(|s| s.fds).collect();
        json!({
            "warmup_secs": self.warmup_secs,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "rss_after_warmup_kib": self.rss_after_warmup(),
            "rss_at_end_kib": self.rss_at_end(),
            "growth": self.growth(),
            "fds_min": fds.iter().min(),
            "fds_max": fds.iter().max(),
            "samples": self.samples.iter().map(|s| json!({
                "secs": s.secs, "rss_kib": s.rss_kib, "fds": s.fds, "endpoints": s.endpoints,
            })).collect::<Vec<_>>(),
        })
    }

    /// Two line panels over time: RSS in MiB and open fds, with the end of warm-up marked.
    pub fn svg(&self, title: &str) -> String {
        let end = self.samples.last().map_or(1.0, |s| s.secs.max(1.0));
        let rss: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.secs, s.rss_kib as f64 / 1024.0))
            .collect();
        let fds: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.secs, s.fds as f64))
            .collect();
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{X}" y="22" font-size="15">{title}</text>"#,
            W = CHART_W,
            H = 2.0 * PANEL_H + 60.0,
            X = LEFT,
            title = title.replace(['<', '>', '&'], " "),
        );
        panel(
            &mut out,
            40.0,
            "sluiced RSS (MiB)",
            &rss,
            end,
            self.warmup_secs,
            "#4e79a7",
        );
        panel(
            &mut out,
            40.0 + PANEL_H,
            "open fds",
            &fds,
            end,
            self.warmup_secs,
            "#e15759",
        );
        out.push_str("</svg>\n");
        out
    }
}

const CHART_W: f64 = 820.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 790.0;
const PANEL_H: f64 = 220.0;
const PLOT_H: f64 = 170.0;

/// One panel at `top`: axes with round ticks, the series as a polyline, a dashed line where
/// warm-up ended, and the time axis in seconds.
fn panel(
    out: &mut String,
    top: f64,
    label: &str,
    points: &[(f64, f64)],
    end: f64,
    warmup: f64,
    colour: &str,
) {
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (ymax, ystep) = nice_axis(max * 1.1);
    let (xmax, xstep) = nice_axis(end);
    let x = |t: f64| LEFT + (RIGHT - LEFT) * t / xmax;
    let y = |v: f64| top + 20.0 + PLOT_H * (1.0 - v / ymax);
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{label}</text>"#,
        top + 12.0
    );
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{RIGHT}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            yy = y(v),
            tx = LEFT - 6.0,
            ty = y(v) + 4.0,
        );
        v += ystep;
    }
    let mut t = 0.0;
    while t <= xmax + xstep / 2.0 {
        let _ = write!(
            out,
            r#"<text x="{xx:.1}" y="{ty:.1}" text-anchor="middle">{t}s</text>"#,
            xx = x(t),
            ty = top + PLOT_H + 36.0,
        );
        t += xstep;
    }
    let _ = write!(
        out,
        r##"<line x1="{wx:.1}" x2="{wx:.1}" y1="{y0:.1}" y2="{y1:.1}" stroke="#888" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{y0:.1}" fill="#888">warm-up</text>"##,
        wx = x(warmup),
        y0 = top + 30.0,
        y1 = top + 20.0 + PLOT_H,
        tx = x(warmup) + 4.0,
    );
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
        line.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(rss: &[u64]) -> Soak {
        Soak {
            samples: rss
                .iter()
                .enumerate()
                .map(|(i, r)| Sample {
                    secs: i as f64,
                    rss_kib: *r,
                    fds: 40 + (i % 3) as u64,
                    endpoints: 3,
                })
                .collect(),
            warmup_secs: 9.0,
            connects: 20,
            disconnects: 18,
        }
    }

    #[test]
    fn verdict_compares_the_end_with_the_end_of_warm_up() {
        let flat = soak(&[
            500, 900, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1010, 1020, 1050, 1040, 1030,
            1050, 1060,
        ]);
        assert_eq!(flat.rss_after_warmup(), Some(1000.0));
        assert!((flat.rss_at_end().unwrap() - 1046.0).abs() < 1e-9);
        assert!(flat.holds(0.10));
        let leak = soak(
            &[1000u64; 10]
                .into_iter()
                .chain(1100..1300)
                .collect::<Vec<_>>(),
        );
        assert!(!leak.holds(0.10), "{:?}", leak.growth());
        assert!(!soak(&[]).holds(0.10), "no samples, no verdict");
    }

    #[test]
    fn svg_has_both_panels_and_the_warm_up_mark() {
        let s = soak(&[1000, 1200, 1100, 1150]);
        let doc = s.svg("soak <test>");
        assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert_eq!(doc.matches(">warm-up<").count(), 2);
        assert!(!doc.contains("<test>"), "the title is escaped");
        let j = s.json();
        assert_eq!(j["samples"].as_array().unwrap().len(), 4);
        assert_eq!(j["fds_max"], 42);
    }
}
