"""`offramp traces import`: a trace from a user's own per-exit outputs.

The outputs are real: the per-exit softmax the shipped fmnist-resnet trace recorded on
Fashion-MNIST, handed back as a user would hand in their own model's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offramp.analysis.cli import main
from offramp.traces.format import load_trace
from offramp.traces.imports import import_trace
from offramp.traces.shipped import resolve_trace

SHIPPED = load_trace(resolve_trace("fmnist-resnet"))
PROBS = SHIPPED.softmax.astype(np.float64)
PROBS = PROBS / PROBS.sum(axis=2, keepdims=True)


def _cli_import(tmp_path, src, *extra):
    out = tmp_path / "mine.npz"
    rc = main(["traces", "import", str(src), "--model-id", "my-resnet", "--dataset",
               "fashion-mnist", "--exit-positions", "1,2,3,4", "-o", str(out), *extra])
    return rc, out


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_import_reproduces_the_recorded_trace(tmp_path, capsys, kind):
    outputs = PROBS if kind == "probs" else np.log(np.clip(PROBS, 1e-12, 1)) + 3.0
    src = tmp_path / "outputs.npz"
    np.savez(src, outputs=outputs, labels=SHIPPED.labels, split=SHIPPED.split)
    rc, out = _cli_import(tmp_path, src, "--kind", kind)
    assert rc == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    mine = load_trace(out)
    assert mine.model_id == "my-resnet" and mine.meta["dataset"] == "fashion-mnist"
    assert mine.meta["produced_by"]["kind"] == kind and not mine.meta["synthetic"]
    assert np.array_equal(mine.split, SHIPPED.split)
    # Ties in the float16 softmax may resolve differently; everything else is the same.
    same = (mine.pred == SHIPPED.pred).mean()
    assert same > 0.999
    assert np.abs(mine.maxprob - SHIPPED.maxprob).max() < 2e-3
    assert np.abs(mine.entropy - SHIPPED.entropy).max() < 2e-2
    assert mine.accuracy("test") == pytest.approx(SHIPPED.accuracy("test"), abs=1e-3)


def test_import_from_npy_and_parquet_with_a_drawn_split(tmp_path, capsys):
    npy, labels = tmp_path / "out.npy", tmp_path / "labels.npy"
    np.save(npy, PROBS[:500])
    np.save(labels, SHIPPED.labels[:500])
    rc, out = _cli_import(tmp_path, npy, "--kind", "probs", "--labels", str(labels),
                          "--val-fraction", "0.4", "--seed", "3")
    assert rc == 0, capsys.readouterr().err
    a = load_trace(out)
    assert a.indices("val").size == 200 and a.indices("test").size == 300
    # The same seed draws the same split; Parquet rows give the same trace.
    frame = pd.DataFrame({"outputs": [list(map(list, x)) for x in PROBS[:500]],
                          "label": SHIPPED.labels[:500]})
    pq = tmp_path / "out.parquet"
    frame.to_parquet(pq)
    out2 = tmp_path / "mine2.npz"
    assert main(["traces", "import", str(pq), "--kind", "probs", "--model-id", "my-resnet",
                 "--dataset", "fashion-mnist", "--val-fraction", "0.4", "--seed", "3",
                 "-o", str(out2)]) == 0
    b = load_trace(out2)
    assert np.array_equal(a.split, b.split) and np.array_equal(a.pred, b.pred)


def _bad(outputs=None, labels=None, split=None):
    outputs = PROBS[:50] if outputs is None else outputs
    labels = SHIPPED.labels[:50] if labels is None else labels
    split = SHIPPED.split[:50] if split is None else split
    return {"outputs": outputs, "labels": labels, "split": split}


NAN = PROBS[:50].copy()
NAN[3, 1, 2] = np.nan
CASES = [
    ("nan", _bad(outputs=NAN), ["field 'outputs'", "NaN"]),
    ("not-summing", _bad(outputs=PROBS[:50] * 1.5), ["field 'outputs'", "sum to 1"]),
    ("2-d", _bad(outputs=PROBS[:50, 0]), ["field 'outputs'", "shape"]),
    ("labels-out-of-range", _bad(labels=SHIPPED.labels[:50] + 10), ["field 'labels'", "[0, 10)"]),
    ("labels-short", _bad(labels=SHIPPED.labels[:40]), ["field 'labels'", "(50,)"]),
    ("empty-test", _bad(split=np.zeros(50, dtype=np.uint8)), ["field 'split'", "no test"]),
    ("split-values", _bad(split=np.full(50, 7)), ["field 'split'", "0 (val) and 1 (test)"]),
]


@pytest.mark.parametrize("case,arrays,words", CASES, ids=[c[0] for c in CASES])
def test_bad_outputs_are_one_line(tmp_path, capsys, case, arrays, words):
    src = tmp_path / "bad.npz"
    np.savez(src, **arrays)
    rc, out = _cli_import(tmp_path, src, "--kind", "probs")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "bad.npz" in err[0] and all(w in err[0] for w in words), err[0]
    assert not out.exists()


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FMNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Fashion-MNIST (Debian dataset-fashion-mnist) is not installed")
def test_importing_the_models_logits_equals_recording_it(tmp_path):
    """The shipped fmnist checkpoint's per-exit logits on real Fashion-MNIST (1000 val + 1000
    test images), imported, give the very trace `traces record` builds from the same forward
    pass: identical arrays, identical policy fits, identical simulation results."""
    import torch

    from offramp.analysis.study.config import parse_config
    from offramp.analysis.study.run import run_study
    from offramp.policies import build_policy
    from offramp.traces.checkpoint import load_checkpoint
    from offramp.traces.format import SPLITS, make_trace, save_trace
    from offramp.traces.models import images_to_tensor
    from offramp.traces.train import load_data

    model, _ = load_checkpoint(Path(resolve_trace("fmnist-resnet")).with_suffix(".pt"))
    data = load_data("fmnist-resnet")
    logits, labels, split = [], [], []
    with torch.no_grad():
        for name in SPLITS:
            part = data.split(name)
            x = images_to_tensor(part.x[:1000])
            logits.append(torch.stack(model.forward_exits(x), dim=1).double().numpy())
            labels.append(np.asarray(part.y[:1000]))
            split.append(np.full(1000, SPLITS.index(name), dtype=np.uint8))
    logits, labels, split = np.concatenate(logits), np.concatenate(labels), np.concatenate(split)
    meta = {k: SHIPPED.meta[k] for k in ("exit_names", "exit_positions")}
    recorded = make_trace(labels, split, torch.softmax(torch.from_numpy(logits), dim=2).numpy(),
                          {**meta, "model_id": "fmnist-resnet", "dataset": "fashion-mnist",
                           "produced_by": {}, "synthetic": False})
    imported = import_trace(logits, labels, kind="logits", split=split, model_id="fmnist-resnet",
                            dataset="fashion-mnist", **meta)
    for name in ("pred", "maxprob", "entropy", "correct", "softmax", "labels", "split"):
        assert np.array_equal(getattr(recorded, name), getattr(imported, name)), name
    for policy in ({"name": "entropy", "tolerance_pct": 99}, {"name": "maxprob",
                                                              "tolerance_pct": 98}):
        a, b = build_policy(policy, recorded), build_policy(policy, imported)
        assert np.array_equal(a.thresholds_, b.thresholds_)
    results = []
    for trace, name in ((recorded, "rec.npz"), (imported, "imp.npz")):
        save_trace(trace, tmp_path / name)
        cfg = parse_config({"trace": {"path": str(tmp_path / name)},
                            "profile": {"path": "fmnist-resnet-cpu"},
                            "policy": {"name": "entropy", "tolerance_pct": 99},
                            "run": {"requests": 3000, "replications": 1}})
        results.append(run_study(cfg).result.records[0])
    assert np.array_equal(results[0].finish, results[1].finish)
    assert np.array_equal(results[0].exit, results[1].exit)


def test_import_predictions_without_softmax(tmp_path, capsys):
    """A table of per-sample, per-exit predictions and confidences (no softmax, no entropy):
    max-prob policies work on it; entropy and EENet say in one line what they miss."""
    ids = np.r_[SHIPPED.indices("val")[:300], SHIPPED.indices("test")[:300]]
    rows = [{"sample": int(i), "exit": k, "pred": int(SHIPPED.pred[i, k]),
             "confidence": float(SHIPPED.maxprob[i, k]), "label": int(SHIPPED.labels[i]),
             "split": "val" if SHIPPED.split[i] == 0 else "test"}
            for i in ids for k in range(SHIPPED.n_exits)]
    table = tmp_path / "preds.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    out = tmp_path / "preds.npz"
    assert main(["traces", "import", str(table), "--kind", "predictions", "--num-classes", "10",
                 "--model-id", "fmnist-resnet", "--dataset", "fashion-mnist", "-o", str(out)]) == 0
    trace = load_trace(out)
    assert trace.softmax is None and not trace.meta["entropy_recorded"]
    assert trace.meta["synthetic"] is False  # real outputs unless said otherwise
    marked = tmp_path / "marked.npz"
    assert main(["traces", "import", str(table), "--kind", "predictions", "--num-classes", "10",
                 "--model-id", "fmnist-resnet", "--dataset", "fashion-mnist", "--synthetic",
                 "-o", str(marked)]) == 0
    assert load_trace(marked).meta["synthetic"] is True
    assert np.array_equal(trace.pred, SHIPPED.pred[np.sort(ids)])
    study = tmp_path / "s.yaml"
    for policy, ok in (({"name": "maxprob", "tolerance_pct": 99}, True),
                       ({"name": "entropy", "tolerance_pct": 99}, False),
                       ({"name": "eenet", "budget_ms": 3.0}, False)):
        import yaml

        study.write_text(yaml.safe_dump({"trace": {"path": str(out)},
                                         "profile": {"path": "fmnist-resnet-cpu"},
                                         "policy": policy, "run": {"requests": 500,
                                                                   "replications": 1}}))
        capsys.readouterr()
        rc = main(["simulate", str(study), "-o", str(tmp_path / f"run-{policy['name']}")])
        err = capsys.readouterr().err.strip().splitlines()
        if ok:
            assert rc == 0, err
        else:
            assert rc == 2 and len(err) == 1 and ("entropy" in err[0] or "softmax" in err[0])
