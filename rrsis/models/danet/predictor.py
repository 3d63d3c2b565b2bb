"""Inference wrapper for `rrsis eval` / `rrsis map task=referring method=danet`.

DANet fuses the words into every encoder stage, so unlike SAM there is no text-independent image embedding to
cache: each (image, expression) pair is one full forward. What the wrapper does batch is many expressions
for one image (one forward with the image repeated), and it owns the resize to the model's square input
size and back, so callers hand it any (3, H, W) float image already normalised with the checkpoint's stats.

The other direction is cached: one expression over many tiles (`rrsis map`) embeds the text once
(`embed_query`) and reuses the word and sentence features for every batch of tiles (`predict_tiles`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from rrsis.errors import InputError
from rrsis.models.danet.model import Danet
from rrsis.models.danet.text import load_tokenizer, tokenize


def rgb_to_input(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with the model's pixel statistics."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"danet predictor: RGB image must be (H, W, 3), got {image.shape}")
    x = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def scale_to_input(
    image: np.ndarray, valid: np.ndarray, value_max: float, mean: list[float], std: list[float]
) -> np.ndarray:
    """(3, H, W) raw scene values -> normalised model input: value_max is white (a scene-wide scale, never the
    tile's own range, so tiles agree at their borders); invalid pixels become 0, the mean colour."""
    x = np.clip(np.nan_to_num(image.astype(np.float32)) / np.float32(value_max), 0.0, 1.0)
    x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    x[:, ~valid] = 0.0
    return x


@dataclass(frozen=True)
class QueryEmbedding:
    """One expression's word features (1, L, C_t), [CLS] feature (1, C_t) and attention mask (1, L)."""

    words: torch.Tensor
    sentence: torch.Tensor
    attention_mask: torch.Tensor


class DanetPredictor:
    def __init__(
        self, model: Danet, tokenizer: PreTrainedTokenizerBase | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.model = model.to(device).eval()
        self.cfg = model.cfg
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.cfg.text_encoder)
        self.device = torch.device(device)

    @torch.no_grad()
    def embed_query(self, text: str) -> QueryEmbedding:
        ids, mask = tokenize(self.tokenizer, [text], self.cfg.max_tokens)
        ids, mask = ids.to(self.device), mask.to(self.device)
        words, sentence = self.model.text(ids, mask)
        return QueryEmbedding(words, sentence, mask)

    @torch.no_grad()
    def predict_tiles(self, images: np.ndarray, query: QueryEmbedding) -> np.ndarray:
        """P(referred) float32 (B, H, W) for normalised tiles (B, 3, H, W), all against one embedded query."""
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"danet predictor: tiles must be (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        size = (self.cfg.input_px, self.cfg.input_px)
        x = F.interpolate(x.to(self.device), size=size, mode="bilinear", align_corners=False)
        n = x.shape[0]
        out = self.model.forward_text(
            x,
            query.words.expand(n, -1, -1),
            query.sentence.expand(n, -1),
            query.attention_mask.expand(n, -1),
        )
        logits = F.interpolate(out.logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits[:, 0].float().sigmoid().cpu().numpy()  # float(): under autocast the logits are bf16

    @torch.no_grad()
    def predict(self, image: np.ndarray | torch.Tensor, expressions: list[str]) -> np.ndarray:
        """P(referred) as float32 (len(expressions), H, W) for a normalised (3, H, W) image."""
        x = torch.as_tensor(image, dtype=torch.float32)
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"danet predictor: image must be (3, H, W), got {tuple(x.shape)}")
        if not expressions:
            raise InputError("danet predictor: no expression given")
        if not torch.isfinite(x).all():
            raise InputError("danet predictor: image has NaN/inf; fill nodata before predicting")
        h, w = x.shape[-2:]
        size = (self.cfg.input_px, self.cfg.input_px)
        x = F.interpolate(x[None].to(self.device), size=size, mode="bilinear", align_corners=False)
        ids, mask = tokenize(self.tokenizer, expressions, self.cfg.max_tokens)
        out = self.model(x.expand(len(expressions), -1, -1, -1), ids.to(self.device), mask.to(self.device))
        logits = F.interpolate(out.logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits[:, 0].float().sigmoid().cpu().numpy()  # float(): under autocast the logits are bf16

    def predict_masks(self, images: list[np.ndarray], texts: list[str], threshold: float = 0.5) -> list[np.ndarray]:
        """One boolean (H, W) mask per (uint8 RGB image, expression) pair: the `rrsis eval` interface.

        The pairs go through in one forward (`eval.batch_size` of them): every image is resized to the model's
        square input anyway, so images of different sizes still stack.
        """
        if len(images) != len(texts):
            raise InputError(f"danet predictor: {len(images)} images but {len(texts)} expressions")
        if not images:
            return []
        size = (self.cfg.input_px, self.cfg.input_px)
        x = torch.cat(
            [
                F.interpolate(
                    torch.from_numpy(rgb_to_input(img, self.cfg.pixel_mean, self.cfg.pixel_std))[None].to(self.device),
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                )
                for img in images
            ]
        )
        ids, mask = tokenize(self.tokenizer, texts, self.cfg.max_tokens)
        with torch.no_grad():
            logits = self.model(x, ids.to(self.device), mask.to(self.device)).logits
        masks = []
        for i, img in enumerate(images):
            full = F.interpolate(logits[i : i + 1], size=img.shape[:2], mode="bilinear", align_corners=False)
            masks.append((full[0, 0].sigmoid() > threshold).cpu().numpy())
        return masks
