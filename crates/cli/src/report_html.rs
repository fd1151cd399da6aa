//! What a demo or bench run records over time, and `--report FILE`: one self-contained HTML
//! page with SVG charts of it (publish latency distribution, throughput, publish → stream
//! latency, backlog and lag, process memory; for the demo also the fill latency distribution
//! per symbol and the alerts IntelliSense raised), drawn with `plotters`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use evstream::publish::CaptureMonitor;
use evstream::ship::ShipperMonitor;
use evstream_intellisense::Percentiles;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// One look at the running pipeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the run started.
    pub(crate) at_s: f64,
    pub(crate) published: u64,
    pub(crate) shipped: u64,
    /// Events the consumer group handled: processed, or acknowledged unhandled (demo only).
    pub(crate) processed: Option<u64>,
    /// Resident memory of this process (Linux), bytes.
    pub(crate) rss_bytes: Option<u64>,
}

/// Reads how many events the group has handled, for the sampler (demo only).
pub(crate) type ProcessedProbe = Box<dyn FnMut() -> Option<u64> + Send>;

/// A thread that samples the run at a fixed interval and, on a terminal, keeps a progress
/// line up to date.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    pub(crate) fn start(
        interval: Duration,
        capture: CaptureMonitor,
        shipper: ShipperMonitor,
        mut processed: Option<ProcessedProbe>,
        progress_line: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut previous: Option<Sample> = None;
            loop {
                let sample = Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    published: capture.health().published,
                    shipped: shipper.health().shipped,
                    processed: processed.as_mut().and_then(|probe| probe()),
                    rss_bytes: resident_bytes(),
                };
                if progress_line {
                    print_progress(&sample, previous.as_ref());
                }
                samples.push(sample);
                previous = Some(sample);
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                // Sleep in short steps so that stopping is quick.
                let due = Instant::now() + interval;
                while Instant::now() < due && !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20).min(interval));
                }
            }
            if progress_line {
                eprintln!();
            }
            samples
        });
        Self { stop, thread }
    }

    /// Takes a last sample and returns them all.
    pub(crate) fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn print_progress(sample: &Sample, previous: Option<&Sample>) {
    let (count, label) = match sample.processed {
        Some(processed) => (processed, "processed"),
        None => (sample.shipped, "shipped"),
    };
    let rate = previous.map_or(0.0, |p| {
        let before = p.processed.unwrap_or(p.shipped);
        count.saturating_sub(before) as f64 / (sample.at_s - p.at_s).max(1e-9)
    });
    let processed = match sample.processed {
        Some(processed) => format!("  processed {processed:>9}"),
        None => String::new(),
    };
    eprint!(
        "\r{:>6.1} s  published {:>9}  shipped {:>9}{processed}  lag {:>7}  {rate:>8.0} {label}/s   ",
        sample.at_s,
        sample.published,
        sample.shipped,
        sample.published.saturating_sub(count),
    );
}

/// Resident set size (`VmRSS` of `/proc/self/status`); `None` where there is no procfs.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The time from `publish` to the entry's append in Redis, per second of the run, read from
/// the stream: an entry id's first part is Redis's clock in milliseconds when it appended it,
/// and `timestamp_ns` is the publisher's clock. So the resolution is one millisecond, and both
/// clocks are this machine's when Redis runs here.
#[derive(Debug)]
pub(crate) struct AppendLatency {
    run_started_ns: u64,
    /// Microseconds, per second since the run started (only seconds with entries: a soak
    /// reads back only the stream's newest entries).
    per_second: BTreeMap<u64, Histogram<u64>>,
    all: Histogram<u64>,
}

impl AppendLatency {
    /// `run_started` is the wall clock when publishing began.
    pub(crate) fn new(run_started: SystemTime) -> Self {
        let run_started_ns = run_started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            run_started_ns,
            per_second: BTreeMap::new(),
            all: histogram_us(),
        }
    }

    /// Records one entry: its stream id and its `timestamp_ns` field.
    pub(crate) fn record(&mut self, entry_id: &str, timestamp_ns: u64) {
        let Some(appended_ms) = entry_id
            .split_once('-')
            .and_then(|(ms, _)| ms.parse::<u64>().ok())
        else {
            return;
        };
        if timestamp_ns < self.run_started_ns {
            return; // An entry of an earlier run.
        }
        let second = (timestamp_ns - self.run_started_ns) / 1_000_000_000;
        if second > MAX_RUN_SECONDS {
            return; // A timestamp from a wrong clock: not this run's.
        }
        // The entry id has whole milliseconds: compare at that resolution.
        let latency_us = (appended_ms * 1000).saturating_sub(timestamp_ns / 1_000_000 * 1000);
        self.per_second
            .entry(second)
            .or_insert_with(histogram_us)
            .saturating_record(latency_us);
        self.all.saturating_record(latency_us);
    }

    /// p50, p99, p99.9 and max over the whole run.
    pub(crate) fn summary(&self) -> Percentiles {
        Percentiles::of(&self.all, Duration::from_micros(1))
    }
}

