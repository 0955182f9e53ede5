"""``offramp profile run|show|list|compare`` through the CLI entry point."""

from __future__ import annotations

import json

import pytest

import offramp.profiling.shipped as shipped
from offramp.analysis.cli import main
from offramp.profiling.format import load_profile, save_profile
from offramp.profiling.job import compact_batches
from offramp.profiling.measure import parse_batches
from offramp.profiling.synthetic import synthetic_profile


@pytest.fixture()
def shipped_dir(tmp_path, monkeypatch):
    """A shipped-profile folder holding two synthetic profiles."""
    folder = tmp_path / "data"
    save_profile(synthetic_profile(n_exits=3, model_id="net-a"), folder / "net-a-cpu.json")
    save_profile(synthetic_profile(n_exits=4, batches=(1, 2, 8), model_id="net-b"),
                 folder / "net-b-gpu.json")
    monkeypatch.setattr(shipped, "DATA", folder)
    return folder


def test_list_json(shipped_dir, capsys):
    assert main(["profile", "list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in items] == ["net-a-cpu", "net-b-gpu"]
    b = items[1]
    assert (b["model_id"], b["n_exits"], b["batch_min"], b["batch_max"]) == ("net-b", 4, 1, 8)
    assert {"device", "backend", "precision"} <= set(b)
    assert main(["profile", "list"]) == 0
    assert "net-a-cpu" in capsys.readouterr().out


def test_show_name_json_and_plot(shipped_dir, tmp_path, capsys):
    png = tmp_path / "img" / "p.png"
    assert main(["profile", "show", "net-b-gpu", "--json", "--plot", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["model_id"] == "net-b" and len(doc["rows"]) == 3 * (4 + 4 + 3 + 1)
    seg0 = next(s for s in doc["stages"] if (s["kind"], s["k"]) == ("segment", 0))
    assert (seg0["batch_min"], seg0["batch_max"], seg0["p50_ms_b32"]) == (1, 8, None)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["profile", "show", str(shipped_dir / "net-a-cpu.json")]) == 0
    assert "segment 2" in capsys.readouterr().out


def test_unknown_profile_is_one_line_error(shipped_dir, capsys):
    assert main(["profile", "show", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "net-a-cpu" in err and "nope" in err


def test_run_then_show_and_compare(tmp_path, capsys):
    out = tmp_path / "p.json"
    args = ["profile", "run", "--model", "fmnist-resnet", "--batches", "1,2", "--runs", "3",
            "--warmup", "1", "--random-init", "--quiet", "-o", str(out)]
    assert main(args) == 0
    p = load_profile(out)
    assert p.meta["model_id"] == "fmnist-resnet" and p.n_exits == 4
    assert p.meta["torch_threads"] == 1 and p.meta["weights"].startswith("random init")
    assert "--threads 1" in p.meta["produced_by"]["command"]
    capsys.readouterr()
    assert main(["profile", "compare", str(out), str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["max_rel_diff"] == 0.0 and doc["noisy_stages"] == []
    assert doc["n_rows"] == 2 * (4 + 4 + 3 + 1 + 3 + 3)  # with the loop's checks and handoffs


@pytest.mark.parametrize("argv, needle", [
    (["--batches", "8-2"], "--batches"),
    (["--runs", "0"], "--runs"),
    (["--device", "cuda", "--backend", "cudagraph"], "CUDA"),
])
def test_run_bad_input(tmp_path, capsys, argv, needle):
    import torch

    if needle == "CUDA" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code = main(["profile", "run", "--model", "fmnist-resnet", "--random-init", "--quiet",
                 "-o", str(tmp_path / "x.json"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.startswith("offramp: error:")
    assert not (tmp_path / "x.json").exists()


def test_compact_batches_inverts_parse():
    for sizes in ([1, 2, 3, 4, 8, 16, 24, 32], [5], [1, 3], list(range(1, 65)) + [72, 80, 160]):
        assert parse_batches(compact_batches(sizes)) == sizes


@pytest.mark.parametrize("name", shipped.list_shipped())
def test_real_shipped_profiles_show(name, capsys):
    assert main(["profile", "show", name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["synthetic"] is False and doc["meta"]["backend"] == "eager"


def test_show_says_which_cost_models_and_where_the_calibration_ran(capsys):
    assert main(["profile", "show", "rt-minilm6-cpu"]) == 0
    out = capsys.readouterr().out
    assert "cost models: isolated, in_loop, served (default served)" in out
    assert "fitted 2026-12-06 on Intel" in out and "modes none, keep, shrink" in out
    # Its rows were measured on another CPU than the calibration: the listing says so.
    assert "the served calibration ran on Intel" in out and "the rows on AMD EPYC" in out
    assert main(["profile", "show", "fmnist-resnet-cpu"]) == 0
    out = capsys.readouterr().out
    assert "model not recorded" in out and "the served calibration ran on" not in out


def test_run_with_a_checkpoint(tmp_path):
    import torch

    from offramp.traces.checkpoint import save_checkpoint
    from offramp.traces.models import FmnistResNet

    torch.manual_seed(0)
    ckpt = save_checkpoint(FmnistResNet(), tmp_path / "fm.pt", {})
    out = tmp_path / "p.json"
    base = ["profile", "run", "--batches", "1", "--runs", "2", "--warmup", "1", "--quiet",
            "--checkpoint", str(ckpt), "-o", str(out)]
    assert main([*base, "--model", "fmnist-resnet"]) == 0
    meta = load_profile(out).meta
    assert meta["weights"].startswith("trained checkpoint fm.pt")
    assert f"--checkpoint {ckpt}" in meta["produced_by"]["command"]


def test_the_progress_total_is_the_steps_the_run_reports(tmp_path):
    """profile run's bar: the total announced equals the progress calls (no 128/96)."""
    from offramp.profiling.job import ProfileJob, run_job

    totals, steps = [], []
    job = ProfileJob(model="fmnist-resnet", output=tmp_path / "p.json", batches="1,2", runs=2,
                     warmup=1, random_init=True)
    run_job(job, progress=lambda kind, k, b: steps.append((str(kind), k, b)),
            on_model=totals.append)
    assert totals == [len(steps)] and len(set(steps)) == len(steps)
