"""Referring segmentation and grounding metrics, computed as the LAVT / RMSIN evaluation scripts do.

Per expression: I = |pred ∧ gt|, U = |pred ∨ gt| (binary masks), IoU = I / U, and IoU = 0 when U = 0
(LAVT's `if U == 0: this_iou = 0.0`, so an empty prediction of an empty target counts as a miss — we keep
their convention so numbers are comparable to the published tables). Over a split:

- mIoU = mean of the per-expression IoUs (LAVT/RMSIN; the PSLG-SAM paper's text calls the mean over
  categories "mIoU" — that one is reported separately as `category_miou`);
- oIoU = Σ I / Σ U (cumulative intersection over cumulative union);
- Pr@X = fraction of expressions with IoU ≥ X for X in 0.5 … 0.9 (LAVT's `this_iou >= eval_seg_iou`).

Boxes (grounding): IoU of xyxy boxes, Acc@0.5 = fraction with box IoU ≥ 0.5 (TransVG's rule), mean box IoU.
All values are fractions in [0, 1]; multiply by 100 to compare with the papers' tables.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PR_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
BOX_ACC_THRESHOLD = 0.5


def mask_iu(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two same-shape binary masks."""
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"mask_iu: prediction shape {p.shape} differs from ground truth {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def iou_from_iu(i: int, u: int) -> float:
    return float(i) / float(u) if u > 0 else 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of (N, 4) xyxy boxes (continuous coordinates); degenerate boxes give 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class SampleScore:
    """One expression's numbers (a row of the per-sample CSV)."""

    sample_id: str
    category: str
    inter_px: int | None = None
    union_px: int | None = None
    iou: float | None = None
    box_iou: float | None = None


def summarise(rows: list[SampleScore]) -> dict[str, Any]:
    """Split-level metrics of the rows that carry a mask and/or a box IoU."""
    out: dict[str, Any] = {"n": len(rows)}
    seg = [r for r in rows if r.iou is not None]
    if seg:
        ious = np.array([r.iou for r in seg], dtype=np.float64)
        cum_i = sum(int(r.inter_px or 0) for r in seg)
        cum_u = sum(int(r.union_px or 0) for r in seg)
        out["n_masks"] = len(seg)
        out["miou"] = float(ious.mean())
        out["oiou"] = iou_from_iu(cum_i, cum_u)
        out["cum_inter_px"], out["cum_union_px"] = cum_i, cum_u
        for t in PR_THRESHOLDS:
            out[f"pr@{t:.1f}"] = float(np.mean(ious >= t))
    boxed = [r for r in rows if r.box_iou is not None]
    if boxed:
        b = np.array([r.box_iou for r in boxed], dtype=np.float64)
        out["n_boxes"] = len(boxed)
        out["box_acc@0.5"] = float(np.mean(b >= BOX_ACC_THRESHOLD))
        out["box_miou"] = float(b.mean())
    return out


@dataclass
class ReferringMeter:
    """Accumulates per-expression scores over a split; `summary()` gives overall and per-category metrics."""

    rows: list[SampleScore] = field(default_factory=list)

    def add(
        self,
        sample_id: str,
        category: str = "",
        pred_mask: np.ndarray | None = None,
        gt_mask: np.ndarray | None = None,
        pred_box: np.ndarray | None = None,
        gt_box: np.ndarray | None = None,
    ) -> SampleScore:
        row = SampleScore(sample_id=sample_id, category=category)
        if pred_mask is not None and gt_mask is not None:
            row.inter_px, row.union_px = mask_iu(pred_mask, gt_mask)
            row.iou = iou_from_iu(row.inter_px, row.union_px)
        if pred_box is not None and gt_box is not None:
            row.box_iou = float(box_iou(pred_box, gt_box)[0])
        self.rows.append(row)
        return row

    def summary(self) -> dict[str, Any]:
        out = summarise(self.rows)
        by_cat: dict[str, list[SampleScore]] = defaultdict(list)
        for r in self.rows:
            by_cat[r.category or "unknown"].append(r)
        out["per_category"] = {c: summarise(rs) for c, rs in sorted(by_cat.items())}
        cat_mious = [v["miou"] for v in out["per_category"].values() if "miou" in v]
        if cat_mious:
            out["category_miou"] = float(np.mean(cat_mious))
        return out