/// Seconds since the start beyond which a timestamp is not this run's (30 days).
const MAX_RUN_SECONDS: u64 = 30 * 24 * 3600;

/// Microseconds up to an hour, two significant digits (a few KiB per histogram).
fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// What the report page shows.
pub(crate) struct Report<'a> {
    /// `evstream demo` or `evstream bench`.
    pub(crate) title: &'a str,
    /// The run's summary, as `--json` prints it.
    pub(crate) summary: &'a serde_json::Value,
    /// Publish latencies, nanoseconds.
    pub(crate) publish_ns: &'a Histogram<u64>,
    pub(crate) samples: &'a [Sample],
    pub(crate) append_latency: &'a AppendLatency,
    /// What IntelliSense found in the simulated market (demo only).
    pub(crate) market: Option<MarketView<'a>>,
}

/// What IntelliSense found in the demo's market, for the report.
pub(crate) struct MarketView<'a> {
    /// Per symbol, `OrderCreated` → first fill, nanoseconds.
    pub(crate) fill_latency: Vec<(&'a str, &'a Histogram<u64>)>,
    /// The fill latency above which IntelliSense alerts, ms (drawn on the chart).
    pub(crate) fill_alert_ms: f64,
    /// Each alert: seconds since the run started, and its kind and level
    /// (`fill_latency WARNING`), in time order.
    pub(crate) alerts: Vec<(f64, String)>,
    /// The table of alerts: kind and level, how many, an example message.
    pub(crate) alert_rows: Vec<(String, u64, String)>,
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

const WIDTH: u32 = 820;
const HEIGHT: u32 = 340;

type Points = Vec<(f64, f64)>;

