"""The two encoders of the grounding model: a torchvision ResNet (C4, C5 maps) and a BERT-family text model.

Weights come only from what the user supplies: a torchvision ResNet state dict file, and a local
transformers model directory (default: the offline all-MiniLM-L6-v2 package). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from rrsis.errors import CheckpointError, ModelError
from rrsis.models.text_path import resolve_text_encoder


def _resnet(name: str) -> ResNet:
    if name == "resnet50":
        return resnet50(weights=None)
    if name == "resnet18":
        return resnet18(weights=None)
    if name == "tiny":
        return ResNet(BasicBlock, [1, 1, 1, 1])  # the real class, one block per stage
    raise ModelError(f"model.grounding.image_encoder {name!r}; allowed: resnet50, resnet18, tiny")


class ResNetEncoder(nn.Module):
    """ResNet stem + 4 stages; returns the stride-16 (C4) and stride-32 (C5) feature maps.

    BatchNorm keeps its running statistics in training too (DETR/TransVG freeze them): grounding trains
    with batches of 2, far too small for batch statistics.
    """

    def __init__(self, name: str, weights: str = "none") -> None:
        super().__init__()
        net = _resnet(name)
        if weights and weights != "none":
            load_resnet_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.channels = (256 * expansion, 512 * expansion)

    def train(self, mode: bool = True) -> ResNetEncoder:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.layer2(self.layer1(self.stem(x)))
        c4 = self.layer3(c3)
        return c4, self.layer4(c4)


def load_resnet_weights(net: ResNet, path: str) -> None:
    """A torchvision ResNet state dict (e.g. resnet50-11ad3fa6.pth) loaded strictly, weights_only."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model.grounding.image_weights {path!r}: no such file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise CheckpointError(f"model.grounding.image_weights {path!r} cannot be read: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"model.grounding.image_weights {path!r} is not a state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"model.grounding.image_weights {path!r} does not fit the ResNet: {first}") from exc


def text_encoder_path(path: str) -> str:
    """An empty path means the offline all-MiniLM-L6-v2 package."""
    return resolve_text_encoder(path, "model.grounding.text_encoder")


class TextEncoder(nn.Module):
    """A transformers `AutoModel` (BERT family) and its tokenizer; word features (B, L, C_t)."""

    def __init__(self, path: str = "", max_tokens: int = 40, trainable: bool = True) -> None:
        super().__init__()
        resolved = text_encoder_path(path)
        try:
            self.bert = AutoModel.from_pretrained(resolved, local_files_only=True)
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(resolved, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model.grounding.text_encoder: cannot load {resolved}: {exc}") from exc
        self.dim = int(self.bert.config.hidden_size)
        self.max_tokens = max_tokens
        self.bert.requires_grad_(trainable)

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the longest expression, truncate at `max_tokens`: (input_ids, attention_mask)."""
        enc = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` including [CLS]/[SEP], untruncated (to refuse over-long queries up front)."""
        return len(self.tokenizer(text, truncation=False)["input_ids"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state  # type: ignore[no-any-return]
