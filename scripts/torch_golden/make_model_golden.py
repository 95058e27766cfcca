#!/usr/bin/env python3
"""Golden-value fixture for the multitask Transformer, produced with PyTorch 2.9.0 (CPU).

Generated with torch==2.9.0 (the JSON records ``torch.__version__``).  Run:

    /work/main/.venv-torch/bin/python scripts/torch_golden/make_model_golden.py

and it writes ``crates/mtl-model/tests/fixtures/golden_small.json``.

Architecture: exactly the one in ``/work/shared/bench/torch_ref.py`` (copied below so
this script is self-contained):

* ``emb``  : nn.Embedding(vocab, d_model, padding_idx=0); output scaled by sqrt(d_model)
* ``pos``  : sinusoidal positional encoding buffer ``pe`` [1, 512, d_model]
             (pe[:, 0::2] = sin(pos * div), pe[:, 1::2] = cos(pos * div),
             div = exp(arange(0, d, 2) * -ln(10000)/d)); added after scaling
* ``enc``  : nn.TransformerEncoder of nn.TransformerEncoderLayer(d_model, nhead, ff,
             dropout, batch_first=True) -> post-LN (norm_first=False), ReLU,
             layer_norm_eps 1e-5, enable_nested_tensor=False, src_key_padding_mask
             with True = padding
* ``cls``  : nn.Sequential(Dropout, Linear(d_model, num_classes)) on the masked mean of
             the encoder output over non-padding tokens (sum / clamp(count, min=1))
* ``ner``  : nn.Sequential(Dropout, Linear(d_model, num_tags)) on every token

Small config: vocab 50, d_model 32, nhead 2, num_layers 2, dim_feedforward 64,
num_classes 3, num_ner_tags 5, dropout 0.1 (inactive: eval mode), eps 1e-5.

After ``torch.manual_seed(0)`` and construction, every parameter is re-initialised
with normal(0, 0.2) (so LayerNorm weights/biases and all biases are non-trivial),
except that row 0 (padding_idx) of ``emb.weight`` is set back to zeros, as
nn.Embedding(padding_idx=0) initialises it and as training keeps it (its gradient is
always zero).  The forward pass runs under torch.no_grad() in eval mode.

State-dict names (PyTorch layout: nn.Linear weight is [out_features, in_features],
y = x @ W^T + b) and their meaning for a reimplementation:

  emb.weight                               [vocab, d_model]   embedding table
  enc.layers.{i}.self_attn.in_proj_weight  [3*d_model, d_model]  rows 0..d = W_q,
                                           d..2d = W_k, 2d..3d = W_v (each [out, in])
  enc.layers.{i}.self_attn.in_proj_bias    [3*d_model]        b_q | b_k | b_v
  enc.layers.{i}.self_attn.out_proj.weight [d_model, d_model] output projection
  enc.layers.{i}.self_attn.out_proj.bias   [d_model]
  enc.layers.{i}.linear1.weight            [ff, d_model]      FFN first layer
  enc.layers.{i}.linear1.bias              [ff]
  enc.layers.{i}.linear2.weight            [d_model, ff]      FFN second layer
  enc.layers.{i}.linear2.bias              [d_model]
  enc.layers.{i}.norm1.weight / .bias      [d_model]          LN after attention residual
  enc.layers.{i}.norm2.weight / .bias      [d_model]          LN after FFN residual
  cls.1.weight                             [num_classes, d_model]  (cls.0 is Dropout)
  cls.1.bias                               [num_classes]
  ner.1.weight                             [num_tags, d_model]     (ner.0 is Dropout)
  ner.1.bias                               [num_tags]

Heads split: head h uses features h*d_head..(h+1)*d_head of q/k/v (d_head = d/nhead),
scores scaled by 1/sqrt(d_head), padded keys get -inf before softmax.
Post-LN layer: x = norm1(x + SA(x)); x = norm2(x + linear2(relu(linear1(x)))).

The ``pos.pe`` buffer is not in ``weights``; ``positional_encoding_first_rows`` holds
pe[0, :seq_len] for checking the sinusoid computation.

Output JSON keys: torch_version, config, weights {name: {shape, data (flat row-major)}},
positional_encoding_first_rows [S][d], tokens [B][S], padding_mask [B][S] (True = pad),
lengths [B], encoder_out [B][S][d], pooled [B][d], cls_logits [B][C],
ner_logits [B][S][T] (every position, padded ones included),
fastpath_vs_slowpath_max_abs_diff (diagnostic).

Floats are written as the shortest decimal string that round-trips the float32 value
(parse them as f32).
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(
    os.path.join(HERE, "..", "..", "crates", "mtl-model", "tests", "fixtures", "golden_small.json")
)

CFG = dict(
    vocab_size=50,
    d_model=32,
    nhead=2,
    num_layers=2,
    dim_feedforward=64,
    num_classes=3,
    num_ner_tags=5,
    max_seq_length=512,
    layer_norm_eps=1e-5,
)
DROPOUT = 0.1
INIT_STD = 0.2
BATCH, SEQ = 3, 7
LENGTHS = [7, 4, 2]
PAD_ID = 0


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=512):
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        pos = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x):
        return x + self.pe[:, : x.size(1)]


class MultitaskTransformer(nn.Module):
    def __init__(self, vocab, d_model, nhead, layers, ff, num_classes=3, num_tags=5,
                 dropout=0.1, layer_norm_eps=1e-5, max_len=512):
        super().__init__()
        self.emb = nn.Embedding(vocab, d_model, padding_idx=0)
        self.pos = PositionalEncoding(d_model, max_len)
        layer = nn.TransformerEncoderLayer(d_model, nhead, ff, dropout, batch_first=True,
                                           layer_norm_eps=layer_norm_eps)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.cls = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_classes))
        self.ner = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_tags))
        self.d_model = d_model

    def encode(self, src, pad_mask):
        x = self.pos(self.emb(src) * math.sqrt(self.d_model))
        return self.enc(x, src_key_padding_mask=pad_mask)

    def pool(self, h, pad_mask):
        keep = (~pad_mask).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def forward_all(self, src, pad_mask):
        h = self.encode(src, pad_mask)
        pooled = self.pool(h, pad_mask)
        return h, pooled, self.cls(pooled), self.ner(h)


def f32_list(t):
    """Flat list of python floats, each the shortest repr round-tripping the f32."""
    a = t.detach().to(torch.float32).contiguous().numpy().reshape(-1)
    return [float(str(np.float32(x))) if np.isfinite(x) else None for x in a]


def nested(t):
    """Nested lists of shortest-repr floats with the tensor's shape."""
    flat = f32_list(t)
    shape = list(t.shape)
    arr = np.array(flat, dtype=object).reshape(shape) if shape else flat[0]
    return arr.tolist()