impl Report<'_> {
    /// Writes the page to `path`.
    pub(crate) fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let html = self.render()?;
        std::fs::write(path, html)
            .with_context(|| format!("cannot write the report to {}", path.display()))
    }

    fn render(&self) -> anyhow::Result<String> {
        let mut charts = vec![
            (
                "Publish latency distribution",
                "Time of one publish call (a sample of calls on the hot path), by percentile.",
                self.publish_chart()?,
            ),
            (
                "Throughput over time",
                "Events per second between two samples.",
                self.throughput_chart()?,
            ),
            (
                "Publish → stream latency over time",
                "From publish to the entry's append in Redis, per second of publishing \
                 (millisecond resolution: Redis's entry ids carry milliseconds).",
                self.append_latency_chart()?,
            ),
            (
                "Backlog and group lag over time",
                "Published but not yet in Redis (shipper backlog); published but not yet \
                 processed by the consumer group (group lag, demo).",
                self.backlog_chart()?,
            ),
        ];
        if self.samples.iter().any(|s| s.rss_bytes.is_some()) {
            charts.push((
                "Process memory over time",
                "Resident set size of this process.",
                self.memory_chart()?,
            ));
        }
        if let Some(market) = &self.market {
            charts.push((
                "Fill latency distribution per symbol",
                "OrderCreated → first fill, as IntelliSense measured it: the share of each \
                 symbol's filled orders per latency bin (ten bins per decade, log scale). \
                 The dashed line is the alert threshold.",
                fill_latency_chart(market)?,
            ));
            charts.push((
                "IntelliSense alerts over time",
                "Alerts raised so far, by kind and level (latency alerts when the pair \
                 completes, risk alerts when the order is read).",
                self.alerts_chart(market)?,
            ));
        }
        let summary = serde_json::to_string_pretty(self.summary)?;
        let mut html = String::with_capacity(64 * 1024);
        html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        html.push_str(&format!("<title>{}</title>\n", escape(self.title)));
        html.push_str(
            "<style>body{font-family:sans-serif;max-width:880px;margin:2em auto;color:#222}\
             pre{background:#f6f6f6;padding:1em;overflow:auto}\
             figure{margin:1.5em 0}figcaption{color:#555;font-size:.9em}\
             table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;\
             text-align:left}</style>\n",
        );
        html.push_str("</head>\n<body>\n");
        html.push_str(&format!("<h1>{}</h1>\n", escape(self.title)));
        for (title, caption, svg) in &charts {
            html.push_str(&format!(
                "<figure>\n<h2>{}</h2>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
                escape(title),
                escape(caption)
            ));
        }
        if let Some(market) = &self.market {
            html.push_str(&alerts_table(market));
        }
        html.push_str("<h2>Summary</h2>\n<pre>");
        html.push_str(&escape(&summary));
        html.push_str("</pre>\n</body>\n</html>\n");
        Ok(html)
    }

    /// Latency against percentile on a "nines" axis: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9 …
    fn publish_chart(&self) -> anyhow::Result<String> {
        let h = self.publish_ns;
        let points: Points = if h.is_empty() {
            Vec::new()
        } else {
            (0..=50)
                .map(|step| {
                    let nines = f64::from(step) / 10.0; // 0 … 5
                    let q = 1.0 - 10f64.powf(-nines);
                    (nines, h.value_at_quantile(q).max(1) as f64)
                })
                .collect()
        };
        let top = points.iter().map(|p| p.1).fold(10.0, f64::max) * 1.5;
        let format_nines = |x: &f64| {
            let tenths = (x * 10.0).round() as i32;
            match (tenths % 10, tenths / 10) {
                (0, 0) => "p0".to_owned(),
                (0, 1) => "p90".to_owned(),
                (0, 2) => "p99".to_owned(),
                (0, n) => format!("p99.{}", "9".repeat((n - 2) as usize)),
                _ => String::new(),
            }
        };
        svg_chart(|root| {
            let mut chart = ChartBuilder::on(root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..5f64, (1f64..top).log_scale())?;
            chart
                .configure_mesh()
                .x_labels(6)
                .x_label_formatter(&format_nines)
                .x_desc("percentile")
                .y_desc("ns")
                .y_label_formatter(&|v| compact(*v))
                .draw()?;
            chart
                .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?
                .label("publish")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            legend(&mut chart)
        })
    }

    fn throughput_chart(&self) -> anyhow::Result<String> {
        let rate = |value: fn(&Sample) -> Option<u64>| -> Points {
            self.samples
                .windows(2)
                .filter_map(|w| {
                    let (a, b) = (value(&w[0])?, value(&w[1])?);
                    let dt = (w[1].at_s - w[0].at_s).max(1e-9);
                    Some((w[1].at_s, b.saturating_sub(a) as f64 / dt))
                })
                .collect()
        };
        let series = vec![
            ("published", rate(|s| Some(s.published)), BLUE),
            ("shipped", rate(|s| Some(s.shipped)), GREEN),
            ("processed", rate(|s| s.processed), RED),
        ];
        self.time_chart("events/s", series)
    }

    fn append_latency_chart(&self) -> anyhow::Result<String> {
        let per_second = &self.append_latency.per_second;
        let at = |q: f64| -> Points {
            per_second
                .iter()
                .map(|(second, h)| (*second as f64 + 0.5, h.value_at_quantile(q) as f64 / 1000.0))
                .collect()
        };
        self.time_chart(
            "ms",
            vec![
                ("p50", at(0.5), BLUE),
                ("p99", at(0.99), RED),
                ("max", at(1.0), BLACK),
            ],
        )
    }

    fn backlog_chart(&self) -> anyhow::Result<String> {
        let backlog = self
            .samples
            .iter()
            .map(|s| (s.at_s, s.published.saturating_sub(s.shipped) as f64))
            .collect();
        let lag = self
            .samples
            .iter()
            .filter_map(|s| Some((s.at_s, s.published.saturating_sub(s.processed?) as f64)))
            .collect();
        self.time_chart(
            "events",
            vec![("shipper backlog", backlog, BLUE), ("group lag", lag, RED)],
        )
    }

    /// Cumulative alerts per kind and level, as steps over the run, on a log scale: a
    /// couple of risk alerts stay visible beside hundreds of latency alerts.
    fn alerts_chart(&self, market: &MarketView<'_>) -> anyhow::Result<String> {
        let mut series: BTreeMap<&str, Points> = BTreeMap::new();
        for (at_s, name) in &market.alerts {
            let points = series.entry(name).or_default();
            match points.last() {
                Some(&(_, count)) => points.extend([(*at_s, count), (*at_s, count + 1.0)]),
                None => points.push((*at_s, 1.0)),
            }
        }
        let end = self
            .samples
            .last()
            .map_or(0.0, |s| s.at_s)
            .max(market.alerts.last().map_or(0.0, |a| a.0))
            .max(1.0);
        for points in series.values_mut() {
            if let Some(&(at_s, count)) = points.last() {
                points.push((at_s.max(end), count));
            }
        }
        let top = market.alerts.len().max(1) as f64 * 2.0;
        svg_chart(|root| {
            let mut chart = ChartBuilder::on(root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..end, (0.8f64..top).log_scale())?;
            chart
                .configure_mesh()
                .x_desc("seconds since start")
                .y_desc("alerts so far")
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()?;
            for ((label, points), color) in series.into_iter().zip(COLORS.iter().cycle()) {
                let color = *color;
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            // Upper left: the counts climb towards the upper right.
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
        })
    }

    fn memory_chart(&self) -> anyhow::Result<String> {
        let rss = self
            .samples
            .iter()
            .filter_map(|s| Some((s.at_s, s.rss_bytes? as f64 / (1024.0 * 1024.0))))
            .collect();
        self.time_chart("MiB", vec![("resident memory", rss, BLUE)])
    }

    /// Lines over the run's seconds; series without points are left out.
    fn time_chart(
        &self,
        unit: &str,
        series: Vec<(&str, Points, RGBColor)>,
    ) -> anyhow::Result<String> {
        let series: Vec<_> = series.into_iter().filter(|s| !s.1.is_empty()).collect();
        let end = self
            .samples
            .last()
            .map_or(1.0, |s| s.at_s)
            .max(
                self.append_latency
                    .per_second
                    .keys()
                    .next_back()
                    .map_or(0.0, |s| *s as f64 + 1.0),
            )
            .max(1.0);
        let top = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.1;
        svg_chart(|root| {
            let mut chart = ChartBuilder::on(root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(80)
                .build_cartesian_2d(0f64..end, 0f64..top)?;
            chart
                .configure_mesh()
                .x_desc("seconds since start")
                .y_desc(unit)
                .y_label_formatter(&|v| compact(*v))
                .draw()?;
            for (label, points, color) in series {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            legend(&mut chart)
        })
    }
}

/// Colours of series without a meaning of their own (symbols, alert kinds).
const COLORS: [RGBColor; 7] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
];

/// Fill latency bins: ten per decade from 0.1 ms to 1 s.
const BINS_PER_DECADE: i32 = 10;
const LATENCY_AXIS_MS: (f64, f64) = (0.1, 1000.0);

/// Share of each symbol's fills per latency bin, over a log-scale latency axis.
fn fill_latency_chart(market: &MarketView<'_>) -> anyhow::Result<String> {
    let (low, high) = LATENCY_AXIS_MS;
    let bins = (BINS_PER_DECADE as f64 * (high / low).log10()).round() as i32;
    let edge_ms = |i: i32| low * 10f64.powf(f64::from(i) / f64::from(BINS_PER_DECADE));
    let series: Vec<(&str, Points, RGBColor)> = market
        .fill_latency
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .zip(COLORS.iter().cycle())
        .map(|((symbol, h), color)| {
            let total = h.len() as f64;
            let points = (0..bins)
                .map(|i| {
                    let (from, to) = (edge_ms(i), edge_ms(i + 1));
                    // Everything below the axis is in the first bin, above it in the last.
                    let from_ns = if i == 0 { 0 } else { (from * 1e6) as u64 };
                    let to_ns = if i + 1 == bins {
                        u64::MAX
                    } else {
                        (to * 1e6) as u64 - 1
                    };
                    let count = h.count_between(from_ns, to_ns.min(h.max()).max(from_ns));
                    ((from * to).sqrt(), count as f64 / total * 100.0)
                })
                .collect();
            (*symbol, points, *color)
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let threshold = market.fill_alert_ms;
    svg_chart(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d((low..high).log_scale(), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("fill latency, ms")
            .y_desc("% of the symbol's fills")
            .x_label_formatter(&|v| format!("{v}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        for (label, points, color) in series {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .draw_series(DashedLineSeries::new(
                [(threshold, 0.0), (threshold, top)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))?
            .label(format!("alert above {threshold} ms"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
        legend(&mut chart)
    })
}

/// The alerts as an HTML table (kind and level, count, an example).
fn alerts_table(market: &MarketView<'_>) -> String {
    let mut html = String::from("<h2>IntelliSense alerts</h2>\n");
    if market.alert_rows.is_empty() {
        html.push_str("<p>No alert fired.</p>\n");
        return html;
    }
    html.push_str("<table>\n<tr><th>kind and level</th><th>count</th><th>example</th></tr>\n");
    for (name, count, example) in &market.alert_rows {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{count}</td><td>{}</td></tr>\n",
            escape(name),
            escape(example)
        ));
    }
    html.push_str("</table>\n");
    html
}

type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn legend<'a, 'b: 'a, X, Y>(chart: &mut Chart<'a, 'b, X, Y>) -> DrawResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// Draws one chart into an SVG string.
fn svg_chart(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|error| anyhow::anyhow!("cannot draw a chart of the report: {error}"))?;
    }
    Ok(svg)
}

/// 1234567 → "1.2M", for axis labels.
fn compact(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1}M", value / 1e6),
        v if v >= 1e4 => format!("{:.0}K", value / 1e3),
        v if v >= 10.0 || v == 0.0 => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use evstream_intellisense::percentiles::ms;

    #[test]
    fn append_latency_is_read_from_the_entry_id_per_second_of_the_run() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut latency = AppendLatency::new(start);
        // Published 0.5 s into the run, appended 3 ms later.
        latency.record("1000503-0", 1_000_500_000_000);
        // Published 2.2 s in, appended in the same millisecond.
        latency.record("1002200-7", 1_002_200_400_000);
        latency.record("not-an-id", 1_002_200_400_000);
        latency.record("999000-0", 999_000_000_000); // before the run: ignored
        assert_eq!(latency.per_second.len(), 2);
        // 3 ms, within the histogram's three significant digits.
        assert!(latency.per_second[&0].equivalent(latency.per_second[&0].max(), 3000));
        assert!(!latency.per_second.contains_key(&1));
        assert_eq!(latency.per_second[&2].len(), 1);
        let summary = latency.summary();
        assert_eq!(summary.count, 2);
        assert!((ms(summary.max) - 3.0).abs() < 0.01, "{summary:?}");
    }

    #[test]
    fn a_report_holds_every_chart_and_escapes_the_summary() {
        let mut publish = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in [200, 250, 300, 900, 5_000] {
            publish.record(ns).unwrap();
        }
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                at_s: f64::from(i),
                published: u64::from(i as u32) * 1000,
                shipped: u64::from(i as u32) * 900,
                processed: Some(u64::from(i as u32) * 800),
                rss_bytes: Some(50 << 20),
            })
            .collect();
        let mut latency = AppendLatency::new(UNIX_EPOCH);
        latency.record("1500-0", 1_000_000_000);
        let summary = serde_json::json!({"note": "<b>&"});
        let html = Report {
            title: "evstream bench",
            summary: &summary,
            publish_ns: &publish,
            samples: &samples,
            append_latency: &latency,
            market: None,
        }
        .render()
        .unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<svg").count(), 5);
        assert_eq!(html.matches("</svg>").count(), 5);
        assert!(html.contains("&lt;b&gt;&amp;"));
        assert!(!html.contains("<b>&"));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn a_demo_report_adds_the_fill_latency_and_alert_charts_and_table() {
        let mut fills = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for ms in [1, 2, 2, 3, 5, 40, 250] {
            fills.record(ms * 1_000_000).unwrap();
        }
        let empty = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let samples: Vec<Sample> = (0..3)
            .map(|i| Sample {
                at_s: f64::from(i),
                published: 10,
                shipped: 10,
                processed: Some(10),
                rss_bytes: None,
            })
            .collect();
        let latency = AppendLatency::new(UNIX_EPOCH);
        let html = Report {
            title: "evstream demo",
            summary: &serde_json::json!({}),
            publish_ns: &fills,
            samples: &samples,
            append_latency: &latency,
            market: Some(MarketView {
                fill_latency: vec![("AAPL", &fills), ("MSFT", &empty)],
                fill_alert_ms: 100.0,
                alerts: vec![
                    (0.5, "risk CRITICAL".to_owned()),
                    (1.2, "fill_latency WARNING".to_owned()),
                    (1.4, "fill_latency WARNING".to_owned()),
                ],
                alert_rows: vec![(
                    "fill_latency WARNING".to_owned(),
                    2,
                    "fill latency of 250 ms is <above> 100 ms".to_owned(),
                )],
            }),
        }
        .render()
        .unwrap();
        // Four charts of the pipeline (no memory samples) and two of the market.
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(html.contains("Fill latency distribution per symbol"));
        assert!(html.contains("IntelliSense alerts over time"));
        assert!(html.contains("<td>fill_latency WARNING</td><td>2</td>"));
        assert!(html.contains("&lt;above&gt;"));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn compact_labels() {
        assert_eq!(compact(1_234_567.0), "1.2M");
        assert_eq!(compact(45_000.0), "45K");
        assert_eq!(compact(120.0), "120");
        assert_eq!(compact(0.5), "0.50");
    }
}
