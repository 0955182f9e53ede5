"""``offramp traces``: train the multi-exit models, record, inspect and list exit traces."""

from __future__ import annotations

import argparse
import json
from typing import Any

from offramp.analysis.cli.options import integer, number
from offramp.common.errors import InputError
from offramp.common.machine import command_line
from offramp.common.outputs import check_output_file

MODEL_IDS = ("fmnist-resnet", "rt-minilm6")


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{s['model_id']}[/] on {s['dataset']}: {s['samples']} samples, "
                  f"{s['exits']} exits, {s['classes']} classes ({s['source']})")
    for name, sp in s["splits"].items():
        table = Table(title=f"{name} split ({sp['samples']} samples)", title_justify="left")
        for col in ("exit", "position", "accuracy", "agrees with last", "mean max-prob"):
            table.add_column(col, justify="right")
        for j in range(s["exits"]):
            table.add_row(s["exit_names"][j], f"{s['exit_positions'][j]:.3f}",
                          f"{sp['accuracy'][j]:.4f}", f"{sp['agreement_with_last'][j]:.4f}",
                          f"{sp['mean_maxprob'][j]:.4f}")
        console.print(table)
        console.print(f"  first exit correct: {sp['first_exit_correct']:.4f}   "
                      f"some exit correct: {sp['any_exit_correct']:.4f}")
        console.print(f"  oracle (earliest correct exit, else last): mean exit index "
                      f"{sp['oracle_mean_exit_index']:.3f} of 0..{s['exits'] - 1}, "
                      f"{sp['oracle_mean_depth_fraction']:.3f} of the exits, "
                      f"{sp['oracle_mean_position']:.3f} of the backbone compute")
    prov = s["meta"].get("produced_by", {})
    console.print(f"  produced by: {prov.get('command', '?')} (seed {prov.get('seed', '?')}, "
                  f"torch {prov.get('torch', '?')}, {prov.get('date', '?')}); "
                  f"synthetic: {s['meta'].get('synthetic')}")


