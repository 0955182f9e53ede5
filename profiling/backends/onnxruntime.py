"""``onnxruntime``: the exported ONNX pieces run by ONNX Runtime on the CPU (fp32).

The pieces are exported with :func:`offramp.profiling.segments.export_onnx` (into ``workdir``
or a temporary folder) and checked against the PyTorch model before anything is timed.
Activations are lists of numpy arrays; compaction is ``numpy.take`` along the batch axis.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..segments import check_onnx, export_onnx, flatten, ort_session
from .base import EXIT_THRESHOLD, Backend, Call


def exit_check_np(logits: np.ndarray, threshold: float = EXIT_THRESHOLD) -> np.ndarray:
    """Max-softmax vs threshold; the indices of the samples that go on."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    conf = z.max(axis=-1) / z.sum(axis=-1)
    return np.flatnonzero(conf < threshold)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime CPU sessions, one per segment and head, with torch's thread count."""

    name = "onnxruntime"
    devices = ("cpu",)

    def setup(self, example: Any, batches: Sequence[int]) -> None:
        import onnxruntime

        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="offramp-onnx-")
            folder = Path(self._tmp.name)
        else:
            folder = self.workdir
        pieces = export_onnx(self.model, example, folder)
        self.check = check_onnx(self.model, pieces, example)
        threads = torch.get_num_threads()
        self._pieces = {(p.kind, p.k): p for p in pieces}
        self._sessions = {(p.kind, p.k): ort_session(p.path, threads) for p in pieces}
        self._version = onnxruntime.__version__

    def _call(self, kind: str, k: int, inputs: Sequence[np.ndarray]) -> Call:
        piece, sess = self._pieces[kind, k], self._sessions[kind, k]
        feed = dict(zip(piece.input_names, inputs, strict=True))
        names = list(piece.output_names)
        return lambda: sess.run(names, feed)

    def activations(self, x: Any) -> list[Any]:
        acts = [[t.detach().cpu().numpy() for t in flatten(x)]]
        for k in range(self.n_exits):
            acts.append(self._call("segment", k, acts[-1])())
        return acts

    def segment(self, k: int, x: Any) -> Call:
        return self._call("segment", k, x)

    def head(self, k: int, act: Any) -> Call:
        return self._call("head", k, act)

    def logits(self, act: Any, k: int) -> Any:
        return self._call("head", k, act)()[0]

    def compact(self, k: int, act: Any, index: Sequence[int]) -> Call:
        idx = np.asarray(index, dtype=np.int64)
        return lambda: [np.take(a, idx, axis=0) for a in act]

    def overhead(self, logits: Any) -> Call:
        return lambda: exit_check_np(logits)

    def software(self) -> dict[str, str]:
        return {"onnxruntime": self._version}

    def describe(self) -> dict[str, Any]:
        return {"onnx_check_max_abs_diff": self.check.max_abs_diff,
                "onnxruntime_threads": torch.get_num_threads()}
