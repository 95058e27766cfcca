#!/usr/bin/env python3
"""Golden-value fixtures for two variants of the multitask Transformer beyond the seed's,
produced with PyTorch 2.9.0 (CPU).  Run:

    /work/main/.venv-golden/bin/python scripts/torch_golden/make_variant_golden.py

and it writes, into ``crates/mtl-model/tests/fixtures/``:

* ``golden_prenorm_gelu_learned.json``: pre-norm layers (``norm_first=True``) with exact
  (erf) GELU, a final LayerNorm after the last layer (``TransformerEncoder(norm=...)``), and
  learned positions (``nn.Embedding(max_len, d_model)``, position ``i`` for token ``i``, added
  after the token embedding is scaled by sqrt(d_model)); masked-mean pooling.
* ``golden_maxpool.json``: the seed's post-norm ReLU encoder with sinusoidal positions, and
  max pooling: the element-wise maximum of the encoder output over the real tokens
  (padded positions masked with -inf).

Everything else is as ``make_model_golden.py`` (same sizes, same initialisation: after
``torch.manual_seed(0)`` every parameter ~ normal(0, 0.2), padding row of the token
embedding zeroed; the same input batch of lengths 7, 4, 2).  Extra state-dict names:

  pos_emb.weight            [max_len, d_model]  learned positions (prenorm variant)
  enc.norm.weight / .bias   [d_model]           final LayerNorm (prenorm variant)

The JSON keys are those of ``golden_small.json`` plus ``variant``.
"""
import json
import math
import os

import torch
import torch.nn as nn

from make_model_golden import (
    BATCH, CFG, DROPOUT, INIT_STD, LENGTHS, PAD_ID, SEQ, PositionalEncoding, f32_list, nested,
)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "crates", "mtl-model", "tests", "fixtures"))
MAX_LEN = 16  # max_seq_length of the variants (learned positions need a table this long)


class Variant(nn.Module):
    def __init__(self, prenorm_gelu_learned, max_pool):
        super().__init__()
        d, ff = CFG["d_model"], CFG["dim_feedforward"]
        self.emb = nn.Embedding(CFG["vocab_size"], d, padding_idx=PAD_ID)
        self.learned = prenorm_gelu_learned
        if prenorm_gelu_learned:
            self.pos_emb = nn.Embedding(MAX_LEN, d)
        else:
            self.pos = PositionalEncoding(d, MAX_LEN)
        layer = nn.TransformerEncoderLayer(
            d, CFG["nhead"], ff, DROPOUT, batch_first=True, layer_norm_eps=CFG["layer_norm_eps"],
            activation="gelu" if prenorm_gelu_learned else "relu", norm_first=prenorm_gelu_learned,
        )
        norm = nn.LayerNorm(d, eps=CFG["layer_norm_eps"]) if prenorm_gelu_learned else None
        self.enc = nn.TransformerEncoder(layer, CFG["num_layers"], norm=norm, enable_nested_tensor=False)
        self.cls = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(d, CFG["num_classes"]))
        self.ner = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(d, CFG["num_ner_tags"]))
        self.max_pool = max_pool
        self.d_model = d

    def forward_all(self, src, pad_mask):
        x = self.emb(src) * math.sqrt(self.d_model)
        if self.learned:
            x = x + self.pos_emb(torch.arange(src.size(1)).unsqueeze(0))
        else:
            x = self.pos(x)
        h = self.enc(x, src_key_padding_mask=pad_mask)
        if self.max_pool:
            pooled = h.masked_fill(pad_mask.unsqueeze(-1), float("-inf")).max(1).values
        else:
            keep = (~pad_mask).unsqueeze(-1).float()
            pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return h, pooled, self.cls(pooled), self.ner(h)


def make(name, prenorm_gelu_learned, max_pool):
    torch.manual_seed(0)
    model = Variant(prenorm_gelu_learned, max_pool)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(0.0, INIT_STD)
        model.emb.weight[PAD_ID].zero_()
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.randint(1, CFG["vocab_size"], (BATCH, SEQ), generator=gen)
    lengths = torch.tensor(LENGTHS)
    pad_mask = torch.arange(SEQ).unsqueeze(0) >= lengths.unsqueeze(1)
    tokens[pad_mask] = PAD_ID
    with torch.no_grad():
        torch.backends.mha.set_fastpath_enabled(False)
        enc_out, pooled, cls_logits, ner_logits = model.forward_all(tokens, pad_mask)
        torch.backends.mha.set_fastpath_enabled(True)
    for b, length in enumerate(LENGTHS):
        real = enc_out[b, :length]
        ref = real.max(0).values if max_pool else real.mean(0)
        assert torch.allclose(ref, pooled[b], atol=1e-6), "pooling mismatch"
    weights = {}
    for key, t in model.state_dict().items():
        if key == "pos.pe":
            continue
        weights[key] = {"shape": list(t.shape), "data": f32_list(t)}
    config = dict(CFG, max_seq_length=MAX_LEN)
    out = {
        "torch_version": torch.__version__,
        "variant": {
            "norm": "pre" if prenorm_gelu_learned else "post",
            "activation": "gelu" if prenorm_gelu_learned else "relu",
            "positional_encoding": "learned" if prenorm_gelu_learned else "sinusoidal",
            "pooling": "max" if max_pool else "mean",
        },
        "config": config,
        "init": f"torch.manual_seed(0); all params ~ normal(0, {INIT_STD}); emb.weight[0] = 0",
        "weights": weights,
        "tokens": tokens.tolist(),
        "padding_mask": pad_mask.tolist(),
        "lengths": LENGTHS,
        "encoder_out": nested(enc_out),
        "pooled": nested(pooled),
        "cls_logits": nested(cls_logits),
        "ner_logits": nested(ner_logits),
    }
    path = os.path.join(FIXTURES, name)
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes), torch {torch.__version__}")


def main():
    make("golden_prenorm_gelu_learned.json", prenorm_gelu_learned=True, max_pool=False)
    make("golden_maxpool.json", prenorm_gelu_learned=False, max_pool=True)


if __name__ == "__main__":
    main()
