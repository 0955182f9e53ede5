"""``offramp traces show`` and ``traces list`` through the CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offramp.analysis.cli import main
from offramp.traces.format import make_trace, save_trace
from offramp.traces.shipped import SHIPPED, load_shipped
from offramp.traces.summary import oracle_exit, summarize


def _crafted(correct_at: list[list[bool]]):
    """A 2-class test-only trace whose sample i is correct exactly where correct_at[i] is True."""
    ok = np.array(correct_at, dtype=bool)
    n, k = ok.shape
    labels = np.zeros(n, dtype=int)
    probs = np.where(ok, 0.8, 0.3)
    softmax = np.stack([probs, 1 - probs], axis=2)
    meta = {"model_id": "crafted", "dataset": "none", "exit_names": [f"e{j}" for j in range(k)],
            "exit_positions": [(j + 1) / k for j in range(k)],
            "produced_by": {"command": "test"}, "synthetic": True}
    return make_trace(labels, np.ones(n, dtype=np.uint8), softmax, meta)


def test_oracle_depth_and_first_exit_on_crafted_trace():
    trace = _crafted([[True, True, True], [False, True, True], [False, False, True],
                      [False, False, False]])
    assert oracle_exit(trace, trace.indices("test")).tolist() == [0, 1, 2, 2]
    s = summarize(trace)["splits"]["test"]
    assert s["first_exit_correct"] == 0.25
    assert s["oracle_mean_exit_index"] == 1.25
    assert s["oracle_mean_depth_fraction"] == round((1 + 2 + 3 + 3) / 4 / 3, 4)
    assert s["accuracy"] == [0.25, 0.5, 0.75]
    assert s["agreement_with_last"] == [0.5, 0.75, 1.0]
    assert "val" not in summarize(trace)["splits"]


def test_show_file_json_and_plot(tmp_path, capsys):
    path = save_trace(_crafted([[True, False], [False, True], [True, True]]), tmp_path / "c.npz")
    png = tmp_path / "conf.png"
    assert main(["traces", "show", str(path), "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 3 and out["splits"]["test"]["first_exit_correct"] == 0.6667
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_missing_trace_is_one_line_error(tmp_path, capsys):
    assert main(["traces", "show", str(tmp_path / "absent.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("offramp: error:") and "\n" not in err and "traces list" in err


def test_record_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    argv = ["traces", "record", "--checkpoint", str(tmp_path / "absent.pt"), "-o",
            str(tmp_path / "t.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no such checkpoint" in err and "offramp traces train" in err
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_show_shipped_by_name_reports_the_trace_it_names(name, capsys):
    assert main(["traces", "show", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    trace = load_shipped(name)
    assert out["model_id"] == trace.model_id and out["exits"] == trace.n_exits
    assert str(out["source"]).endswith(SHIPPED[name])  # the file of that name, not another
    assert out["meta"]["synthetic"] is False
    for split in ("val", "test"):
        idx = trace.indices(split)
        got, ok = out["splits"][split], trace.correct[idx]
        assert got["samples"] == idx.size
        assert got["accuracy"] == pytest.approx(ok.mean(axis=0).tolist(), abs=5e-5)
        assert got["first_exit_correct"] == pytest.approx(ok[:, 0].mean(), abs=5e-5)
        assert got["any_exit_correct"] == pytest.approx(ok.any(axis=1).mean(), abs=5e-5)
        # The oracle exits at the first correct exit, or at the last when none is.
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), trace.n_exits - 1)
        assert got["oracle_mean_exit_index"] == pytest.approx(first.mean(), abs=5e-5)
    assert out["full_model_accuracy"] == pytest.approx(trace.accuracy("test")[-1])


def test_show_shipped_text(capsys):
    assert main(["traces", "show", "fmnist-resnet"]) == 0
    out = capsys.readouterr().out
    assert "first exit correct" in out and "oracle" in out and "10000" in out


def test_list_json(capsys):
    assert main(["traces", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(SHIPPED)
    assert rows["fmnist-resnet"]["test_samples"] == 10000
    assert rows["fmnist-resnet"]["dataset"] == "fashion-mnist"
    assert rows["rt-minilm6"]["exits"] == 6
    for r in rows.values():
        assert 0.5 < r["last_exit_test_accuracy"] <= 1
