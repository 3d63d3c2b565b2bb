"""PSLG-SAM as one model (paper Fig. 2): expression -> grounding box -> CFPG point -> SAM decode -> MBO.

Stage one is `GroundingModel` (eq. 1); stage two is SAM prompted with the box F_C and the CFPG point D(x, y)
(eq. 2-3, sec. 3.2), and its mask refined by MBO (sec. 3.3). Modes follow `model.sam.mode`: "weak" keeps
SAM's decoder frozen (no mask supervision anywhere: the grounding model only ever saw boxes), "finetune"
uses a decoder trained with masks (`model.sam.decoder_checkpoint`, or a trainable decoder while training).

Batched prediction runs the grounding model once over all (image, expression) pairs, then embeds every
distinct image once (pairs that pass the same array object share its embedding) and decodes all of that
image's prompts together, as SAM's own predictor does. CFPG and MBO run per box on the CPU.

The module's state dict holds both stages (grounding.*, sam.*), so an rrsis checkpoint of it is
self-contained; building it still reads `model.sam.checkpoint` for non-tiny SAMs (see `build_sam`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from rrsis.errors import InputError
from rrsis.models.grounding.config import GroundingConfig
from rrsis.models.grounding.model import GroundingModel
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.predictor import SamTilePredictor
from rrsis.refine.cfpg import cfpg_points
from rrsis.refine.mbo import mbo_refine


@dataclass(frozen=True)
class PslgOutput:
    """One expression's result: box (image pixels, xyxy), (H, W) bool mask, and the stage scores."""

    box_xyxy: np.ndarray
    mask: np.ndarray
    box_score: float  # grounding confidence of the chosen query
    mask_score: float  # SAM's predicted IoU of the decoded mask
    cfpg_reason: str  # "ok" when a foreground point was added, else why not ("disabled" when off)
    mbo_iterations: int  # GrabCut rounds run (0 when MBO is off or skipped)

    def scores(self) -> dict[str, Any]:
        return {
            "box_score": self.box_score,
            "mask_score": self.mask_score,
            "cfpg_reason": self.cfpg_reason,
            "mbo_iterations": self.mbo_iterations,
        }


class PslgSam(nn.Module):
    """Grounding model + SAM (+ CFPG, MBO), `predict(image, text) -> (box, mask, scores)`."""

    def __init__(self, grounding: GroundingConfig, sam: SamConfig) -> None:
        super().__init__()
        self.grounding_cfg, self.sam_cfg = grounding, sam
        self.grounding = GroundingModel(grounding)
        self.sam = build_sam(sam)
        self.predictor = SamTilePredictor(
            self.sam, multimask=sam.multimask, mask_threshold=sam.mask_threshold, prompt_batch=sam.prompt_batch
        )

    def predict(self, image: np.ndarray, text: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        (out,) = self.predict_batch([image], [text])
        return out.box_xyxy, out.mask, out.scores()

    def predict_batch(self, images: list[np.ndarray], texts: list[str]) -> list[PslgOutput]:
        """One `PslgOutput` per (image, expression) pair, in order."""
        boxes, box_scores = self.grounding.predict(images, texts)
        return self.segment_boxes(images, boxes, box_scores)

    def segment_boxes(
        self, images: list[np.ndarray], boxes: np.ndarray, box_scores: np.ndarray | None = None
    ) -> list[PslgOutput]:
        """Stage two alone on given boxes (one per image entry); used by `predict_batch` and for oracle boxes."""
        if len(images) != len(boxes):
            raise InputError(f"PSLG-SAM: {len(images)} images but {len(boxes)} boxes")
        scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores, dtype=np.float64)
        groups: dict[int, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(id(img), []).append(i)
        results: list[PslgOutput | None] = [None] * len(images)
        for idx in groups.values():
            image = images[idx[0]]
            for i, out in zip(idx, self._segment_one_image(image, np.asarray(boxes)[idx], scores[idx]), strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    def _segment_one_image(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray) -> list[PslgOutput]:
        self.predictor.set_image(image)
        if self.sam_cfg.cfpg.enabled:
            points, cfpg = cfpg_points(image, boxes, self.sam_cfg.cfpg)
            reasons = [r.reason for r in cfpg]
        else:
            points, reasons = None, ["disabled"] * len(boxes)
        masks, mask_scores = self.predictor.predict(boxes, points)
        out = []
        for k, box in enumerate(boxes):
            mask, rounds = masks[k], 0
            if self.sam_cfg.mbo.enabled:
                refined = mbo_refine(image, mask, box, self.sam_cfg.mbo)
                mask, rounds = refined.mask, refined.iterations
            out.append(PslgOutput(box, mask, float(box_scores[k]), float(mask_scores[k]), reasons[k], rounds))
        return out


def build_from_model_config(cfg: Any) -> PslgSam:
    """Registry entry for `model.name: pslg_sam` (its `grounding` and `sam` sections)."""
    return PslgSam(cfg.grounding, cfg.sam)
