#!/usr/bin/env python3
"""Golden fixtures for mtl-train's metrics module (crates/mtl-train/src/metrics/).

Produced with (the versions are also written into every fixture file):
    Python        3.11.7
    seqeval       1.2.2
    scikit-learn  1.9.1
    numpy         2.4.6

Set up and run from the repository root:
    python3 -m venv /tmp/mvenv
    /tmp/mvenv/bin/pip install seqeval==1.2.2 scikit-learn numpy
    /tmp/mvenv/bin/python scripts/metrics_golden/make_fixtures.py

It writes, into crates/mtl-train/tests/fixtures/metrics/:
    seqeval_extract.json          entities of single tag sequences: seqeval's get_entities
                                  (default mode) and seqeval.scheme.Tokens(...).entities
                                  (strict IOB2 / IOBES; null where seqeval raises)
    seqeval_reports_random.json   entity-level reports of random, often ill-formed corpora
    seqeval_reports_edge.json     hand-written edge cases
    classification.json           scikit-learn classification scores of random label lists

A report is recorded for three configurations: "default" (mode=None), "strict_iob2"
(mode="strict", scheme=IOB2) and "strict_iobes" (mode="strict", scheme=IOBES); where seqeval
raises, {"error": "..."} is recorded instead. Averages are [precision, recall, f1, support];
null stands for a NaN (the macro average without any entity type) or a ZeroDivisionError
(accuracy of a corpus without tokens); the Rust side returns 0.0 for those.

Everything is seeded: rerunning the script rewrites identical files.
"""

import json
import math
import random
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import sklearn
from seqeval.metrics import accuracy_score as seq_accuracy
from seqeval.metrics import classification_report as seq_report
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, IOBES, Entities, Tokens
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.metrics import precision_recall_fscore_support

warnings.simplefilter("ignore")

SEQEVAL_VERSION = version("seqeval")
assert SEQEVAL_VERSION == "1.2.2", f"fixtures are defined against seqeval 1.2.2, got {SEQEVAL_VERSION}"

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "mtl-train" / "tests" / "fixtures" / "metrics"

VERSIONS = {
    "python": sys.version.split()[0],
    "seqeval": SEQEVAL_VERSION,
    "scikit-learn": sklearn.__version__,
    "numpy": np.__version__,
}

CONFIGS = {
    "default": None,
    "strict_iob2": IOB2,
    "strict_iobes": IOBES,
}

TYPES = ["PER", "LOC", "ORG"]
IOB2_VOCAB = ["O"] + [f"{p}-{t}" for p in "BI" for t in TYPES]
IOBES_VOCAB = ["O"] + [f"{p}-{t}" for p in "BIES" for t in TYPES]
# Tags that conlleval's rules read in odd ways: no prefix, no type, unknown prefixes, '.'.
ODD_TAGS = ["B", "I", "E", "S", "X", "PER", "O-LOC", "B-", "I-PER-X", "-", ".", ".LOC",
            "U-PER", "L-LOC", "X-PER", "BLOC"]


def num(x):
    """A float for JSON, None for NaN."""
    x = float(x)
    return None if math.isnan(x) else x


def avg(entry):
    return [num(entry["precision"]), num(entry["recall"]), num(entry["f1-score"]),
            int(entry["support"])]


def entity_counts(gold, pred, scheme):
    """(predicted, gold, correct) entity counts, from seqeval's own extraction."""
    if scheme is None:
        g = set(get_entities(gold))
        p = set(get_entities(pred))
    else:
        g = {e.to_tuple() for ents in Entities(gold, scheme).entities for e in ents}
        p = {e.to_tuple() for ents in Entities(pred, scheme).entities for e in ents}
    return len(p), len(g), len(p & g)


