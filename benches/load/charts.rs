//! SVG charts of the results: grouped bars (p50 and p99 latency per server) on a log
//! scale, one chart per scenario.

use std::path::Path;

use plotters::prelude::*;

/// One group of bars: a label under the group and one value per series.
#[derive(Debug, Clone)]
pub struct Group {
    /// Shown under the bars.
    pub label: String,
    /// One value per series, in series order.
    pub values: Vec<f64>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(66, 133, 244),
    RGBColor(219, 68, 55),
    RGBColor(244, 180, 0),
    RGBColor(15, 157, 88),
];

/// Writes a grouped bar chart to `path` (SVG); the y axis is logarithmic so a 1 ms and a
/// 1 s bar are both readable. Non-positive and NaN values get no bar.
pub fn latency_bars(path: &Path, title: &str, series: &[&str], groups: &[Group]) {
    if let Err(err) = draw(path, title, series, groups) {
        eprintln!("load: cannot draw {}: {err}", path.display());
    }
}

fn draw(
    path: &Path,
    title: &str,
    series: &[&str],
    groups: &[Group],
) -> Result<(), Box<dyn std::error::Error>> {
    let values = || {
        groups
            .iter()
            .flat_map(|g| g.values.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = values().fold(1.0_f64, f64::max);
    let min = values().fold(max, f64::min);
    // Whole decades around the data, with room above the tallest bar for its label.
    let y_low = 10f64.powf((min.log10() - 0.3).floor());
    let y_high = 10f64.powf((max.log10() + 0.5).ceil());
    let width = (140 * groups.len().max(2) + 160) as u32;
    let root = SVGBackend::new(path, (width.max(640), 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (y_low..y_high).log_scale())?;
    let label_of = |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        groups
            .get(i as usize)
            .map(|g| g.label.clone())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&label_of)
        .y_desc("latency, ms (log scale)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    let bar_width = 0.8 / series.len().max(1) as f64;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let bars = groups.iter().enumerate().filter_map(|(i, g)| {
            let v = *g.values.get(s)?;
            if !(v.is_finite() && v > 0.0) {
                return None;
            }
            let x0 = i as f64 - 0.4 + s as f64 * bar_width;
            Some(Rectangle::new(
                [(x0, y_low), (x0 + bar_width * 0.9, v)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let labels = groups.iter().enumerate().filter_map(|(i, g)| {
            let v = *g.values.get(s)?;
            if !(v.is_finite() && v > 0.0) {
                return None;
            }
            let x = i as f64 - 0.4 + (s as f64 + 0.1) * bar_width;
            Some(Text::new(
                short(v),
                (x, v * 1.15),
                ("sans-serif", 12).into_font().color(&BLACK),
            ))
        });
        chart.draw_series(labels)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `0.81`, `12.3`, `1450`.
fn short(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}