def main():
    torch.manual_seed(0)
    model = MultitaskTransformer(
        CFG["vocab_size"], CFG["d_model"], CFG["nhead"], CFG["num_layers"], CFG["dim_feedforward"],
        CFG["num_classes"], CFG["num_ner_tags"], DROPOUT, CFG["layer_norm_eps"], CFG["max_seq_length"],
    )
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(0.0, INIT_STD)
        model.emb.weight[PAD_ID].zero_()
    model.eval()

    # Input batch: ids in 1..49 (vocab 50), padding at the end with id 0.
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.randint(1, CFG["vocab_size"], (BATCH, SEQ), generator=gen)
    lengths = torch.tensor(LENGTHS)
    pad_mask = torch.arange(SEQ).unsqueeze(0) >= lengths.unsqueeze(1)  # True = pad
    tokens[pad_mask] = PAD_ID

    with torch.no_grad():
        enc_out, pooled, cls_logits, ner_logits = model.forward_all(tokens, pad_mask)
        # Cross-check: the same computation with the MHA / encoder-layer fast path off
        # (the eval+no_grad path may dispatch to torch._transformer_encoder_layer_fwd).
        torch.backends.mha.set_fastpath_enabled(False)
        enc2, pooled2, cls2, ner2 = model.forward_all(tokens, pad_mask)
        torch.backends.mha.set_fastpath_enabled(True)
    diffs = {
        "encoder_out": (enc_out - enc2).abs().max().item(),
        "pooled": (pooled - pooled2).abs().max().item(),
        "cls_logits": (cls_logits - cls2).abs().max().item(),
        "ner_logits": (ner_logits - ner2).abs().max().item(),
    }
    print("fast path vs slow path max abs diff:", diffs)

    for name, t in [("encoder_out", enc_out), ("pooled", pooled), ("cls_logits", cls_logits),
                    ("ner_logits", ner_logits)]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    print("all outputs finite, padded positions included:",
          bool(torch.isfinite(enc_out[pad_mask]).all() and torch.isfinite(ner_logits[pad_mask]).all()))

    # Independent check of the masked mean.
    for b, L in enumerate(LENGTHS):
        ref = enc_out[b, :L].mean(0)
        assert torch.allclose(ref, pooled[b], atol=1e-6), "masked mean mismatch"

    weights = {}
    for name, t in model.state_dict().items():
        if name == "pos.pe":
            continue
        weights[name] = {"shape": list(t.shape), "data": f32_list(t)}
    param_names = [n for n, _ in model.named_parameters()]
    assert sorted(param_names) == sorted(weights), (param_names, list(weights))

    out = {
        "torch_version": torch.__version__,
        "config": CFG,
        "init": f"torch.manual_seed(0); all params ~ normal(0, {INIT_STD}); emb.weight[0] = 0",
        "weights": weights,
        "positional_encoding_first_rows": nested(model.pos.pe[0, :SEQ]),
        "tokens": tokens.tolist(),
        "padding_mask": pad_mask.tolist(),
        "lengths": LENGTHS,
        "encoder_out": nested(enc_out),
        "pooled": nested(pooled),
        "cls_logits": nested(cls_logits),
        "ner_logits": nested(ner_logits),
        "fastpath_vs_slowpath_max_abs_diff": diffs,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), torch {torch.__version__}")
    for name, w in weights.items():
        print(f"  {name:45s} {w['shape']}")


if __name__ == "__main__":
    main()
