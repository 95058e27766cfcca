//! Reads the SNIPS corpus from `../shared/data/snips` (outside the repository; the only test
//! that reads a file it did not write). Skipped with a loud message when the directory is
//! missing, except under `CI=true`, where a missing corpus fails the test.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use mtl_data::{
    Encoder, MultitaskBatcher, ReadOptions, TextEncoder, WordVocab, WordVocabConfig, plan_batches,
    read_splits,
};

fn snips_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/snips");
    if dir.is_dir() {
        return Some(dir);
    }
    let message = format!("SKIPPED: SNIPS corpus not found at {}", dir.display());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message} (CI=true)"
    );
    eprintln!("\n==== {message} ====\n");
    None
}

#[test]
fn snips_counts() -> mtl_data::Result<()> {
    let Some(dir) = snips_dir() else {
        return Ok(());
    };
    let start = Instant::now();
    let (splits, report) = read_splits(&dir, None, &ReadOptions::default())?;
    let read = start.elapsed();
    assert_eq!(splits.train.len(), 13_084);
    assert_eq!(splits.dev.as_ref().map(Vec::len), Some(700));
    assert_eq!(splits.test.as_ref().map(Vec::len), Some(700));
    assert_eq!(report.examples, 14_484);
    assert_eq!((report.skipped, report.repaired_sequences), (0, 0));
    assert!(
        report.warnings.is_empty(),
        "{:?}",
        &report.warnings[..3.min(report.warnings.len())]
    );
    assert!(
        splits
            .train
            .iter()
            .all(|e| e.label.is_some() && e.tags.is_some()),
        "every SNIPS example has a label and tags"
    );

    let vocab = WordVocab::build(&splits.train, &WordVocabConfig::default());
    let encoder = Encoder::build(&splits.train, TextEncoder::Word(vocab), 64)?;
    assert_eq!(encoder.labels.len(), 7);
    // 72 distinct slot tags in train (O + B-/I- of 39 slot types, not all with I-).
    assert_eq!(encoder.tags.len(), 72);
    assert_eq!(encoder.tags.name(0), Some("O"));

    let (encoded, encode_report) = encoder.encode_all(&splits.train)?;
    assert_eq!(encode_report.truncated, 0);
    let lengths: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
    let batcher = MultitaskBatcher::new(encoder.text.pad_id());
    let device = Device::flex();
    let mut rows = 0;
    for indices in plan_batches(&lengths, 32, None::<&mut rand::rngs::StdRng>, true) {
        let items: Vec<_> = indices.iter().map(|&i| &encoded[i]).collect();
        rows += batcher.batch(&items, &device).batch_size();
    }
    assert_eq!(rows, 13_084);
    eprintln!(
        "SNIPS: read all splits in {read:?}; read + encode + batch train in {:?}",
        start.elapsed()
    );

    let (_, dev_report) = encoder.encode_all(splits.dev.as_deref().unwrap_or_default())?;
    assert_eq!(dev_report.unknown_labels, 0);
    Ok(())
}
