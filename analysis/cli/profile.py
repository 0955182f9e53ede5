"""``offramp profile run|import|show|list|compare|calibrate``: measure, import, inspect, compare
and calibrate latency profiles (docs/profiling.md). The work lives in profiling/ (job, summary,
shipped) and offramp.analysis.report.plots; the measurement side imports only torch, numpy and
the standard library."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from offramp.analysis.cli.options import integer, number, user_help
from offramp.analysis.cli.profile_calibrate import add_calibrate
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_file
from offramp.profiling.format import load_profile, save_profile
from offramp.profiling.job import BACKENDS, DEFAULT_SEQ_LEN, MODELS, ProfileJob
from offramp.profiling.shipped import list_shipped, resolve_profile, shipped_profile_path
from offramp.profiling.summary import compare_profiles, profile_summary, stage_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``profile`` and its actions to the top-level parser."""
    parser = subparsers.add_parser("profile", help="measure, show, list and compare latency "
                                   "profiles", description=user_help(__doc__))
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    _add_run(sub)
    _add_import(sub)
    _add_show(sub)
    _add_list(sub)
    add_calibrate(sub)
    _add_compare(sub)


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="measure every stage of a model per batch size")
    run.add_argument("--model", choices=MODELS, help="a shipped model")
    run.add_argument("--model-factory", metavar="MODULE:FUNCTION", help="or: your own "
                     "multi-exit model (protocol: offramp.traces.own), built by this function")
    run.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                     help="an argument of the model factory (repeatable)")
    run.add_argument("--model-id", help="with --model-factory: the model's id (else "
                     "model.model_id); it must match the model's trace")
    run.add_argument("--backend", default="eager", choices=BACKENDS)
    run.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    run.add_argument("--device", choices=("cpu", "cuda"),
                     help="default: cuda for cudagraph/tensorrt, else cpu")
    run.add_argument("--batches", help="batch sizes, e.g. 1-32,40-64:8 "
                     "(default: 1-64, 72-128:8, 160-256:32)")
    run.add_argument("--runs", type=integer(1), default=100, help="timed runs per stage and size")
    run.add_argument("--warmup", type=integer(0), default=10, help="untimed runs before timing")
    run.add_argument("--slow-runs", type=integer(1), help="timed runs for stages slower than --slow-ms "
                     "(default: --runs)")
    run.add_argument("--slow-ms", type=number(0), default=50.0)
    run.add_argument("--threads", type=integer(1), help="torch CPU threads (default: 1 on the CPU)")
    run.add_argument("--seq-len", type=integer(1), default=DEFAULT_SEQ_LEN,
                     help="tokens per sample for rt-minilm6")
    run.add_argument("--checkpoint", type=Path, help="trained weights (default: the shipped "
                     "checkpoint in traces/data when present)")
    run.add_argument("--random-init", action="store_true",
                     help="untrained weights (same architecture, same timings)")
    run.add_argument("--onnx-dir", type=Path, help="keep the exported ONNX pieces here")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("-o", "--output", type=Path, required=True, help="profile file (.json)")
    run.set_defaults(func=cmd_run)


def _add_import(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="a profile from measurements taken elsewhere (CSV, "
                         "trtexec --exportTimes)", description="Build a validated profile from "
                         "a tidy CSV (kind,k,batch and latency_ms samples, or p50_ms and "
                         "p99_ms) or from TensorRT trtexec --exportTimes JSON files, one per "
                         "(engine, batch size): listed in a manifest CSV (kind,k,batch,file) or "
                         "found in a folder by --pattern. docs/profiling.md has the formats.")
    imp.add_argument("--csv", type=Path, action="append", help="tidy CSV of samples or "
                     "quantiles (ms), repeatable; with --trtexec, the stages trtexec does not "
                     "time (checks, handoffs, compaction)")
    imp.add_argument("--trtexec", type=Path, help="a manifest CSV, or a folder with --pattern")
    imp.add_argument("--pattern", help="file names in the --trtexec folder, e.g. "
                     "'{kind}{k}_b{batch}.json' ({kind} optional: segment)")
    imp.add_argument("--h2d", action="store_true", help="trtexec: segment 0's host-to-device "
                     "copy becomes the per-batch overhead stage")
    imp.add_argument("--model-id", required=True, help="the model (must match its trace)")
    imp.add_argument("--n-exits", type=integer(1), required=True)
    imp.add_argument("--device", required=True, help="e.g. 'NVIDIA H200'")
    imp.add_argument("--precision", default="unknown", help="fp32, fp16, int8, ...")
    imp.add_argument("-o", "--output", type=Path, required=True, help="profile file (.json)")
    imp.set_defaults(func=cmd_import)


