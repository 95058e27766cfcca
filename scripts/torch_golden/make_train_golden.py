#!/usr/bin/env python3
"""Golden values for the training pieces (loss, grad clipping, AdamW, LR schedule),
produced with PyTorch 2.9.0 (CPU).  The JSON records ``torch.__version__``.

Run:

    /work/main/.venv-torch/bin/python scripts/torch_golden/make_train_golden.py

and it writes ``crates/mtl-train/tests/fixtures/torch/losses.json`` with:

* ``cross_entropy``: list of cases of
  ``F.cross_entropy(logits [N, C], targets [N], ignore_index=-100, reduction='mean')``
  (mean over the non-ignored targets).  Each case: name, logits (as given; the NER case
  is 3-D [B, S, C] and is flattened to [B*S, C] with targets [B, S] -> [B*S] before the
  call), targets, loss (null when PyTorch returns nan: all targets ignored -> 0/0),
  per_element ('none' reduction, 0.0 at ignored positions), n_valid.
* ``adamw_clipped``: the same three AdamW steps on fresh parameters and gradients, each
  after ``clip_grad_norm_([w, b], max_norm=1.0)`` (grads_in are the gradients before
  clipping); ``max_norm`` is recorded (null in ``adamw``).
* ``clip_grad_norm``: cases of ``torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)``
  (L2 norm over all tensors together).  PyTorch scales every grad by
  ``clip_coef = min(1, max_norm / (total_norm + 1e-6))``.  Each case: max_norm,
  grads_in [{shape, data}], total_norm (returned, i.e. the norm BEFORE clipping),
  clip_coef, grads_out.
* ``adamw``: torch.optim.AdamW with two param groups (weight [3, 4] with
  weight_decay 0.01, bias [4] with weight_decay 0.0), lr 1e-3, betas (0.9, 0.999),
  eps 1e-8, amsgrad False, maximize False.  Records initial params, the grads for each
  of the 3 steps, and the params after each step.  PyTorch's update (decoupled decay):
      p *= 1 - lr*wd
      m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
      p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
* ``lr_schedule``: transformers.get_linear_schedule_with_warmup, written out:
      factor(step) = step / max(1, warmup)                           if step < warmup
                   = max(0, (total - step) / max(1, total - warmup))  otherwise
      lr(step) = base_lr * factor(step)
  with warmup 3, total 10, base_lr 1e-3, for step 0..10 (step = number of optimizer
  steps already taken, i.e. lr used by the (step+1)-th update).  Cross-checked against
  torch.optim.lr_scheduler.LambdaLR.

Floats are the shortest decimal strings that round-trip the float32 value, except
lr_schedule values which are float64 (Python) numbers.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(
    os.path.join(HERE, "..", "..", "crates", "mtl-train", "tests", "fixtures", "torch", "losses.json")
)


def f32(x):
    x = np.float32(x)
    return float(str(x)) if np.isfinite(x) else None


def nested(t):
    a = t.detach().to(torch.float32).numpy()
    if a.ndim == 0:
        return f32(a)
    return np.vectorize(f32, otypes=[object])(a).tolist()


def tensor_entry(t):
    return {"shape": list(t.shape), "data": [f32(x) for x in t.detach().reshape(-1).numpy()]}


def cross_entropy_cases(gen):
    cases = []

    def add(name, logits, targets, note=None):
        flat_logits = logits.reshape(-1, logits.size(-1))
        flat_targets = targets.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=-100, reduction="mean")
        per = F.cross_entropy(flat_logits, flat_targets, ignore_index=-100, reduction="none")
        c = {
            "name": name,
            "logits_shape": list(logits.shape),
            "logits": nested(logits),
            "targets": targets.tolist(),
            "loss": f32(loss.item()),
            "per_element": nested(per),
            "n_valid": int((flat_targets != -100).sum()),
        }
        if note:
            c["note"] = note
        print(f"  CE {name}: loss={loss.item()!r}")
        cases.append(c)

    # 1. plain classification, no ignored targets
    add("cls_basic", torch.randn(4, 3, generator=gen) * 2.0, torch.tensor([0, 2, 1, 0]))
    # 2. some ignored targets
    add("with_ignore", torch.randn(6, 5, generator=gen) * 2.0,
        torch.tensor([1, -100, 4, 0, -100, 3]))
    # 3. NER shaped: [B=2, S=4, C=5] flattened; padding positions -100
    add("ner_3d_flattened", torch.randn(2, 4, 5, generator=gen) * 2.0,
        torch.tensor([[1, 0, 4, 2], [3, 2, -100, -100]]),
        note="logits [B,S,C] reshaped to [B*S,C], targets [B,S] to [B*S] before the call")
    # 4. all ignored -> PyTorch returns nan (0/0); recorded as null
    add("all_ignored", torch.randn(3, 5, generator=gen),
        torch.tensor([-100, -100, -100]),
        note="PyTorch returns nan for reduction='mean' when every target is ignored "
             "(sum 0 / count 0); loss recorded as null")
    # 5. large magnitude logits (+-50): stability of log-softmax
    add("large_magnitude",
        torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 49.0], [50.0, 50.0, -50.0],
                      [-50.0, -50.0, -50.0]]),
        torch.tensor([1, 2, 0, 2]),
        note="naive exp overflows/underflows; expected log-softmax with max subtraction")
    # 6. large magnitude with ignore and the ignored row holding the extreme value
    add("large_magnitude_ignore",
        torch.tensor([[1000.0, -1000.0, 0.0], [-50.0, 50.0, 0.0], [0.5, -0.5, 50.0]]),
        torch.tensor([-100, 0, 2]))
    return cases


def clip_cases(gen):
    cases = []
    for name, scale in [("clipped", 1.0), ("not_clipped", 0.05)]:
        shapes = [(3, 4), (4,), (2, 2, 3)]
        grads = [torch.randn(*s, generator=gen) * scale for s in shapes]
        params = [torch.nn.Parameter(torch.zeros(*s)) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        total_ref = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        # as PyTorch computes it: f32 tensor ops, clamp(max=1.0)
        coef = torch.clamp(1.0 / (total + 1e-6), max=1.0).item()
        for p, g in zip(params, grads):
            assert torch.allclose(p.grad, g * coef, atol=1e-7)
        print(f"  clip {name}: total_norm={total.item()!r} (f64 ref {total_ref!r}) coef={coef!r}")
        cases.append({
            "name": name,
            "max_norm": 1.0,
            "norm_type": 2.0,
            "grads_in": [tensor_entry(g) for g in grads],
            "total_norm": f32(total.item()),
            "clip_coef": f32(coef),
            "grads_out": [tensor_entry(p.grad) for p in params],
        })
    return cases


def adamw_case(gen, max_norm=None):
    """Three AdamW steps; with ``max_norm``, each after ``clip_grad_norm_(.., max_norm)``
    over both parameters, as a clipped training step does."""
    lr, betas, eps = 1e-3, (0.9, 0.999), 1e-8
    w = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
    b = torch.nn.Parameter(torch.randn(4, generator=gen))
    init = {"weight": tensor_entry(w), "bias": tensor_entry(b)}
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}],
        lr=lr, betas=betas, eps=eps, amsgrad=False, foreach=False,
    )
    steps = []
    # f64 mirror of the update rule, to confirm the documented formula
    ref = {"weight": w.detach().double().clone(), "bias": b.detach().double().clone()}
    m = {k: torch.zeros_like(v) for k, v in ref.items()}
    v2 = {k: torch.zeros_like(v) for k, v in ref.items()}
    wd = {"weight": 0.01, "bias": 0.0}
    for t in range(1, 4):
        gw = torch.randn(3, 4, generator=gen)
        gb = torch.randn(4, generator=gen)
        if t == 3:
            gw = gw * 10.0  # a larger step to vary magnitudes
        w.grad, b.grad = gw.clone(), gb.clone()
        coef = 1.0
        if max_norm is not None:
            total = torch.nn.utils.clip_grad_norm_([w, b], max_norm=max_norm)
            norm64 = math.sqrt(float((gw.double() ** 2).sum() + (gb.double() ** 2).sum()))
            coef = min(1.0, max_norm / (norm64 + 1e-6))
            print(f"  clipped adamw step {t}: total_norm {total.item():.6f}, coef {coef:.6f}")
        opt.step()
        for k, g in [("weight", gw.double() * coef), ("bias", gb.double() * coef)]:
            ref[k] *= 1 - lr * wd[k]
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            v2[k] = betas[1] * v2[k] + (1 - betas[1]) * g * g
            denom = v2[k].sqrt() / math.sqrt(1 - betas[1] ** t) + eps
            ref[k] -= lr / (1 - betas[0] ** t) * m[k] / denom
        err = max((w.detach().double() - ref["weight"]).abs().max().item(),
                  (b.detach().double() - ref["bias"]).abs().max().item())
        print(f"  adamw step {t}: max |torch - f64 formula| = {err:.3e}")
        assert err < 1e-6
        steps.append({
            "step": t,
            "grads": {"weight": tensor_entry(gw), "bias": tensor_entry(gb)},
            "params_after": {"weight": tensor_entry(w), "bias": tensor_entry(b)},
        })
    return {
        "lr": lr, "betas": list(betas), "eps": eps,
        "param_groups": [{"param": "weight", "weight_decay": 0.01},
                         {"param": "bias", "weight_decay": 0.0}],
        "amsgrad": False, "maximize": False,
        "max_norm": max_norm,
        "initial_params": init,
        "steps": steps,
    }


def lr_schedule():
    base_lr, warmup, total = 1e-3, 3, 10

    def factor(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    lrs = [base_lr * factor(s) for s in range(total + 1)]
    # cross-check with LambdaLR (what transformers wraps)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    torch_lrs = []
    for _ in range(total + 1):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(abs(a - b) < 1e-15 for a, b in zip(lrs, torch_lrs)), (lrs, torch_lrs)
    print("  lr schedule:", lrs)
    return {
        "kind": "linear_warmup_then_linear_decay (transformers.get_linear_schedule_with_warmup)",
        "base_lr": base_lr, "warmup_steps": warmup, "total_steps": total,
        "steps": list(range(total + 1)),
        "lr": lrs,
    }


def main():
    gen = torch.Generator().manual_seed(42)
    out = {
        "torch_version": torch.__version__,
        "cross_entropy": cross_entropy_cases(gen),
        "clip_grad_norm": clip_cases(gen),
        "adamw": adamw_case(gen),
        "adamw_clipped": adamw_case(gen, max_norm=1.0),
        "lr_schedule": lr_schedule(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), torch {torch.__version__}")


if __name__ == "__main__":
    main()
