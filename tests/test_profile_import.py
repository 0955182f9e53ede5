"""`offramp profile import`: profiles from a tidy CSV and from trtexec --exportTimes files.

The trtexec fixtures in tests/data/trtexec are hand-written in trtexec's documented layout
(see their README); the expected numbers below are computed from them by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from offramp.analysis.cli import main
from offramp.common.errors import InputError
from offramp.profiling.format import load_profile
from offramp.profiling.imports import profile_from_csv
from offramp.profiling.trtexec import read_trtexec_times
from offramp.traces.format import save_trace
from offramp.traces.synthetic import synthetic_trace

TRT = Path(__file__).parent / "data" / "trtexec"


def _import(tmp_path, *args):
    out = tmp_path / "p.json"
    rc = main(["profile", "import", *args, "--model-id", "tiny-trt", "--n-exits", "2",
               "--device", "NVIDIA H200", "--precision", "fp16", "-o", str(out)])
    return rc, out


def _row(profile, kind, k, b):
    return next(r for r in profile.rows if (r["kind"], r["k"], r["batch"]) == (kind, k, b))


def test_trtexec_manifest_with_h2d(tmp_path, capsys):
    rc, out = _import(tmp_path, "--trtexec", str(TRT / "manifest.csv"), "--h2d")
    assert rc == 0, capsys.readouterr().err
    prof = load_profile(out)
    seg = _row(prof, "segment", 0, 1)
    # computeMs of segment0_b1.json: 0.500, 0.510, 0.490, 0.600.
    assert seg["p50_ms"] == pytest.approx(0.505) and seg["runs"] == 4
    assert seg["mean_ms"] == pytest.approx(0.525)
    assert seg["p99_ms"] == pytest.approx(np.percentile([0.5, 0.51, 0.49, 0.6], 99))
    # The legacy export (inMs/outMs) reads the same way.
    assert _row(prof, "head", 1, 4)["p50_ms"] == pytest.approx(0.051)  # 0.049 .050 .052 .055
    # h2dMs of segment 0 at batch 4: 0.030, 0.032, 0.031, 0.030 -> the overhead stage.
    assert _row(prof, "overhead", 0, 4)["p50_ms"] == pytest.approx(0.0305)
    assert prof.meta["device"] == "NVIDIA H200" and prof.meta["backend"] == "tensorrt (trtexec)"
    assert prof.meta["produced_by"]["format"] == "trtexec --exportTimes"


def test_trtexec_pattern_and_a_study_on_it(tmp_path, capsys):
    work = tmp_path / "trt"
    shutil.copytree(TRT, work)
    (work / "head1_b4-legacy.json").rename(work / "head1_b4.json")
    rc, out = _import(tmp_path, "--trtexec", str(work), "--pattern", "{kind}{k}_b{batch}.json")
    assert rc == 0, capsys.readouterr().err
    assert len(load_profile(out).rows) == 8
    # The imported profile serves a study of a 2-exit model with the same id.
    save_trace(synthetic_trace(600, n_exits=2, model_id="tiny-trt"), tmp_path / "t.npz")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "t.npz"}, "profile": {"path": "p.json"},
        "server": {"max_batch": 4, "exit_mode": "keep"},
        "policy": {"name": "entropy", "tolerance_pct": 99},
        "workload": {"rate_rps": 800.0}, "run": {"requests": 2000, "replications": 1}}))
    capsys.readouterr()
    assert main(["simulate", str(study), "-o", str(tmp_path / "run"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # Service is at least segment 0 + head 0 at batch 1 (0.505 + 0.051 ms).
    assert doc["metrics"]["latency_p50_ms"]["mean"] > 0.55


def test_csv_samples_and_quantiles(tmp_path):
    samples = tmp_path / "s.csv"
    lines = ["kind,k,batch,latency_ms,device"]
    for kind in ("segment", "head"):
        for k in (0, 1):
            for b, base in ((1, 1.0), (8, 2.0)):
                lines += [f"{kind},{k},{b},{base * (1 + i / 100):.4f},A100" for i in range(11)]
    samples.write_text("\n".join(lines) + "\n")
    prof = profile_from_csv(samples, "m", 2, "ignored")
    r = _row(prof, "segment", 1, 8)
    assert r["p50_ms"] == pytest.approx(2.1) and r["runs"] == 11
    assert prof.meta["device"] == "A100"  # the device column wins
    quant = tmp_path / "q.csv"
    quant.write_text("kind,k,batch,p50_ms,p99_ms\nsegment,0,1,1.0,1.5\nsegment,1,1,1.0,1.2\n"
                     "head,0,1,0.1,0.2\nhead,1,1,0.1,0.1\n")
    q = profile_from_csv(quant, "m", 2, "cpu")
    assert _row(q, "segment", 0, 1)["p99_ms"] == 1.5 and _row(q, "head", 1, 1)["runs"] == 1


BAD_TRT = [
    ("no-compute", [{"latencyMs": 1.0}], "[0].computeMs"),
    ("time-goes-back", [{"startComputeMs": 5.0, "endComputeMs": 5.5, "computeMs": 0.5},
                        {"startComputeMs": 4.0, "endComputeMs": 4.5, "computeMs": 0.5}],
     "[1].startComputeMs"),
    ("not-a-list", {"computeMs": 1.0}, "non-empty list"),
    ("negative", [{"computeMs": 0.5}, {"computeMs": -1}], "[1].computeMs"),
    ("string", [{"computeMs": "0.5"}], "[0].computeMs"),
]


@pytest.mark.parametrize("case,doc,words", BAD_TRT, ids=[c[0] for c in BAD_TRT])
def test_bad_trtexec_file_names_the_field(tmp_path, case, doc, words):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_trtexec_times(path)
    assert words in str(err.value) and "x.json" in str(err.value)


def test_bad_imports_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,k,batch,latency_ms\nsegment,0,1,abc\n")
    rc, out = _import(tmp_path, "--csv", str(bad))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "line 2: latency_ms" in err[0] and not out.exists()
    bad.write_text("kind,k,batch,latency_ms\nsegment,0,1,1.0\nsegment,1,1,1.0\nhead,0,1,0.1\n")
    rc, _ = _import(tmp_path, "--csv", str(bad))
    err = capsys.readouterr().err
    assert rc == 2 and "no rows for head 1" in err
    # A batch size measured for every stage but one.
    short = tmp_path / "short.csv"
    rows = ["kind,k,batch,p50_ms,p99_ms"] + [f"{kind},{k},{b},1.0,1.2" for kind in ("segment", "head")
                                             for k in (0, 1) for b in (1, 8)
                                             if (kind, k, b) != ("segment", 1, 8)]
    short.write_text("\n".join(rows) + "\n")
    rc, _ = _import(tmp_path, "--csv", str(short))
    err = capsys.readouterr().err
    assert rc == 2 and "segment 1" in err and "batch size 8" in err
    rc, _ = _import(tmp_path, "--trtexec", str(TRT), "--pattern", "{kind}_b{batch}.json")
    assert rc == 2 and "needs {k} and {batch}" in capsys.readouterr().err


def test_trtexec_and_csv_merge_into_a_profile_that_shrinks(tmp_path, capsys):
    # trtexec times the engines (segments, heads); the gather of survivors is timed elsewhere.
    rc, alone = _import(tmp_path, "--trtexec", str(TRT / "manifest.csv"))
    printed = capsys.readouterr().out
    assert rc == 0 and "exit_mode keep: ready" in printed
    assert "exit_mode shrink: missing compact 0; measure them with `offramp profile run`" in printed
    assert "kind=compact,k=0" in printed and "--csv beside" in printed
    compact = tmp_path / "compact.csv"
    compact.write_text("kind,k,batch,p50_ms,p99_ms\ncompact,0,1,0.010,0.012\ncompact,0,4,0.020,0.025\n")
    out = tmp_path / "merged.json"
    assert main(["profile", "import", "--trtexec", str(TRT / "manifest.csv"), "--csv",
                 str(compact), "--model-id", "tiny-trt", "--n-exits", "2", "--device",
                 "NVIDIA H200", "-o", str(out)]) == 0
    assert "exit_mode shrink: ready" in capsys.readouterr().out
    merged = load_profile(out)
    assert _row(merged, "compact", 0, 4)["p50_ms"] == 0.020
    assert _row(merged, "segment", 0, 1) == _row(load_profile(alone), "segment", 0, 1)
    assert merged.meta["produced_by"]["imported_from"] == f"{TRT / 'manifest.csv'} + {compact}"
    # The same stage and size from both sources is refused, naming both.
    twice = tmp_path / "twice.csv"
    twice.write_text("kind,k,batch,p50_ms,p99_ms\nsegment,0,1,9.0,9.5\n")
    assert main(["profile", "import", "--trtexec", str(TRT / "manifest.csv"), "--csv",
                 str(twice), "--model-id", "tiny-trt", "--n-exits", "2", "--device", "x",
                 "-o", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err
    assert "segment 0" in err and "batch 1 is also in" in err and "manifest.csv" in err
    # --csv is repeatable: the gather in a file of its own, beside another CSV's rows.
    other = tmp_path / "other.csv"
    other.write_text("kind,k,batch,p50_ms,p99_ms\ncheck,0,1,0.001,0.002\n")
    assert main(["profile", "import", "--trtexec", str(TRT / "manifest.csv"), "--csv",
                 str(compact), "--csv", str(other), "--model-id", "tiny-trt", "--n-exits", "2",
                 "--device", "x", "-o", str(tmp_path / "three.json")]) == 0
    three = load_profile(tmp_path / "three.json")
    assert _row(three, "check", 0, 1)["p50_ms"] == 0.001
    assert _row(three, "compact", 0, 4)["p50_ms"] == 0.020
    capsys.readouterr()
    # A study in shrink mode on the trtexec-only profile names the stage and the same fix.
    save_trace(synthetic_trace(600, n_exits=2, model_id="tiny-trt"), tmp_path / "t.npz")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "t.npz"}, "profile": {"path": str(alone)},
        "server": {"max_batch": 4, "exit_mode": "shrink"},
        "policy": {"name": "entropy", "tolerance_pct": 99},
        "workload": {"rate_rps": 800.0}, "run": {"requests": 500, "replications": 1}}))
    assert main(["simulate", str(study), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no compact rows for exit 0" in err and "offramp profile run" in err


def test_rows_worth_a_second_look_are_named(tmp_path, capsys):
    from offramp.profiling.summary import profile_warnings

    rows = ["kind,k,batch,p50_ms,p99_ms"]
    for kind in ("segment", "head"):
        for k in (0, 1):
            for b, p50 in ((1, 1.0), (8, 3.0), (16, 5.0)):
                fall = (kind, k, b) == ("segment", 1, 16)  # 3.0 ms at 8, then 2.0 at 16
                wide = (kind, k, b) == ("head", 0, 8)  # p99 12x the p50
                rows.append(f"{kind},{k},{b},{2.0 if fall else p50},"
                            f"{36.0 if wide else (2.0 if fall else p50) * 1.2}")
    path = tmp_path / "odd.csv"
    path.write_text("\n".join(rows) + "\n")
    rc, out = _import(tmp_path, "--csv", str(path))
    assert rc == 0
    printed = capsys.readouterr().out
    warned = profile_warnings(load_profile(out))
    assert len(warned) == 2 and all(f"warning: {w}" in printed for w in warned)
    assert warned[0].startswith("head 0 at batch 8: p99 36 ms is 12x its p50")
    assert warned[1].startswith("segment 1: p50 falls from 3 ms at batch 8 to 2 ms at batch 16")
