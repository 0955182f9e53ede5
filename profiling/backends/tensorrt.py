"""``tensorrt``: a TensorRT 10 engine per segment and head, built from the exported ONNX pieces.

Batch sizes come from optimization profiles: one profile per power-of-two bucket of the measured
sizes (1, 2, 3-4, 5-8, ..., 129-256), tuned for the bucket's largest size; a batch of b runs
with its exact shape under its bucket's profile. Engine I/O stays fp32 (int64 for token ids);
``--precision fp16`` lets TensorRT pick fp16 kernels inside. Buffers are torch CUDA tensors and
runs are ``execute_async_v3`` on torch's current stream. Imports ``tensorrt`` lazily.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from offramp.traces.own import forward_exits

from ..segments import OnnxPiece, export_onnx, flatten
from .base import Call
from .torch_common import TorchBackend

WORKSPACE_BYTES = 4 << 30


def buckets(batches: Sequence[int]) -> list[tuple[int, int]]:
    """Power-of-two (lo, hi) ranges covering ``batches``: (1,1), (2,2), (3,4), (5,8), ..."""
    top = max(batches)
    out, lo, hi = [], 1, 1
    while lo <= top:
        out.append((lo, hi))
        lo, hi = hi + 1, hi * 2
    return [(lo, hi) for lo, hi in out if any(lo <= b <= hi for b in batches)]


class TensorRTBackend(TorchBackend):
    """TensorRT engines, one per piece, with one optimization profile per batch-size bucket."""

    name = "tensorrt"
    devices = ("cuda",)
    precisions = ("fp32", "fp16")
    torch_precision = "fp32"

    def setup(self, example: Any, batches: Sequence[int]) -> None:
        import tensorrt as trt

        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="offramp-trt-")
            folder = Path(self._tmp.name)
        else:
            folder = self.workdir
        self.buckets = buckets(batches)
        pieces = export_onnx(self.model, self.place(example), folder)
        self._pieces = {(p.kind, p.k): p for p in pieces}
        self._engines = {key: self._build(p) for key, p in self._pieces.items()}
        self._contexts = {key: e.create_execution_context() for key, e in self._engines.items()}
        self.check = self._check(example)

    def _build(self, piece: OnnxPiece) -> Any:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(piece.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {piece.path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        for lo, hi in self.buckets:
            profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):
                tensor = network.get_input(i)
                rest = tuple(tensor.shape)[1:]
                profile.set_shape(tensor.name, (lo, *rest), (hi, *rest), (hi, *rest))
            config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise RuntimeError(f"TensorRT could not build an engine from {piece.path}")
        return trt.Runtime(self.logger).deserialize_cuda_engine(blob)

    def _bucket(self, b: int) -> int:
        for i, (lo, hi) in enumerate(self.buckets):
            if lo <= b <= hi:
                return i
        raise ValueError(f"batch size {b} is outside the engines' profiles {self.buckets}")

    def _torch_dtype(self, trt_dtype: Any) -> torch.dtype:
        trt = self.trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                 trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                 trt.DataType.BOOL: torch.bool, trt.DataType.INT8: torch.int8}
        return table[trt_dtype]

    def _call(self, kind: str, k: int, x: Any) -> tuple[Call, list[torch.Tensor]]:
        piece, engine = self._pieces[kind, k], self._engines[kind, k]
        ctx = self._contexts[kind, k]
        inputs = [t.to(self._torch_dtype(engine.get_tensor_dtype(name))).contiguous()
                  for name, t in zip(piece.input_names, flatten(x), strict=True)]
        stream = torch.cuda.current_stream().cuda_stream
        ctx.set_optimization_profile_async(self._bucket(inputs[0].shape[0]), stream)
        for name, t in zip(piece.input_names, inputs, strict=True):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outputs = []
        for name in piece.output_names:
            out = torch.empty(tuple(ctx.get_tensor_shape(name)), device="cuda",
                              dtype=self._torch_dtype(engine.get_tensor_dtype(name)))
            ctx.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        keep = (inputs, outputs)
        return (lambda: (ctx.execute_async_v3(stream), keep)), outputs

    def segment(self, k: int, x: Any) -> Call:
        return self._call("segment", k, x)[0]

    def head(self, k: int, act: Any) -> Call:
        return self._call("head", k, act)[0]

    def _check(self, example: Any) -> list[float]:
        """Per-exit max |TensorRT - PyTorch| of the logits, the engines composed on ``example``."""
        x = self.place(example)
        with torch.inference_mode():
            ref = forward_exits(self.model, x)
        act, diffs = x, []
        for k in range(self.n_exits):
            run, outs = self._call("segment", k, act)
            run()
            act = tuple(outs)
            run, logits = self._call("head", k, act)
            run()
            torch.cuda.synchronize()
            diffs.append(float((logits[0].float() - ref[k].float()).abs().max()))
        return diffs

    def software(self) -> dict[str, str]:
        return {**super().software(), "tensorrt": str(self.trt.__version__)}

    def describe(self) -> dict[str, Any]:
        return {"optimization_profiles": [list(b) for b in self.buckets],
                "profile_opt": "largest size of each bucket", "engine_io": "fp32 / int64",
                "trt_check_max_abs_diff": self.check}
