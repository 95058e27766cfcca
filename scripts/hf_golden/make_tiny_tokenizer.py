#!/usr/bin/env python3
"""Writes crates/mtl-model/tests/fixtures/hf/bert/tokenizer.json: a BERT WordPiece tokenizer
(lower-casing BertNormalizer, BertPreTokenizer, `[CLS] $A [SEP]` post-processor) whose 100 ids
fit the tiny random BERT of make_hf_golden.py (`[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, as
its golden batches use), so that the fixture directory is a whole checkpoint for end-to-end
tests of `mtl train --pretrained`, `mtl embed` and `mtl export`. The other 96 entries are the
most frequent words of data/quickstart/train/seq.in (ties by first appearance) and a few
sub-word pieces.

Run from the repository root with tokenizers 0.23.3:
    .venv-golden/bin/python scripts/hf_golden/make_tiny_tokenizer.py
"""
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders

root = Path(__file__).resolve().parents[2]
words = (root / "data/quickstart/train/seq.in").read_text(encoding="utf-8").split()
counts = Counter(words)
order = {w: i for i, w in reversed(list(enumerate(words)))}
special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
pieces = ["##s", "##ing", "##ed", "##er"]
common = sorted(counts, key=lambda w: (-counts[w], order[w]))[: 100 - len(special) - len(pieces)]
vocab = {t: i for i, t in enumerate(special + common + pieces)}
assert len(vocab) == 100

tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
tok.normalizer = normalizers.BertNormalizer(lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
)
tok.decoder = decoders.WordPiece()
out = root / "crates/mtl-model/tests/fixtures/hf/bert/tokenizer.json"
tok.save(str(out))
print(out, len(vocab))
