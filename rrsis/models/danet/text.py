"""BERT-family language encoder: word features L_c for fusion and the [CLS] token L_g for EAAS/RAAM."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from rrsis.errors import ModelError
from rrsis.models.text_path import resolve_text_encoder


def text_encoder_path(path: str) -> str:
    """An empty path means the offline all-MiniLM-L6-v2 package."""
    return resolve_text_encoder(path, "model.danet.text_encoder")


def load_tokenizer(path: str = "") -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(text_encoder_path(path), local_files_only=True)


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad/truncate to a fixed length (LAVT uses 20) so batches stack; returns (input_ids, attention_mask)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


class TextEncoder(nn.Module):
    """Wraps `AutoModel`; `forward` returns word features (B, L, C_t) and the [CLS] feature (B, C_t)."""

    def __init__(self, path: str = "", trainable: bool = True) -> None:
        super().__init__()
        resolved = text_encoder_path(path)
        try:
            self.bert = AutoModel.from_pretrained(resolved, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model.danet.text_encoder: cannot load {resolved}: {exc}") from exc
        self.dim: int = int(self.bert.config.hidden_size)
        self.trainable = trainable
        if not trainable:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        """A frozen encoder stays in eval mode: no dropout noise on features nothing can adapt to."""
        super().train(mode and self.trainable)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return words, words[:, 0]
