"""Splitting a multi-exit model into segments and heads, and the ONNX export of the pieces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from offramp.profiling.segments import (
    OnnxMismatch,
    check_onnx,
    export_onnx,
    flatten,
    run_onnx_exits,
    split_model,
    unflatten,
)
from offramp.traces.models import FmnistResNet, minilm_available

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to check the ONNX pieces")


def tiny_cnn() -> FmnistResNet:
    torch.manual_seed(0)
    model = FmnistResNet(widths=(8, 16, 16), strides=(1, 2, 2))
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class TupleSegment(nn.Module):
    """Maps (hidden, mask) to (hidden', mask), like a transformer layer."""

    def __init__(self, dim: int, first: bool = False):
        super().__init__()
        self.first = first
        self.lin = nn.Linear(dim, dim)

    def forward(self, x):
        h, mask = x
        if self.first:
            h = h.float()
        return torch.tanh(self.lin(h)) * mask.unsqueeze(-1).to(h.dtype), mask


class MeanHead(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        h, mask = x
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.fc((h * m).sum(1) / m.sum(1).clamp(min=1.0))


class TupleNet(nn.Module):
    """A 3-exit model whose activation is a (hidden, mask) tuple, like MiniLM."""

    model_id = "tuple-net"

    def __init__(self, dim: int = 8, classes: int = 3):
        super().__init__()
        torch.manual_seed(1)
        self.segments = nn.ModuleList([TupleSegment(dim, first=True), TupleSegment(dim),
                                       TupleSegment(dim)])
        self.heads = nn.ModuleList([MeanHead(dim, classes) for _ in range(3)])

    def forward_exits(self, x):
        out = []
        for seg, head in zip(self.segments, self.heads, strict=True):
            x = seg(x)
            out.append(head(x))
        return out

    def example_input(self, b: int, seq: int = 5):
        g = torch.Generator().manual_seed(b)
        mask = torch.ones(b, seq, dtype=torch.long)
        mask[:, -2:] = (torch.rand(b, 2, generator=g) > 0.5).long()
        return torch.randn(b, seq, 8, generator=g), mask


def test_split_order_and_composition_is_exact():
    model = tiny_cnn()
    x = model.example_input(3)
    pieces = split_model(model, x)
    assert [(p.kind, p.k) for p in pieces] == [("segment", 0), ("head", 0), ("segment", 1),
                                                ("head", 1), ("segment", 2), ("head", 2)]
    act, exits = (x,), []
    with torch.no_grad():
        for p in pieces:
            out = p.module(*act)
            if p.kind == "segment":
                act = out
            else:
                exits.append(out[0])
        ref = model.forward_exits(x)
    for got, want in zip(exits, ref, strict=True):
        assert torch.equal(got, want)


def test_split_leaves_the_model_in_eval_mode():
    model = tiny_cnn()
    split_model(model, model.example_input(2))
    assert not any(m.training for m in model.modules())


def test_onnx_pieces_compose_to_the_model_at_other_batch_sizes(tmp_path):
    model = tiny_cnn()
    pieces = export_onnx(model, model.example_input(2), tmp_path)
    assert sorted(p.path.name for p in pieces) == sorted(
        f"{kind}{k}.onnx" for kind in ("segment", "head") for k in range(3))
    for b in (1, 5):  # exported at batch 2: the batch axis is dynamic
        check = check_onnx(model, pieces, model.example_input(b), atol=1e-4, rtol=1e-4)
        assert check.ok and len(check.max_abs_diff) == 3
        assert max(check.max_abs_diff) < 1e-4
    assert not any(m.training for m in model.modules())


def test_onnx_tuple_activations(tmp_path):
    model = TupleNet().eval()
    pieces = export_onnx(model, model.example_input(2), tmp_path)
    assert pieces[0].input_names == ("in0", "in1") and pieces[0].output_names == ("out0", "out1")
    assert check_onnx(model, pieces, model.example_input(4)).ok


def test_onnx_check_catches_a_mismatch(tmp_path):
    model = tiny_cnn()
    pieces = export_onnx(model, model.example_input(2), tmp_path)
    with torch.no_grad():
        model.heads[1].fc.bias += 1.0
    with pytest.raises(OnnxMismatch, match="differs from PyTorch"):
        check_onnx(model, pieces, model.example_input(2))
    assert not check_onnx(model, pieces, model.example_input(2), strict=False).ok
    assert len(run_onnx_exits(pieces, model.example_input(2))) == 3


def test_flatten_roundtrip_and_bad_activation():
    t = torch.zeros(2, 3)
    assert unflatten(flatten(t), None) is t
    pair = (t, t.long())
    assert unflatten(flatten(pair), 2) == pair
    with pytest.raises(TypeError, match="tensor or a tuple"):
        flatten({"h": t})


@pytest.mark.skipif(not minilm_available(), reason="MiniLM weights/transformers not installed")
def test_minilm_onnx_matches(tmp_path):
    from offramp.traces.models import MiniLMExits

    torch.manual_seed(0)
    model = MiniLMExits(pretrained=False).eval()
    pieces = export_onnx(model, model.example_input(2, seq_len=16), tmp_path)
    check = check_onnx(model, pieces, model.example_input(3, seq_len=16))
    assert check.ok and len(check.max_abs_diff) == 6