def seqeval_report(gold, pred, scheme):
    kwargs = {} if scheme is None else {"mode": "strict", "scheme": scheme}
    try:
        rep = seq_report(gold, pred, output_dict=True, **kwargs)
        precision = seq_precision(gold, pred, **kwargs)
        recall = seq_recall(gold, pred, **kwargs)
        f1 = seq_f1(gold, pred, **kwargs)
    except (ValueError, KeyError, IndexError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        accuracy = float(seq_accuracy(gold, pred))
    except ZeroDivisionError:
        accuracy = None
    predicted, gold_n, correct = entity_counts(gold, pred, scheme)
    per_type = {k: avg(v) for k, v in rep.items() if not k.endswith(" avg")}
    assert gold_n == rep["micro avg"]["support"]
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": accuracy,
        "per_type": per_type,
        "micro": avg(rep["micro avg"]),
        "macro_avg": avg(rep["macro avg"]),
        "weighted": avg(rep["weighted avg"]),
        "predicted": predicted,
        "gold": gold_n,
        "correct": correct,
    }


def report_case(name, gold, pred):
    return {
        "name": name,
        "gold": gold,
        "pred": pred,
        "expected": {key: seqeval_report(gold, pred, scheme) for key, scheme in CONFIGS.items()},
    }


def strict_entities(tags, scheme):
    try:
        return [[e.tag, e.start, e.end] for e in Tokens(tags, scheme).entities]
    except (ValueError, KeyError, IndexError):
        return None


def extract_case(tags):
    return {
        "tags": tags,
        # get_entities gives an inclusive end; the Rust API uses an exclusive one.
        "default": [[t, s, e + 1] for t, s, e in get_entities(tags)],
        "strict_iob2": strict_entities(tags, IOB2),
        "strict_iobes": strict_entities(tags, IOBES),
    }


# ---------------------------------------------------------------------------------------
# Random tag sequences
# ---------------------------------------------------------------------------------------

def well_formed(rng, n, scheme):
    """A well-formed sequence of n tags in the scheme."""
    tags = []
    while len(tags) < n:
        if rng.random() < 0.45:
            tags.append("O")
            continue
        t = rng.choice(TYPES)
        length = min(rng.choice([1, 1, 2, 2, 3, 4]), n - len(tags))
        if scheme == "iobes":
            tags += [f"S-{t}"] if length == 1 else \
                [f"B-{t}"] + [f"I-{t}"] * (length - 2) + [f"E-{t}"]
        else:
            tags += [f"B-{t}"] + [f"I-{t}"] * (length - 1)
    return tags


def corrupt(rng, tags, vocab, rate):
    """Replace tags at the given rate with a random tag from vocab (ill-formed sequences:
    I- after O, I-X after B-Y, E-/S- misuse, lone I-, ...)."""
    out = []
    for tag in tags:
        r = rng.random()
        if r < rate:
            out.append(rng.choice(vocab))
        elif r < rate * 1.5 and tag != "O":
            # Keep the prefix, change the type.
            out.append(tag[:2] + rng.choice(TYPES))
        elif r < rate * 2 and tag.startswith("B-"):
            # Turn a begin into an inside: the classic "I- after O".
            out.append("I-" + tag[2:])
        else:
            out.append(tag)
    return out


def random_corpus(rng, family):
    scheme = "iobes" if family == "iobes" else "iob2"
    vocab = {"iob2": IOB2_VOCAB, "iobes": IOBES_VOCAB,
             "odd": IOB2_VOCAB + IOBES_VOCAB[7:] + ODD_TAGS}[family]
    n_sentences = rng.randint(1, 6)
    gold, pred = [], []
    for _ in range(n_sentences):
        n = rng.choice([0, 1, 2, 3, 5, 8, 8, 10, 12])
        g = well_formed(rng, n, scheme)
        if rng.random() < 0.3:
            g = corrupt(rng, g, vocab, 0.15)
        p = corrupt(rng, g, vocab, rng.choice([0.0, 0.1, 0.25, 0.5]))
        gold.append(g)
        pred.append(p)
    return gold, pred


def random_reports(rng):
    cases = []
    for family, count in [("iob2", 35), ("iobes", 35), ("odd", 18)]:
        for i in range(count):
            gold, pred = random_corpus(rng, family)
            cases.append(report_case(f"{family}-{i}", gold, pred))
    return cases


