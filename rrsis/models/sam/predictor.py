"""SAM with explicit phases, as SAM's own predictor: embed a tile once, then prompt it many times.

`set_image` runs the (frozen) image encoder once and caches the embedding; `predict` decodes any number
of box / point prompts against it in batches of `prompt_batch`. Prompts arrive in tile pixel coordinates
and are mapped into SAM's input frame by `SamFrame`; masks come back at tile resolution. `precision`
(fp32 | bf16 | fp16 | auto, see `rrsis.models.precision`) applies to the image encoder only, under autocast:
the weights stay fp32, the embedding is returned in fp32 and the prompt encoder and mask decoder run in fp32.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch
from PIL import Image

from rrsis.errors import InputError
from rrsis.models.precision import autocast_for, resolve_precision
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.frame import SamFrame
from rrsis.models.sam.modeling import Sam

NO_POINT_LABEL = -1  # SAM's "not a point" label: a prompt row without a point (e.g. CFPG found none)


def resize_to_frame(image: np.ndarray, frame: SamFrame) -> np.ndarray:
    """An (H, W, 3) uint8 tile resized to `frame.resized_hw` as segment-anything's `ResizeLongestSide.apply_image`
    does it (PIL bilinear through torchvision's PIL path; PIL antialiases when shrinking), without importing
    torchvision; always a new, writable array (a tile from Ray's object store is read-only)."""
    height, width = frame.resized_hw
    if (height, width) == image.shape[:2]:
        return np.array(image)  # PIL's resize to the same size is a copy too
    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


class SamTilePredictor:
    """Embed-once / prompt-many SAM inference on one tile at a time."""

    def __init__(
        self,
        sam: Sam,
        multimask: bool = False,
        mask_threshold: float = 0.0,
        prompt_batch: int = 64,
        precision: str | None = "fp32",
    ) -> None:
        self.sam = sam
        self.precision = resolve_precision(precision, self.device)  # None / "auto": bf16 where native
        self.multimask = multimask
        self.mask_threshold = mask_threshold
        self.prompt_batch = prompt_batch
        self.input_size_px = int(sam.image_encoder.img_size)
        self.embed_count = 0  # image-encoder runs; lets callers and tests see the cache work
        self._embedding: torch.Tensor | None = None
        self._frame: SamFrame | None = None
        self._key: Hashable | None = None

    @classmethod
    def from_config(
        cls,
        cfg: SamConfig,
        checkpoint_path: str | None = None,
        decoder_checkpoint_path: str | None = None,
        device: str = "cpu",
        precision: str | None = None,
    ) -> SamTilePredictor:
        """A predictor from its config; `precision` None takes `cfg.precision`."""
        sam = build_sam(cfg, checkpoint_path, decoder_checkpoint_path).to(device)
        return cls(
            sam,
            multimask=cfg.multimask,
            mask_threshold=cfg.mask_threshold,
            prompt_batch=cfg.prompt_batch,
            precision=cfg.precision if precision is None else precision,
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device  # type: ignore[no-any-return]

    @property
    def frame(self) -> SamFrame:
        if self._frame is None:
            raise InputError("SAM predictor: call set_image(tile) before predict")
        return self._frame

    @property
    def embedding(self) -> torch.Tensor:
        if self._embedding is None:
            raise InputError("SAM predictor: call set_image(tile) before predict")
        return self._embedding

    def embed(self, image: np.ndarray) -> tuple[torch.Tensor, SamFrame]:
        """Run the frozen image encoder on an (H, W, 3) uint8 RGB tile (no caching; training uses this)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"SAM needs an (H, W, 3) uint8 RGB tile, got shape {image.shape} dtype {image.dtype}")
        if min(image.shape[:2]) < 1:
            raise InputError(f"SAM got an empty tile of shape {image.shape}")
        frame = SamFrame(image.shape[0], image.shape[1], self.input_size_px)
        resized = resize_to_frame(image, frame)  # to the frame's size, so prompts land on their pixels
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
        with torch.no_grad():
            pixels = self.sam.preprocess(x)[None]
            with autocast_for(self.precision, self.device):
                embedding = self.sam.image_encoder(pixels)
        self.embed_count += 1
        return embedding.float(), frame

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> None:
        """Embed a tile and cache it for `predict`; with a `key` equal to the cached one, reuse it."""
        if key is not None and key == self._key and self._embedding is not None:
            return
        self._embedding, self._frame = self.embed(image)
        self._key = key

    def prompt_tensors(
        self,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
        frame: SamFrame | None = None,
    ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """Tile-frame prompts -> SAM input-frame tensors. Points are (N, 2) or (N, K, 2); NaN = no point."""
        frame, dev = frame or self.frame, self.device
        box_t = None
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            box_t = torch.as_tensor(frame.boxes_to_model(b), dtype=torch.float32, device=dev)
        pts_t = None
        if points is not None:
            p = np.asarray(points, dtype=np.float64)
            p = p[:, None, :] if p.ndim == 2 else p
            labels = np.ones(p.shape[:2]) if point_labels is None else np.asarray(point_labels, dtype=np.float64)
            labels = labels.reshape(p.shape[:2]).copy()
            missing = np.asarray(np.isnan(p).any(axis=-1), dtype=bool)
            labels[missing] = NO_POINT_LABEL
            p = np.where(missing[..., None], 0.0, p)
            coords = torch.as_tensor(frame.points_to_model(p), dtype=torch.float32, device=dev)
            pts_t = (coords, torch.as_tensor(labels, dtype=torch.int64, device=dev))
        return box_t, pts_t

    def decode(
        self,
        embedding: torch.Tensor,
        boxes: torch.Tensor | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        multimask: bool,
        decoder: torch.nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits (N, C, h, w) and IoU scores (N, C); differentiable through the decoder.

        `decoder` replaces `sam.mask_decoder` for the call, e.g. the DDP-wrapped copy Ray Train prepares.
        """
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res, iou = (decoder or self.sam.mask_decoder)(
            image_embeddings=embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, iou

    def to_tile_logits(self, low_res: torch.Tensor, frame: SamFrame | None = None) -> torch.Tensor:
        """Upsample low-res logits to the tile: unpad SAM's frame, resize to (H, W)."""
        frame = frame or self.frame
        return self.sam.postprocess_masks(low_res, frame.resized_hw, (frame.height_px, frame.width_px))

    def predict(
        self,
        boxes: np.ndarray | None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        multimask: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) scores; with multimask, the best-scored of SAM's 3 masks."""
        n = len(boxes) if boxes is not None else (len(points) if points is not None else 0)
        frame = self.frame
        masks = np.zeros((n, frame.height_px, frame.width_px), dtype=bool)
        scores = np.zeros(n, dtype=np.float32)
        multi = self.multimask if multimask is None else multimask
        for start in range(0, n, self.prompt_batch):
            sl = slice(start, start + self.prompt_batch)
            box_t, pts_t = self.prompt_tensors(
                None if boxes is None else np.asarray(boxes)[sl],
                None if points is None else np.asarray(points)[sl],
                None if point_labels is None else np.asarray(point_labels)[sl],
            )
            with torch.no_grad():
                low_res, iou = self.decode(self.embedding, box_t, pts_t, multi)
                best = iou.argmax(dim=1)
                rows = torch.arange(len(best), device=best.device)
                logits = self.to_tile_logits(low_res[rows, best][:, None])[:, 0]
            masks[sl] = (logits > self.mask_threshold).cpu().numpy()
            scores[sl] = iou[rows, best].float().cpu().numpy()
        return masks, scores