def _add_show(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="summarise a profile; plot latency vs batch size")
    show.add_argument("profile", help="profile file or shipped name (see `offramp profile list`)")
    show.add_argument("--plot", type=Path, help="write a PNG of latency vs batch size per stage")
    show.add_argument("--scale", choices=("log", "linear"), default="log")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=cmd_show)


def _add_list(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser("list", help="list the shipped profiles")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    cmp = sub.add_parser("compare", help="per-stage p50 difference of two profiles")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--noisy", type=number(0), default=0.10,
                     help="a stage is noisy when the 90th percentile of its relative p50 "
                     "differences exceeds this")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=cmd_compare)


def cmd_run(args: argparse.Namespace) -> int:
    from offramp.analysis.cli.progress import progress_bar
    from offramp.profiling.job import run_job

    job = ProfileJob(**{f.name: getattr(args, f.name) for f in fields(ProfileJob)})
    check_output_file(job.output, "profile file")
    label = f"{job.model or job.model_factory} {job.backend} {job.precision} {job.resolved().device}"
    with progress_bar(label, quiet=args.quiet) as bar:
        profile = run_job(job, progress=bar.advance, on_model=bar.start)
    save_profile(profile, job.output)
    sizes = job.batch_sizes()
    print(f"wrote {job.output}: {len(profile.rows)} rows, batches {sizes[0]}..{sizes[-1]}, "
          f"{profile.meta['wall_s']} s")
    _print_coverage(profile)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from offramp.profiling.imports import csv_part, merge_parts
    from offramp.profiling.trtexec import trtexec_files, trtexec_part

    if args.csv is None and args.trtexec is None:
        raise InputError("profile import", "--csv", "give --csv, --trtexec or both",
                         "e.g. --trtexec exports/ --pattern '{kind}{k}_b{batch}.json'")
    check_output_file(args.output, "profile file")
    parts = []
    if args.trtexec is not None:
        files = (trtexec_files(folder=args.trtexec, pattern=args.pattern)
                 if args.trtexec.is_dir() else trtexec_files(manifest=args.trtexec))
        parts.append(trtexec_part(files, args.model_id, args.n_exits, args.device,
                                  args.precision, args.h2d, str(args.trtexec)))
    for csv in args.csv or ():
        parts.append(csv_part(csv, args.model_id, args.n_exits, args.device,
                              precision=args.precision))
    profile = merge_parts(parts)
    save_profile(profile, args.output)
    kinds = sorted({r["kind"] for r in profile.rows})
    print(f"wrote {args.output}: {len(profile.rows)} rows ({', '.join(kinds)}), batches "
          f"{profile.meta['batches']}")
    _print_coverage(profile)
    return 0


def _print_coverage(profile) -> None:
    """Its cost models, the rows worth a second look, and which exit modes it serves (for the
    others what is missing and the fix)."""
    from offramp.profiling import summary

    for line in [*summary.calibration_lines(profile),
                 *(f"warning: {w}" for w in summary.profile_warnings(profile))]:
        print(f"  {line}")
    for mode, missing in summary.missing_by_mode(profile).items():
        if not missing:
            print(f"  exit_mode {mode}: ready")
        else:
            print(f"  exit_mode {mode}: missing {', '.join(missing)}; {summary.how_to_supply(missing)}")


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
    if args.plot:
        check_output_file(args.plot, "plot file", ".png")
    profile = resolve_profile(args.profile)
    stages = stage_summary(profile)
    if args.plot:
        from offramp.analysis.report.plots import plot_profile

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
    _print_coverage(profile)
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


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