def random_extractions(rng):
    cases = []
    for family, count in [("iob2", 60), ("iobes", 60), ("odd", 50)]:
        vocab = {"iob2": IOB2_VOCAB, "iobes": IOBES_VOCAB,
                 "odd": IOB2_VOCAB + IOBES_VOCAB[7:] + ODD_TAGS}[family]
        for _ in range(count):
            n = rng.randint(0, 9)
            if rng.random() < 0.5:
                tags = [rng.choice(vocab) for _ in range(n)]
            else:
                tags = corrupt(rng, well_formed(rng, n, "iobes" if family == "iobes" else "iob2"),
                               vocab, 0.2)
            cases.append(extract_case(tags))
    return cases


# ---------------------------------------------------------------------------------------
# Hand-written edge cases
# ---------------------------------------------------------------------------------------

EDGE_CASES = [
    # (An empty corpus, [] vs [], makes seqeval raise TypeError in check_consistent_length;
    # the Rust side returns an all-zero report and tests that on its own.)
    ("one empty sentence", [[]], [[]]),
    ("empty sentences around entities", [[], ["B-PER", "O"], []], [[], ["B-PER", "O"], []]),
    ("no entities at all", [["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    ("all-O prediction", [["B-PER", "I-PER", "O"], ["B-LOC"]], [["O", "O", "O"], ["O"]]),
    ("entities only predicted", [["O", "O", "O"]], [["B-PER", "O", "B-LOC"]]),
    ("seqeval docstring", [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
     [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]),
    ("seqeval f1 docstring", [["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"], ["B-PER", "I-PER", "O"]],
     [["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]),
    ("I- after O", [["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]]),
    ("lone I- at start", [["B-PER"]], [["I-PER"]]),
    ("I-X after B-Y", [["B-PER", "I-PER", "O"]], [["B-PER", "I-LOC", "O"]]),
    ("I-X after I-Y", [["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "I-LOC"]]),
    ("B- B- same type", [["B-PER", "B-PER"]], [["B-PER", "I-PER"]]),
    ("IOBES well formed", [["B-PER", "I-PER", "E-PER", "S-LOC", "O"]], [["B-PER", "I-PER", "E-PER", "S-LOC", "O"]]),
    ("IOBES missing E", [["B-PER", "I-PER", "E-PER", "O"]], [["B-PER", "I-PER", "I-PER", "O"]]),
    ("IOBES E after O", [["B-PER", "E-PER"]], [["O", "E-PER"]]),
    ("IOBES S inside", [["B-PER", "I-PER", "E-PER"]], [["B-PER", "S-PER", "E-PER"]]),
    ("IOBES E E", [["B-LOC", "E-LOC", "O"]], [["B-LOC", "E-LOC", "E-LOC"]]),
    ("IOBES S then I", [["S-ORG", "O"]], [["S-ORG", "I-ORG"]]),
    ("E- and S- in IOB2 data", [["B-PER", "I-PER", "O"]], [["B-PER", "E-PER", "S-PER"]]),
    ("entity at sentence end", [["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]]),
    ("I- continues across sentences?", [["B-PER", "I-PER"], ["I-PER"]], [["B-PER", "I-PER"], ["I-PER"]]),
    ("tags without prefix", [["PER", "PER", "O"]], [["PER", "O", "O"]]),
    ("bare prefixes", [["B", "I", "O", "I"]], [["B", "O", "O", "B"]]),
    ("untyped tag runs across sentences", [["X"], ["X", "B-PER"]], [["X"], ["X", "B-PER"]]),
    ("untyped tag at end vs typed", [["O", "X"], ["X", "O", "B-LOC"]], [["O", "B-X"], ["O", "O", "B-LOC"]]),
    ("dot tags", [[".", "B-PER", ".", "I-PER"]], [[".LOC", "B-PER", "I-PER", "I-PER"]]),
    ("O with a type", [["O-PER", "B-PER", "O-PER"]], [["B-PER", "I-PER", "O"]]),
    ("types with dashes", [["B-PER-X", "I-PER-X", "B-A-B"]], [["B-PER-X", "I-PER-Y", "B-A-B"]]),
    ("dash-only types", [["B-", "I-", "O"]], [["B--", "I---", "O"]]),
    ("BIO without dash", [["BPER", "IPER", "O"]], [["B-PER", "I-PER", "O"]]),
    ("unicode types", [["B-ÜBER", "I-ÜBER", "B-地名"]], [["B-ÜBER", "I-ÜBER", "I-地名"]]),
    ("unicode prefix", [["Ä-PER", "O"]], [["O", "O"]]),
    ("unknown prefixes U- L-", [["B-PER", "I-PER"]], [["U-PER", "L-PER"]]),
    ("same span, other type", [["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]]),
    ("type case matters", [["B-per", "B-PER"]], [["B-PER", "B-per"]]),
    ("many types, one right", [["B-A", "B-B", "B-C", "B-D", "O"]], [["B-A", "O", "B-C", "O", "B-E"]]),
]


def edge_reports():
    return [report_case(name, gold, pred) for name, gold, pred in EDGE_CASES]


# ---------------------------------------------------------------------------------------
# Classification (scikit-learn)
# ---------------------------------------------------------------------------------------

INTENTS = ["book_flight", "cancel", "greet", "weather", "smalltalk", "Play_Music", "ÄÖ", "a"]


def class_case(name, gold, pred):
    labels = sorted(set(gold) | set(pred))
    p, r, f, s = precision_recall_fscore_support(gold, pred, average=None, labels=labels,
                                                 zero_division=0)
    default_p, _, _, _ = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    assert len(default_p) == len(labels)  # sklearn's default labels are the sorted union
    return {
        "name": name,
        "gold": gold,
        "pred": pred,
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, average="weighted", zero_division=0)),
        "labels": labels,
        "precision": [float(x) for x in p],
        "recall": [float(x) for x in r],
        "f1": [float(x) for x in f],
        "support": [int(x) for x in s],
        "confusion": confusion_matrix(gold, pred, labels=labels).tolist(),
    }


def classification_cases(rng):
    cases = [
        class_case("single example right", ["greet"], ["greet"]),
        class_case("single example wrong", ["greet"], ["cancel"]),
        class_case("one class everywhere", ["a"] * 5, ["a"] * 5),
        class_case("predicted-only label", ["a", "a", "b"], ["a", "c", "c"]),
        class_case("never predicted gold label", ["a", "b", "c", "c"], ["a", "a", "a", "a"]),
        class_case("all wrong", ["a", "b"], ["b", "a"]),
        class_case("case and unicode order", ["Play_Music", "a", "ÄÖ", "b"], ["a", "Play_Music", "ÄÖ", "B"]),
    ]
    for i in range(25):
        k = rng.randint(2, len(INTENTS))
        pool = rng.sample(INTENTS, k)
        n = rng.choice([3, 7, 15, 30, 60])
        weights = [rng.random() + 0.05 for _ in pool]
        gold = rng.choices(pool, weights=weights, k=n)
        noise = rng.choice([0.0, 0.1, 0.3, 0.6, 1.0])
        pred_pool = pool + (["unseen"] if rng.random() < 0.3 else [])
        pred = [rng.choice(pred_pool) if rng.random() < noise else g for g in gold]
        cases.append(class_case(f"random-{i}", gold, pred))
    return cases


# ---------------------------------------------------------------------------------------

def write(name, cases, what):
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/metrics_golden/make_fixtures.py",
        "what": what,
        "versions": VERSIONS,
        "cases": cases,
    }
    path = OUT / name
    # One case per line keeps the files small and their diffs readable.
    body = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases)
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=False)[:-1]
    path.write_text(f'{head}, "cases": [\n{body}\n]}}\n', encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))  # sanity check
    print(f"{path.relative_to(ROOT)}: {len(cases)} cases, {path.stat().st_size} bytes")


def main():
    rng = random.Random(20250611)
    write("seqeval_extract.json", random_extractions(rng),
          "seqeval get_entities / scheme.Tokens(...).entities on single sentences; end is exclusive")
    write("seqeval_reports_random.json", random_reports(rng),
          "seqeval classification_report + precision/recall/f1/accuracy_score on random corpora")
    write("seqeval_reports_edge.json", edge_reports(),
          "seqeval classification_report + precision/recall/f1/accuracy_score on edge cases")
    write("classification.json", classification_cases(rng),
          "scikit-learn accuracy_score, f1_score(macro/weighted, zero_division=0), "
          "precision_recall_fscore_support(zero_division=0), confusion_matrix")


if __name__ == "__main__":
    main()
