//! The training curve, drawn as an SVG image into the run directory.

use std::path::Path;

use anyhow::{Result, anyhow};
use mtl::train::History;
use plotters::prelude::*;

/// A named, coloured line of (epoch, value) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Draws losses (left) and validation metrics (right) per epoch, with integer epoch ticks,
/// named axes and the best epoch marked by a dashed line on both.
pub fn training_curve(history: &History, best: Option<usize>, path: &Path) -> Result<()> {
    let epochs = &history.epochs;
    if epochs.is_empty() {
        return Ok(());
    }
    // Drawn in memory, then written atomically: a kill never leaves half an image.
    let mut svg = String::new();
    render(history, best, &mut svg)?;
    mtl::model::write_atomic(path, svg.as_bytes())
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

fn render(history: &History, best: Option<usize>, svg: &mut String) -> Result<()> {
    let epochs = &history.epochs;
    let root = SVGBackend::with_string(svg, (1000, 420)).into_drawing_area();
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
        ("train loss", BLUE, pick(&|e| e.train_loss)),
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
    draw(
        &left,
        "loss per epoch",
        "loss",
        last,
        0.0..max_loss,
        &losses,
        best,
    )?;
    draw(
        &right,
        "validation metrics",
        "score (0 to 1)",
        last,
        0.0..1.0,
        &metrics,
        best,
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Labels only the whole-number ticks of the epoch axis (`5`, not `5.0`; none at `2.5`).
fn epoch_tick(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 && *x >= 1.0 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

fn draw(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    last: f64,
    y: std::ops::Range<f64>,
    series: &[Series],
    best: Option<usize>,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the training curve: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..last, y.clone())
        .map_err(|e| err(&e))?;
    let epochs = (last - 0.5).round() as usize;
    chart
        .configure_mesh()
        .x_labels(epochs.clamp(1, 10) + 1)
        .x_label_formatter(&epoch_tick)
        .x_desc("epoch")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    if let Some(best) = best {
        let x = best as f64;
        let grey = RGBColor(90, 90, 90);
        // A dashed vertical line: short segments from the bottom to the top.
        let (lo, hi) = (y.start, y.end);
        let step = (hi - lo) / 40.0;
        let dashes = (0..40).step_by(2).map(move |i| {
            let a = lo + step * i as f64;
            PathElement::new(vec![(x, a), (x, (a + step).min(hi))], grey.stroke_width(1))
        });
        chart
            .draw_series(dashes)
            .map_err(|e| err(&e))?
            .label(format!("best epoch {best}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use mtl::train::EpochRecord;

    fn record(epoch: usize, score: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: Some(1.0 / epoch as f64),
            train_loss_classification: None,
            train_loss_ner: None,
            valid_loss_classification: score.map(|s| 1.0 - s),
            valid_loss_ner: None,
            valid_accuracy: score,
            valid_entity_f1: score,
            valid_token_accuracy: score,
            valid_frame_accuracy: score,
            score,
            lr: 1e-3,
            step: epoch as u64 * 10,
            steps_per_task: [0, 0, 0],
            seconds: 1.0,
            valid: None,
        }
    }

    #[test]
    fn curve_has_integer_ticks_axis_names_and_the_best_epoch() -> Result<()> {
        let scores = [0.2, 0.5, 0.9, 0.7, 0.8, 0.6, 0.6];
        let history = History {
            epochs: (1..=7).map(|e| record(e, Some(scores[e - 1]))).collect(),
        };
        let path = std::env::temp_dir().join(format!("mtl-curve-{}.svg", std::process::id()));
        training_curve(&history, Some(3), &path)?;
        let svg = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        // The contents of the `<text>` elements.
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|chunk| chunk.rsplit_once("<text").map(|(_, t)| t))
            .filter_map(|t| t.split_once('>').map(|(_, body)| body.trim()))
            .collect();
        for text in ["epoch", "loss", "score (0 to 1)", "best epoch 3", "1", "7"] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        // Tick labels are whole epochs.
        for bad in ["1.5", "2.5", "5.0", "7.0"] {
            assert!(!texts.contains(&bad), "{bad} in {texts:?}");
        }
        Ok(())
    }
}
