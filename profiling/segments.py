"""Split a multi-exit model at its exits into segments and heads; export and check them as ONNX.

A model (see ``offramp.traces.models.MultiExitNet``) has ``segments`` and ``heads``; an
activation is a tensor or a tuple of tensors (MiniLM: ``(hidden, attention_mask)``). Each piece
is wrapped so it takes and returns a flat tuple of tensors, exported with a dynamic batch axis,
and the exported pieces run one after another in ONNX Runtime (CPU) must give the PyTorch
model's per-exit outputs. Imports torch and the standard library only (onnxruntime lazily).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from offramp.core.modes import StageKind
from offramp.traces.own import forward_exits

OPSET = 17


def flatten(act: Any) -> tuple[Tensor, ...]:
    """An activation (tensor or tuple of tensors) as a flat tuple of tensors."""
    if isinstance(act, Tensor):
        return (act,)
    if isinstance(act, (tuple, list)) and all(isinstance(t, Tensor) for t in act):
        return tuple(act)
    raise TypeError(f"an activation must be a tensor or a tuple of tensors, got {type(act)!r}")


def unflatten(tensors: Sequence[Tensor], arity: int | None) -> Any:
    """Inverse of :func:`flatten`: ``arity`` None means a single tensor, else a tuple of n."""
    return tensors[0] if arity is None else tuple(tensors)


def arity_of(act: Any) -> int | None:
    """The structure :func:`unflatten` needs to rebuild ``act``."""
    return None if isinstance(act, Tensor) else len(flatten(act))


class FlatPiece(nn.Module):
    """A segment or head taking and returning flat tuples of tensors (what ONNX exports)."""

    def __init__(self, module: nn.Module, in_arity: int | None):
        super().__init__()
        self.module = module
        self.in_arity = in_arity
        self.train(module.training)  # export restores this mode on the wrapped module too

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        return flatten(self.module(unflatten(tensors, self.in_arity)))


@dataclass(frozen=True)
class Piece:
    """One segment or head of a split model, with an example input (flat) and I/O names."""

    kind: StageKind  # SEGMENT or HEAD
    k: int
    module: FlatPiece
    example: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.kind}{self.k}"


def split_model(model: nn.Module, example: Any) -> list[Piece]:
    """Segments and heads of ``model`` in execution order (segment 0, head 0, segment 1, ...).

    ``example`` is a raw input batch; it is run through the segments to get each piece's input.
    """
    model.eval()
    segments, heads = list(model.segments), list(model.heads)
    if not segments or len(segments) != len(heads):
        raise ValueError(f"model needs K >= 1 segments and K heads, got {len(segments)} segments "
                         f"and {len(heads)} heads")
    pieces: list[Piece] = []
    act = example
    with torch.no_grad():
        for k, (seg, head) in enumerate(zip(segments, heads, strict=True)):
            out = seg(act)
            seg_in, seg_out = flatten(act), flatten(out)
            pieces.append(Piece(StageKind.SEGMENT, k, FlatPiece(seg, arity_of(act)), seg_in,
                                _names("in", len(seg_in)), _names("out", len(seg_out))))
            logits = flatten(head(out))
            pieces.append(Piece(StageKind.HEAD, k, FlatPiece(head, arity_of(out)), seg_out,
                                _names("in", len(seg_out)), _names("logits", len(logits))))
            act = out
    return pieces


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


@dataclass(frozen=True)
class OnnxPiece:
    """An exported piece: where its ONNX file is and what its inputs and outputs are called."""

    kind: StageKind
    k: int
    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def export_onnx(model: nn.Module, example: Any, folder: str | Path,
                opset: int = OPSET) -> list[OnnxPiece]:
    """Export every segment and head of ``model`` to ``folder/{segment,head}K.onnx``.

    The batch axis (dim 0) of every input and output is dynamic; other dims are fixed by the
    example (e.g. the sequence length of a transformer).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for piece in split_model(model, example):
        path = folder / f"{piece.name}.onnx"
        axes = {n: {0: "batch"} for n in piece.input_names + piece.output_names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(piece.module, piece.example, str(path), dynamo=False,
                              input_names=list(piece.input_names),
                              output_names=list(piece.output_names), dynamic_axes=axes,
                              opset_version=opset, do_constant_folding=True)
        out.append(OnnxPiece(piece.kind, piece.k, path, piece.input_names, piece.output_names))
    return out


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for one exported piece."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx_exits(pieces: Sequence[OnnxPiece], example: Any,
                   sessions: Sequence[Any] | None = None) -> list[Any]:
    """Per-exit logits (numpy) of the exported pieces composed: segment k feeds head k and k+1."""
    sessions = sessions or [ort_session(p.path) for p in pieces]
    act = [t.detach().cpu().numpy() for t in flatten(example)]
    exits = []
    for piece, sess in zip(pieces, sessions, strict=True):
        outs = sess.run(list(piece.output_names), dict(zip(piece.input_names, act, strict=True)))
        if piece.kind is StageKind.SEGMENT:
            act = outs
        else:
            exits.append(outs[0])
    return exits


@dataclass(frozen=True)
class OnnxCheck:
    """Per-exit largest absolute difference between ONNX Runtime and PyTorch logits."""

    max_abs_diff: list[float]
    atol: float
    rtol: float
    ok: bool


class OnnxMismatch(RuntimeError):
    """The exported pieces do not reproduce the PyTorch model's per-exit outputs."""


def check_onnx(model: nn.Module, pieces: Sequence[OnnxPiece], example: Any,
               atol: float = 1e-4, rtol: float = 1e-3, strict: bool = True) -> OnnxCheck:
    """Compare the composed ONNX pieces with ``model.forward_exits`` on ``example``.

    Raises :class:`OnnxMismatch` (with ``strict``) when any exit differs by more than
    ``atol + rtol * |reference|``.
    """
    with torch.inference_mode():
        ref = [t.detach().cpu().float() for t in forward_exits(model, example)]
    got = [torch.from_numpy(a).float() for a in run_onnx_exits(pieces, example)]
    if len(got) != len(ref):
        raise OnnxMismatch(f"ONNX pieces give {len(got)} exits, the model {len(ref)}")
    diffs, ok = [], True
    for r, g in zip(ref, got, strict=True):
        if r.shape != g.shape:
            raise OnnxMismatch(f"exit shape {tuple(g.shape)} != PyTorch {tuple(r.shape)}")
        diffs.append(float((r - g).abs().max()))
        ok &= bool(torch.allclose(g, r, atol=atol, rtol=rtol))
    result = OnnxCheck(diffs, atol, rtol, ok)
    if strict and not ok:
        raise OnnxMismatch(f"ONNX Runtime differs from PyTorch beyond atol={atol}, rtol={rtol}: "
                           f"max |diff| per exit {[f'{d:.2e}' for d in diffs]}")
    return result