def cmd_show(args: argparse.Namespace) -> int:
    from offramp.traces.format import load_trace
    from offramp.traces.shipped import resolve_trace
    from offramp.traces.summary import summarize

    if args.plot:
        check_output_file(args.plot, "plot file", ".png")
    trace = load_trace(resolve_trace(args.trace))
    summary = summarize(trace)
    if args.plot:
        from offramp.analysis.report.plots import plot_confidence

        summary["plot"] = str(plot_confidence(trace, args.plot))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
        if args.plot:
            print(f"wrote {summary['plot']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from offramp.traces.shipped import list_shipped

    rows = list_shipped()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<15}{'model':<15}{'dataset':<17}{'val':>6}{'test':>7}{'exits':>7}{'test acc':>10}"
    print(header)
    for r in rows:
        print(f"{r['name']:<15}{r['model']:<15}{r['dataset']:<17}{r['val_samples']:>6}"
              f"{r['test_samples']:>7}{r['exits']:>7}{r['last_exit_test_accuracy']:>10.4f}")
    print("(test acc: accuracy of the last exit, i.e. the full model, on the test split)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from offramp.traces.train import train

    kwargs: dict[str, Any] = {}
    if args.model == "rt-minilm6" and args.tune_layers is not None:
        kwargs["tune_layers"] = args.tune_layers
    elif args.tune_layers is not None:
        raise InputError(None, "--tune-layers", "only applies to rt-minilm6", "drop --tune-layers")
    out = args.output or f"{args.model}.pt"
    check_output_file(out, "checkpoint file")
    _, info = train(args.model, out, epochs=args.epochs, seed=args.seed, data_path=args.data,
                    threads=args.threads, progress=not args.quiet, dataset=args.dataset, **kwargs)
    last = info["train"]["history"][-1]["val_accuracy"]
    print(f"wrote {out} ({info['train']['wall_seconds']} s); val accuracy per exit {last}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    check_output_file(args.output, "trace file")
    if args.model_factory:
        trace = _record_own(args)
    else:
        from offramp.traces.record import record

        if not args.checkpoint:
            raise InputError("traces record", "--checkpoint", "missing",
                             "give --checkpoint, or --model-factory and --data-factory")
        trace = record(args.checkpoint, args.output, model_id=args.model, data_path=args.data,
                       batch_size=args.batch_size, threads=args.threads, dataset=args.dataset)
    acc = [round(float(a), 4) for a in trace.accuracy("test")]
    print(f"wrote {args.output}: {trace.n_samples} samples, {trace.n_exits} exits; "
          f"test accuracy per exit {acc}")
    return 0


def _list(text: str | None, what: str, cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(what, None, f"must be a comma-separated list, got {text!r}",
                         "e.g. 1,2,3,4") from None


def cmd_import(args: argparse.Namespace) -> int:
    from offramp.traces.format import save_trace
    from offramp.traces.imports import import_trace, read_outputs, trace_summary_line

    check_output_file(args.output, "trace file")
    if args.kind == "predictions":
        from offramp.traces.predictions import import_predictions

        if args.num_classes is None:
            raise InputError("traces import", "--num-classes", "missing with --kind "
                             "predictions", "give the number of classes, e.g. --num-classes 10")
        trace = import_predictions(
            args.outputs, num_classes=args.num_classes, model_id=args.model_id,
            dataset=args.dataset, val_fraction=args.val_fraction, seed=args.seed,
            exit_positions=_list(args.exit_positions, "--exit-positions", float),
            exit_names=_list(args.exit_names, "--exit-names"),
            provenance={"command": command_line()}, synthetic=args.synthetic)
        save_trace(trace, args.output)
        print(f"wrote {args.output}: {trace_summary_line(trace)}")
        return 0
    outputs, labels, split = read_outputs(args.outputs, args.labels, args.split)
    trace = import_trace(
        outputs, labels, kind=args.kind, split=split, val_fraction=args.val_fraction,
        seed=args.seed, model_id=args.model_id, dataset=args.dataset,
        exit_positions=_list(args.exit_positions, "--exit-positions", float),
        exit_names=_list(args.exit_names, "--exit-names"), source=str(args.outputs),
        provenance={"command": command_line()}, synthetic=args.synthetic)
    save_trace(trace, args.output)
    print(f"wrote {args.output}: {trace_summary_line(trace)}")
    return 0


def _record_own(args: argparse.Namespace):
    from offramp.common.factory import call_factory
    from offramp.traces.format import save_trace
    from offramp.traces.own import record_from_loaders

    if not args.data_factory:
        raise InputError("traces record", "--data-factory", "missing with --model-factory",
                         "give a function returning {'val': batches, 'test': batches}")
    if not args.dataset:
        raise InputError("traces record", "--dataset", "missing with --model-factory",
                         "name the data set")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = call_factory(args.model_factory, args.model_arg, "--model-factory", "--model-arg")
    loaders = call_factory(args.data_factory, args.data_arg, "--data-factory", "--data-arg")
    trace = record_from_loaders(model, loaders, model_id=args.model_id, dataset=args.dataset,
                                source=args.data_factory,
                                provenance={"command": command_line(),
                                            "model_factory": args.model_factory,
                                            "model_args": list(args.model_arg),
                                            "data_factory": args.data_factory,
                                            "data_args": list(args.data_arg)})
    save_trace(trace, args.output)
    return trace


def register(subparsers: Any) -> None:
    """Add the ``traces`` command group."""
    group = subparsers.add_parser("traces", help="train models, record and inspect exit traces")
    sub = group.add_subparsers(dest="traces_command", required=True, metavar="ACTION")
    _add_train(sub)
    _add_record(sub)
    _add_import(sub)
    _add_show(sub)
    _add_list(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a multi-exit model on CPU and write a checkpoint")
    p.add_argument("--model", required=True, choices=MODEL_IDS)
    p.add_argument("--epochs", type=integer(1), default=None, help="default: 15 (CNN), 4 (MiniLM)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("-o", "--output", default=None, help="checkpoint path (default: MODEL.pt)")
    p.add_argument("--tune-layers", type=integer(0), default=None,
                   help="rt-minilm6: fine-tune this many top layers, freeze the rest (default 2)")
    p.add_argument("--dataset", default=None, choices=("fashion-mnist", "fashion-mnist-c",
                                                      "rotten-tomatoes"),
                   help="fmnist-resnet: fashion-mnist (default) or fashion-mnist-c (corrupted "
                   "val/test, the same corruptions drawn afresh on train each epoch)")
    p.add_argument("--data", default=None, help="dataset folder/file (default: installed package)")
    p.add_argument("--threads", type=integer(1), default=None, help="torch threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record a trace (val + test) from a checkpoint")
    p.add_argument("--model", default=None, choices=MODEL_IDS, help="check the checkpoint is this")
    p.add_argument("--checkpoint", help="a checkpoint of a shipped model (traces train)")
    p.add_argument("--model-factory", metavar="MODULE:FUNCTION", help="or: your own multi-exit "
                   "model (offramp.traces.own has the protocol), built by this function")
    p.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="an argument of the model factory (repeatable)")
    p.add_argument("--data-factory", metavar="MODULE:FUNCTION", help="with --model-factory: "
                   "returns {'val': batches, 'test': batches} of (inputs, labels)")
    p.add_argument("--data-arg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--model-id", default=None, help="with --model-factory (else model.model_id)")
    p.add_argument("--dataset", default=None, help="with --model-factory: the data set's name; "
                   "else the dataset to record on (default: the one the checkpoint was trained on)")
    p.add_argument("-o", "--output", required=True, help="trace file (.npz)")
    p.add_argument("--data", default=None, help="dataset folder/file (default: installed package)")
    p.add_argument("--batch-size", type=integer(1), default=256)
    p.add_argument("--threads", type=integer(1), default=None)
    p.set_defaults(func=cmd_record)


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="a trace from your own model's per-exit outputs",
                       description="Build a validated trace from per-exit logits or "
                       "probabilities (N, K, C) of your own multi-exit model: .npz (outputs, "
                       "labels, optional split), .npy (with --labels), or Parquet (one row per "
                       "sample: outputs, label, optional split). docs/traces.md has the format.")
    p.add_argument("outputs", help=".npz / .npy / .parquet of per-exit outputs (N, K, C)")
    p.add_argument("--kind", choices=("logits", "probs", "predictions"), default="logits",
                   help="predictions: a table (CSV/Parquet), one row per sample and exit: "
                   "sample, exit, pred, confidence, label, [entropy], [split]")
    p.add_argument("--num-classes", type=integer(2), default=None,
                   help="with --kind predictions: the number of classes")
    p.add_argument("--labels", default=None, help=".npy of labels (N,) (for .npy outputs)")
    p.add_argument("--split", default=None, help=".npy of 0 (val) / 1 (test) per sample")
    p.add_argument("--val-fraction", type=number(0, 1), default=None,
                   help="or: draw this fraction of the samples as val (the rest test)")
    p.add_argument("--seed", type=integer(0), default=0, help="seed of that draw")
    p.add_argument("--model-id", required=True, help="your model's name (profiles must match it)")
    p.add_argument("--dataset", required=True, help="the data set the outputs come from")
    p.add_argument("--exit-positions", default=None, help="where each exit sits, e.g. 2,4,6,8 "
                   "(layers or blocks; default 1..K)")
    p.add_argument("--exit-names", default=None, help="comma-separated names (default exit0..)")
    p.add_argument("--synthetic", action="store_true", help="the outputs are not a real model's "
                   "on real data: label the trace synthetic (meta.synthetic)")
    p.add_argument("-o", "--output", required=True, help="trace file (.npz)")
    p.set_defaults(func=cmd_import)


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="per-exit accuracy, agreement and oracle depth of a trace")
    p.add_argument("trace", metavar="FILE|NAME", help="a trace file or a shipped trace name")
    p.add_argument("--plot", default=None, metavar="PNG", help="write confidence histograms")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="the shipped traces")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

