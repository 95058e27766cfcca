//! The training curve, drawn as an SVG image into the run directory.

use std::path::Path;

use anyhow::{Result, anyhow};
use mtl::train::History;
use plotters::prelude::*;

/// A named, coloured line of (epoch, value) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Draws losses (left) and validation metrics (right) per epoch.
pub fn training_curve(history: &History, path: &Path) -> Result<()> {
    let epochs = &history.epochs;
    if epochs.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(500);
    let last = epochs.len() as f64 + 0.5;
    let pick = |f: &dyn Fn(&mtl::train::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let losses: Vec<Series> = vec![
        ("train loss", BLUE, pick(&|e| Some(e.train_loss))),
        (
            "valid loss (classification)",
            RED,
            pick(&|e| e.valid_loss_classification),
        ),
        ("valid loss (ner)", MAGENTA, pick(&|e| e.valid_loss_ner)),
    ];
    let metrics: Vec<Series> = vec![
        ("intent accuracy", RED, pick(&|e| e.valid_accuracy)),
        ("entity F1", MAGENTA, pick(&|e| e.valid_entity_f1)),
        ("frame accuracy", GREEN, pick(&|e| e.valid_frame_accuracy)),
    ];
    let max_loss = losses
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    draw(&left, "loss per epoch", last, 0.0..max_loss, &losses)?;
    draw(&right, "validation metrics", last, 0.0..1.0, &metrics)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn draw(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    last: f64,
    y: std::ops::Range<f64>,
    series: &[Series],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the training curve: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0.5..last, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, color, points) in series {
        if points.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}
