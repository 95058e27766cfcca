//! Loading, tokenizing and batching all of SNIPS train (13,084 sentences), read in place from
//! `../shared/data/snips` (skipped, loudly, where it is absent).

use std::path::PathBuf;

use burn::tensor::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use mtl_data::{
    Encoded, Encoder, Format, MultitaskBatcher, ReadOptions, TextEncoder, WordVocab,
    WordVocabConfig, plan_batches, read_split,
};

fn snips() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/snips")
}

fn load_tokenize_batch(c: &mut Criterion) {
    let root = snips();
    if !root.exists() {
        eprintln!(
            "SKIPPED: {} not found; the SNIPS benchmark needs ../shared/data/snips",
            root.display()
        );
        return;
    }
    let device = Device::flex();
    c.bench_function("snips_train_read_encode_batch", |b| {
        b.iter(|| {
            let (examples, _) = read_split(
                &root,
                "train",
                Some(Format::JointBert),
                &ReadOptions::default(),
            )
            .expect("snips reads");
            let vocab = WordVocab::build(&examples, &WordVocabConfig::default());
            let encoder = Encoder::build(&examples, TextEncoder::Word(vocab), 64).expect("encoder");
            let (encoded, _) = encoder.encode_all(&examples).expect("encodes");
            let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
            let batcher = MultitaskBatcher::new(0);
            let mut tokens = 0;
            for batch in plan_batches(&lengths, 32, None::<&mut rand::rngs::StdRng>, true) {
                let items: Vec<&Encoded> = batch.iter().map(|&i| &encoded[i]).collect();
                tokens += batcher.batch(&items, &device).tokens.dims()[1];
            }
            tokens
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = load_tokenize_batch
}
criterion_main!(benches);
