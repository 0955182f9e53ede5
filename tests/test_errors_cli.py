"""Every bad input of issue #11 through the real CLI: exit code 2, one line naming the file and
the field, no traceback, nothing partial left behind. Synthetic trace and profile (tests only)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from offramp.analysis.cli import main

DATA = Path(__file__).parent / "data"


class World:
    """A folder with a valid synthetic trace, profile and study, and ways to spoil them."""

    def __init__(self, root: Path):
        self.root = root
        self.trace = root / "trace.npz"
        self.profile = root / "profile.json"
        shutil.copy(DATA / "synthetic-trace.npz", self.trace)
        shutil.copy(DATA / "synthetic-profile.json", self.profile)
        self.study = self.write_study()

    def write_study(self, name: str = "study.yaml", **sections) -> Path:
        cfg = {"trace": {"path": "trace.npz"}, "profile": {"path": "profile.json"},
               "run": {"requests": 400, "replications": 1}}
        for key, value in sections.items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        path = self.root / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.trace) as z:
            return {k: z[k] for k in z.files}

    def spoil_trace(self, **changes) -> Path:
        arrays = {**self.arrays(), **changes}
        path = self.root / "bad.npz"
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    def meta(self, **changes) -> np.ndarray:
        return np.array(json.dumps({**json.loads(str(self.arrays()["meta"])), **changes}))

    def spoil_profile(self, change: Callable[[dict], None]) -> Path:
        doc = json.loads(self.profile.read_text())
        change(doc)
        path = self.root / "bad.json"
        path.write_text(json.dumps(doc))
        return path

    def a_file(self) -> Path:
        path = self.root / "a-file"
        path.write_text("not a folder\n")
        return path


def _simulate(w: World, study: Path, out: str = "out") -> list[str]:
    return ["simulate", str(study), "-o", str(w.root / out)]


def _with_trace(w: World, path: Path) -> list[str]:
    return _simulate(w, w.write_study("s.yaml", trace={"path": path.name}))


def _with_profile(w: World, path: Path) -> list[str]:
    return _simulate(w, w.write_study("s.yaml", profile={"path": str(path)}))


def _yaml(w: World, text: str | bytes) -> list[str]:
    path = w.root / "s.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return _simulate(w, path)


def _fit(w: World, out: Path, *extra: str) -> list[str]:
    return ["fit", "--trace", str(w.trace), "--profile", str(w.profile), "--policy", "entropy",
            "--tolerance", "99", "-o", str(out), *extra]


def _frontier(w: World, out: Path, *extra: str, trace: Path | None = None) -> list[str]:
    return ["frontier", "--trace", str(trace or w.trace), "--profile", str(w.profile),
            "--eenet-fits", "1", "--eenet-epochs", "2", "-o", str(out), *extra]


def _split(w: World, value: int) -> Path:
    a = w.arrays()
    acc = float(a["correct"][:, -1].mean()) if value == 1 else float("nan")
    return w.spoil_trace(split=np.full_like(a["split"], value), meta=w.meta(full_model_accuracy=acc))


def _tiny_trace(w: World, n: int) -> Path:
    a = w.arrays()
    keep = {k: v[:n] for k, v in a.items() if k != "meta"}
    keep["split"] = np.arange(n, dtype=a["split"].dtype) % 2  # 0 = val, 1 = test
    acc = float(keep["correct"][keep["split"] == 1, -1].mean()) if n > 1 else 0.0
    return w.spoil_trace(**keep, meta=w.meta(full_model_accuracy=acc))


def _argmax_off(w: World) -> Path:
    a = w.arrays()
    pred = a["pred"].copy()
    pred[:, 0] = (pred[:, 0] + 1) % int(a["softmax"].shape[2])
    return w.spoil_trace(pred=pred, correct=pred == a["labels"][:, None])


def _from_file_exit_9(w: World) -> list[str]:
    policy = w.root / "policy.json"
    assert main(_fit(w, policy)) == 0
    doc = json.loads(policy.read_text())
    doc["exits"][0] = 9
    policy.write_text(json.dumps(doc))
    return _simulate(w, w.write_study("s.yaml", policy={"from_file": str(policy)}))


# (case id, argv builder, words the one line must hold (the field, what is wrong))
CASES: list[tuple[str, Callable[[World], list[str]], list[str]]] = [
    # Traces of the wrong type or shape.
    ("trace-meta-list", lambda w: _with_trace(w, w.spoil_trace(meta=np.array('["a"]'))),
     ["bad.npz", "field 'meta'", "mapping"]),
    ("trace-accuracy-string", lambda w: _with_trace(
        w, w.spoil_trace(meta=w.meta(full_model_accuracy="0.9"))),
     ["bad.npz", "meta.full_model_accuracy", "number"]),
    ("trace-maxprob-strings", lambda w: _with_trace(
        w, w.spoil_trace(maxprob=w.arrays()["maxprob"].astype(str))),
     ["bad.npz", "field 'maxprob'", "float"]),
    ("trace-empty-test", lambda w: _with_trace(w, _split(w, 0)),
     ["bad.npz", "field 'split'", "no test samples"]),
    ("trace-empty-val", lambda w: _with_trace(w, _split(w, 1)),
     ["bad.npz", "field 'split'", "no val samples"]),
    ("trace-pred-not-argmax", lambda w: _with_trace(w, _argmax_off(w)),
     ["bad.npz", "field 'pred'", "argmax"]),
    ("trace-entropy-off", lambda w: _with_trace(
        w, w.spoil_trace(entropy=(1 - w.arrays()["entropy"]).astype(np.float32))),
     ["bad.npz", "field 'entropy'", "softmax"]),
    # Profiles.
    ("profile-is-dir", lambda w: _with_profile(w, w.root), ["is a folder, not a profile file"]),
    ("profile-all-zero", lambda w: _with_profile(w, w.spoil_profile(
        lambda d: [r.update(p50_ms=0.0, mean_ms=0.0, p99_ms=0.0, std_ms=0.0)
                   for r in d["rows"]])), ["bad.json", "p50_ms", "> 0"]),
    ("profile-huge", lambda w: _with_profile(w, w.spoil_profile(
        lambda d: [r.update(p50_ms=1e300, mean_ms=1e300, p99_ms=1e300) for r in d["rows"]])),
     ["bad.json", "p50_ms", "at most"]),
    # Study YAML.
    ("yaml-not-utf8", lambda w: _yaml(w, b"run:\n  requests: \xff\xfe\n"),
     ["s.yaml", "UTF-8"]),
    ("yaml-duplicate-key", lambda w: _yaml(
        w, "trace: {path: trace.npz}\nprofile: {path: profile.json}\n"
           "run: {requests: 400}\nrun: {requests: 800}\n"), ["s.yaml", "run", "twice"]),
    ("yaml-requests-true", lambda w: _simulate(w, w.write_study("s.yaml", run={"requests": True})),
     ["s.yaml", "run.requests", "integer"]),
    ("yaml-rate-inf", lambda w: _yaml(
        w, "trace: {path: trace.npz}\nprofile: {path: profile.json}\nworkload: {rate_rps: .inf}\n"),
     ["s.yaml", "workload.rate_rps", "finite"]),
    ("yaml-wait-inf", lambda w: _yaml(
        w, "trace: {path: trace.npz}\nprofile: {path: profile.json}\nserver: {max_wait_ms: .inf}\n"),
     ["s.yaml", "server.max_wait_ms", "finite"]),
    ("run-leaves-nothing-to-measure", lambda w: _simulate(
        w, w.write_study("s.yaml", run={"requests": None, "duration_s": 1e-4,
                                        "warmup_fraction": 0.5})),
     ["s.yaml", "field 'run.duration_s'", "no request left to measure"]),
    ("from-file-exit-9", _from_file_exit_9, ["policy.json", "field 'exits'", "exit 9"]),
    ("from-file-with-fit-options", lambda w: _simulate(w, w.write_study(
        "s.yaml", policy={"from_file": "p.json", "tolerance_pct": 99})),
     ["s.yaml", "policy", "from_file"]),
    # Output paths.
    ("simulate-o-file", lambda w: ["simulate", str(w.study), "-o", str(w.a_file())],
     ["a-file", "is a file"]),
    ("simulate-o-under-file", lambda w: ["simulate", str(w.study), "-o", str(w.a_file() / "x")],
     ["a-file", "under"]),
    ("simulate-o-unwritable", lambda w: ["simulate", str(w.study), "-o", "/proc/offramp-out"],
     ["/proc/offramp-out", "not writable"]),
    ("simulate-o-foreign", lambda w: ["simulate", str(w.study), "-o", str(w.root)],
     ["did not write", "trace.npz"]),
    ("fit-o-file-under-file", lambda w: _fit(w, w.a_file() / "p.json"), ["a-file", "under"]),
    ("fit-o-dir", lambda w: _fit(w, w.root), ["existing folder"]),
    ("fit-o-unwritable", lambda w: _fit(w, Path("/proc/offramp.json")), ["not writable"]),
    ("frontier-o-file", lambda w: _frontier(w, w.a_file()), ["a-file", "is a file"]),
    ("frontier-o-unwritable", lambda w: _frontier(w, Path("/proc/offramp-f")), ["not writable"]),
    ("demo-o-file", lambda w: ["demo", "-o", str(w.a_file()), "--requests", "100"],
     ["a-file", "is a file"]),
    ("demo-o-under-file", lambda w: ["demo", "-o", str(w.a_file() / "d"), "--requests", "100"],
     ["a-file", "under"]),
    ("profile-show-plot-dir", lambda w: ["profile", "show", str(w.profile), "--plot", str(w.root)],
     ["existing folder"]),
    ("profile-show-plot-under-file", lambda w: ["profile", "show", str(w.profile), "--plot",
                                                str(w.a_file() / "p.png")], ["under"]),
    ("validate-o-file", lambda w: ["validate", str(w.study), "-o", str(w.a_file())],
     ["a-file", "is a file"]),
    ("validate-async", lambda w: ["validate", str(w.study), "-o", str(w.root / "v"), "--modes",
                                  "keep,async"], ["'async'", "one stage at a time", "serve keep"]),
    # CLI numbers.
    ("frontier-eenet-fits-0", lambda w: _frontier(w, w.root / "f", "--eenet-fits", "0"),
     ["--eenet-fits", "at least 1"]),
    ("frontier-eenet-epochs-negative", lambda w: _frontier(w, w.root / "f", "--eenet-epochs", "-1"),
     ["--eenet-epochs", "at least 1"]),
    ("demo-requests-0", lambda w: ["demo", "-o", str(w.root / "d"), "--requests", "0"],
     ["--requests", "at least 1"]),
    ("fit-max-batch-0", lambda w: _fit(w, w.root / "p.json", "--max-batch", "0"),
     ["--max-batch", "at least 1"]),
    ("frontier-one-sample", lambda w: _frontier(w, w.root / "f", trace=_tiny_trace(w, 1)),
     ["bad.npz", "field 'split'"]),
    ("frontier-two-samples", lambda w: _frontier(w, w.root / "f", trace=_tiny_trace(w, 2)),
     ["bad.npz", "field 'correct'", "right on no"]),
]


@pytest.mark.parametrize("case,build,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, build, words):
    w = World(tmp_path)
    argv = build(w)
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("offramp: error: ") and "Traceback" not in line
    assert "(fix: " in line
    for word in words:
        assert word in line, line
    # Nothing partial: no new output folder or file, no temporary sibling.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_bug_is_one_line_and_debug_shows_it(monkeypatch, tmp_path, capsys):
    import importlib

    cmd = importlib.import_module("offramp.analysis.cli.profile")  # the one the CLI will use

    def boom(*args):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(cmd, "profile_summary", boom)
    parser_argv = ["profile", "list"]
    assert main(parser_argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ZeroDivisionError: planted" in err[0]
    assert "--debug" in err[0]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *parser_argv])


# Found by a 407-case sweep of bad inputs (issue #11's follow-up): each was a traceback, a
# misleading message or silently accepted before.
def _policy_file(w: World, change: Callable[[dict], None]) -> list[str]:
    policy = w.root / "policy.json"
    assert main(_fit(w, policy)) == 0
    doc = json.loads(policy.read_text())
    change(doc)
    policy.write_text(json.dumps(doc))
    return _simulate(w, w.write_study("s.yaml", policy={"from_file": str(policy)}))


def _validation_folder(w: World, empty: bool) -> list[str]:
    target = w.root / "v"
    if empty:
        target.mkdir()
    else:
        target.write_text("x")
    return ["validate", str(w.study), "--real-from", str(target)]


SWEEP_CASES: list[tuple[str, Callable[[World], list[str]], list[str]]] = [
    ("static-superscript", lambda w: _simulate(w, w.write_study("s.yaml",
                                                                policy={"name": "static:²"})),
     ["s.yaml", "static:K"]),
    ("fractions-nan", lambda w: _yaml(
        w, "trace: {path: trace.npz}\nprofile: {path: profile.json}\n"
           "policy: {name: entropy, fractions: [.nan, .5, .25, .25]}\n"),
     ["s.yaml", "policy.fractions", "finite"]),
    ("set-bad-yaml", lambda w: [*_simulate(w, w.study), "--set", "run.requests=[1"],
     ["--set", "not a valid YAML value"]),
    ("set-empty", lambda w: [*_simulate(w, w.study), "--set", "run.requests="],
     ["--set", "no value"]),
    ("param-name", lambda w: _fit(w, w.root / "p.json", "--param", "name=maxprob"),
     ["--param", "--policy"]),
    ("policy-file-ragged", lambda w: _policy_file(
        w, lambda d: d.update(exits=[[1, 2]] + d["exits"][1:])), ["field 'exits'"]),
    ("policy-file-params", lambda w: _policy_file(w, lambda d: d.update(params=[1, 2])),
     ["field 'params'"]),
    ("policy-file-name", lambda w: _policy_file(w, lambda d: d.update(policy=5)),
     ["field 'policy'"]),
    ("policy-file-active-off", lambda w: _policy_file(
        w, lambda d: d.update(active_exits=[False] * 4)), ["field 'exits'", "turns off"]),
    ("policy-file-version-string", lambda w: _policy_file(w, lambda d: d.update(version="1")),
     ["field 'version'", "whole number"]),
    ("profile-software-string", lambda w: _with_profile(w, w.spoil_profile(
        lambda d: d["meta"].update(software="torch"))), ["meta.software", "mapping"]),
    ("trace-produced-by-string", lambda w: _with_trace(
        w, w.spoil_trace(meta=w.meta(produced_by="me"))), ["meta.produced_by"]),
    ("trace-model-id-path", lambda w: _with_trace(
        w, w.spoil_trace(meta=w.meta(model_id="../escaped"))), ["meta.model_id"]),
    ("seed-huge", lambda w: _simulate(w, w.write_study("s.yaml", run={"seed": 2**70})),
     ["run.seed", "less than or equal"]),
    ("requests-huge", lambda w: _simulate(w, w.write_study("s.yaml", run={"requests": 10**15})),
     ["run.requests", "less than or equal"]),
    ("workload-stray-field", lambda w: _simulate(w, w.write_study(
        "s.yaml", workload={"kind": "poisson", "clients": 4})), ["takes no clients"]),
    ("empty-study", lambda w: _yaml(w, ""), ["s.yaml", "is empty"]),
    ("patience-too-big", lambda w: _simulate(w, w.write_study(
        "s.yaml", policy={"name": "patience", "patience": 1000})),
     ["s.yaml", "policy.patience", "at most 3"]),
    ("real-from-a-file", lambda w: _validation_folder(w, False), ["not a validation folder"]),
    ("real-from-empty", lambda w: _validation_folder(w, True), ["not a validation folder"]),
    ("save-arrivals-into-run", lambda w: [*_simulate(w, w.study), "--save-arrivals",
                                          str(w.root / "out")], ["inside the run folder"]),
    ("plot-not-png", lambda w: ["profile", "show", str(w.profile), "--plot",
                                str(w.root / "x.txt")], ["PNG"]),
    ("profile-version-string", lambda w: _with_profile(w, w.spoil_profile(
        lambda d: d.update(version="2"))), ["field 'version'", "whole number"]),
]


@pytest.mark.parametrize("case,build,words", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_swept_bad_input_is_one_line_exit_2(tmp_path, capsys, case, build, words):
    test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, build, words)


def _commands(parser, name: str = "") -> list[str]:
    """Every command line the parser takes, nested ones included ("" is `offramp` itself)."""
    import argparse

    out = [name]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                out += _commands(child, f"{name} {sub}".strip())
    return out


def test_help_has_no_markup_or_internal_notes():
    """Every command's --help reads as plain text: no reST markup, no pointers into the source
    (a module path like sim/pipeline.py)."""
    import re
    import subprocess
    import sys

    from offramp.analysis.cli import build_parser

    commands = _commands(build_parser())
    assert {"concurrency", "pipeline", "profile show", "traces train"} <= set(commands)
    for cmd in commands:
        out = subprocess.run([sys.executable, "-m", "offramp.analysis.cli", *cmd.split(),
                              "--help"], capture_output=True, text=True, check=True).stdout
        assert not re.search(r"``|:(mod|func|class|data|meth):|The work (is|lives)", out), cmd
        assert not re.search(r"\b[\w.-]+/[\w./-]*\.py\b", out), (cmd, out)


@pytest.mark.parametrize("argv,prog,unknown", [
    (["fit", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu", "--policy", "entropy",
      "--tolerance", "99", "--max-batchh", "8", "-o", "f.json"], "offramp fit", "--max-batchh 8"),
    (["simulate", "study.yaml", "-o", "r", "--reps", "3"], "offramp simulate", "--reps 3"),
    (["profile", "show", "fmnist-resnet-cpu", "--plott", "p.png"], "offramp profile show",
     "--plott p.png"),
    (["--verbose", "profile", "list"], "offramp", "--verbose"),
])
def test_an_unknown_option_names_the_command_it_was_given_to(argv, prog, unknown, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"offramp: error: {prog}: unrecognized arguments: {unknown} "
                   f"(fix: see `{prog} --help`)"]


def test_help_starts_without_the_heavy_libraries():
    """`offramp --help` (every command registered) imports none of the libraries the work
    needs: they load when a command runs, so the CLI starts at once."""
    import subprocess
    import sys

    heavy = ("numpy", "scipy", "pandas", "torch", "pydantic", "matplotlib", "optuna", "cvxpy",
             "simpy", "dask", "distributed", "numba")
    code = ("import sys\nfrom offramp.analysis.cli import build_parser\nbuild_parser()\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_a_relative_policy_file_is_read_from_the_study_folder(tmp_path, monkeypatch, capsys):
    # The rule (README, policy row): relative to the study file, also given by --set; where the
    # file is in the current folder instead, the error says so with the path to give.
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "s.yaml").write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "policy": {"name": "none"}, "run": {"requests": 500, "replications": 1}}))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu",
                 "--policy", "static:1", "-o", "pol.json"]) == 0
    capsys.readouterr()
    args = ["simulate", "sub/s.yaml", "--set", "policy.from_file=pol.json", "-o", "run"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sub/pol.json" in err
    assert f"give {tmp_path / 'pol.json'}" in err
    assert main(["simulate", "sub/s.yaml", "--set", f"policy.from_file={tmp_path / 'pol.json'}",
                 "-o", "run"]) == 0
