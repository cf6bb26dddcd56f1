//! Charts drawn on the server as SVG: nothing to load in the page, readable without
//! script, coloured by the stylesheet (so the dark theme applies), each with a text
//! title for screen readers and a tooltip per point.

use maud::{Markup, html};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// X labels written at most; the others are in the tooltips.
const X_LABELS: usize = 8;

/// One line of a line chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

/// The smallest round figure at or above `max`, so that gridlines fall on round values.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|s| s * magnitude >= max)
        .unwrap_or(10.0);
    step * magnitude
}

fn short(value: f64) -> String {
    if value >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value >= 10_000.0 {
        format!("{:.0}k", value / 1_000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn y_of(value: f64, top: f64) -> f64 {
    TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - value / top)
}

/// Gridlines with their values, and the x labels.
fn axes(labels: &[String], top: f64, x_of: impl Fn(usize) -> f64) -> Markup {
    let every = labels.len().div_ceil(X_LABELS).max(1);
    html! {
        g.grid {
            @for i in 0..=4 {
                @let value = top * f64::from(i) / 4.0;
                @let y = y_of(value, top);
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                text.axis x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (short(value)) }
            }
            @for (i, label) in labels.iter().enumerate() {
                @if i % every == 0 {
                    text.axis x=(x_of(i)) y=(HEIGHT - 8.0) text-anchor="middle" { (label) }
                }
            }
        }
    }
}

/// The chart's top: a round figure; at least 4 for counts, so that gridlines stay whole.
fn top_of<'v>(values: impl Iterator<Item = &'v f64> + Clone) -> f64 {
    let max = values.clone().copied().fold(0.0, f64::max);
    let counts = values.into_iter().all(|v| v.fract() == 0.0);
    let top = nice_ceiling(max);
    if counts { top.max(4.0) } else { top }
}

/// A bar chart of `values`, one per label.
pub fn bars(id: &str, title: &str, labels: &[String], values: &[f64]) -> Markup {
    let top = top_of(values.iter());
    let slot = plot_width() / labels.len().max(1) as f64;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby={ (id) "-title" } {
                title #{ (id) "-title" } { (title) }
                (axes(labels, top, x_of))
                g.bars {
                    @for (i, value) in values.iter().enumerate() {
                        @let y = y_of(*value, top);
                        rect x=(LEFT + slot * i as f64 + slot * 0.1) y=(y)
                            width=(slot * 0.8) height=((HEIGHT - BOTTOM - y).max(0.0)) {
                            title { (labels.get(i).map_or("", String::as_str)) ": " (short(*value)) }
                        }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// A line chart of several series over the same labels, with a legend.
pub fn lines(id: &str, title: &str, labels: &[String], series: &[Series<'_>]) -> Markup {
    let top = top_of(series.iter().flat_map(|s| s.values.iter()));
    lines_up_to(id, title, labels, series, top)
}

/// A line chart whose scale ends at `top` (a yes-or-no series, drawn as 0 and 1).
pub fn lines_up_to(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series<'_>],
    top: f64,
) -> Markup {
    let step = plot_width() / (labels.len().max(2) - 1) as f64;
    let x_of = |i: usize| LEFT + step * i as f64;
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby={ (id) "-title" } {
                title #{ (id) "-title" } { (title) }
                (axes(labels, top, x_of))
                @for (n, line) in series.iter().enumerate() {
                    @let points = (line.values.iter().enumerate())
                        .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v, top)))
                        .collect::<Vec<_>>()
                        .join(" ");
                    g class={ "series series-" (n % 6) } {
                        polyline points=(points) {}
                        @for (i, value) in line.values.iter().enumerate() {
                            circle cx=(x_of(i)) cy=(y_of(*value, top)) r="2.5" {
                                title { (line.name) ", " (labels.get(i).map_or("", String::as_str)) ": " (short(*value)) }
                            }
                        }
                    }
                }
            }
            figcaption {
                (title)
                ul.legend {
                    @for (n, line) in series.iter().enumerate() {
                        li { span class={ "swatch series-" (n % 6) } aria-hidden="true" {} (line.name) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_lands_on_round_figures() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2_400.0), 2_500.0);
        assert_eq!(short(12.5), "12.5");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(25_000.0), "25k");
    }

    #[test]
    fn labels_and_names_are_escaped() {
        let drawn = bars("c", "<b>", &["<x>".into()], &[3.0]).into_string();
        assert!(drawn.contains("&lt;b&gt;") && !drawn.contains("<b>"));
        let drawn = lines(
            "l",
            "t",
            &["a".into(), "b".into()],
            &[Series {
                name: "\"q\"",
                values: vec![1.0, 2.0],
            }],
        )
        .into_string();
        assert!(drawn.contains("&quot;q&quot;"));
        assert_eq!(drawn.matches("<circle").count(), 2);
    }
}
