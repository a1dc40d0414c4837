//! A hand-written SVG line chart: one panel per quantity, seconds on the
//! x axis, a few named series per panel.

use std::fmt::Write as _;

/// One line of a panel: its name, colour and one value per second
/// (`None` where there is nothing to plot, e.g. a second with no message).
#[derive(Debug, Clone)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// Any SVG colour.
    pub color: &'static str,
    /// Value per second from the start of the phase.
    pub values: Vec<Option<f64>>,
}

/// A panel: a title, the unit of its y axis, its series.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Shown above the panel.
    pub title: String,
    /// The y axis unit.
    pub unit: String,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 800.0;
const PANEL_HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// The chart: the panels stacked top to bottom.
pub fn render(panels: &[Panel]) -> String {
    let height = PANEL_HEIGHT * panels.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, i as f64 * PANEL_HEIGHT);
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let f = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn panel(s: &mut String, p: &Panel, y0: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL_HEIGHT - TOP - BOTTOM;
    let (x0, top) = (LEFT, y0 + TOP);
    let seconds = p
        .series
        .iter()
        .map(|l| l.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let ymax = p
        .series
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let step = tick_step(if ymax > 0.0 { ymax } else { 1.0 });
    let ytop = (ymax / step).ceil().max(1.0) * step;
    let xs = |i: usize| x0 + plot_w * i as f64 / (seconds - 1) as f64;
    let ys = |v: f64| top + plot_h - plot_h * v / ytop;

    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="{}" font-size="13" font-weight="bold">{} ({})</text>"#,
        y0 + 18.0,
        escape(&p.title),
        escape(&p.unit)
    );
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= ytop + step / 2.0 {
        let y = ys(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 + plot_w,
            x0 - 5.0,
            y + 4.0,
            format_tick(v)
        );
        v += step;
    }
    // x ticks: about ten.
    let xstep = ((seconds as f64 / 10.0).ceil() as usize).max(1);
    for i in (0..seconds).step_by(xstep) {
        let x = xs(i);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{i}</text>",
            top + plot_h,
            top + plot_h + 4.0,
            top + plot_h + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds</text><rect x=\"{x0}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#333\"/>",
        x0 + plot_w / 2.0,
        top + plot_h + 32.0
    );
    for (k, line) in p.series.iter().enumerate() {
        // A polyline per run of seconds that have a value.
        let mut points = String::new();
        let flush = |s: &mut String, points: &mut String| {
            if !points.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                    line.color,
                    points.trim_end()
                );
                points.clear();
            }
        };
        for (i, v) in line.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(points, "{:.1},{:.1} ", xs(i), ys(*v));
                }
                None => flush(s, &mut points),
            }
        }
        flush(s, &mut points);
        let lx = x0 + plot_w - 150.0;
        let ly = top + 12.0 + 14.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            line.color,
            lx + 25.0,
            ly + 4.0,
            escape(&line.name)
        );
    }
}

fn format_tick(v: f64) -> String {
    if v >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lines_and_gaps() {
        let svg = render(&[Panel {
            title: "latency <ms>".into(),
            unit: "ms".into(),
            series: vec![Series {
                name: "p99".into(),
                color: "red",
                values: vec![Some(1.0), None, Some(3.0), Some(2.5)],
            }],
        }]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("latency &lt;ms&gt;"));
    }

    #[test]
    fn empty_panel_is_still_valid() {
        let svg = render(&[Panel {
            title: "t".into(),
            unit: "u".into(),
            series: vec![],
        }]);
        assert!(svg.contains("</svg>"));
    }
}
