"""`rrsis eval` for referring models (grounding, PSLG-SAM, DANet).

Outputs under `eval.output` (local or s3://): `metrics.json` (overall + per-category, from
`rrsis.metrics.referring`), `samples.csv` (one row per expression) and `panels/best_*.png`, `worst_*.png`
(image with predicted box red / ground-truth box green | predicted mask | ground-truth mask, expression
written underneath). Best/worst rank by mask IoU when both masks exist, else by box IoU. Only the
`eval.panels` best and worst predictions are kept in memory while the split streams through.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from rrsis import storage
from rrsis.checkpoints import Checkpoint, build_from_checkpoint, model_config_from_dict
from rrsis.config.eval import EvalConfig
from rrsis.data.referring import ReferringSample, load_image, load_mask, load_referring_split
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.log import get_logger
from rrsis.metrics.referring import ReferringMeter, SampleScore
from rrsis.models.danet.model import Danet
from rrsis.models.danet.predictor import DanetPredictor
from rrsis.models.grounding.model import GroundingModel
from rrsis.models.pslg_sam import PslgSam

log = get_logger(__name__)
GAP_PX = 4
CAPTION_PX = 22


@dataclass
class Prediction:
    box_xyxy: np.ndarray | None
    mask: np.ndarray | None
    scores: dict[str, Any]


Referring = nn.Module | DanetPredictor


def referring_interface(model: nn.Module) -> Referring:
    """What `predict_referring` calls: a DANet predicts through its predictor (which holds the tokenizer)."""
    if isinstance(model, Danet):
        return DanetPredictor(model, device=next(model.parameters()).device)
    return model


def predict_referring(model: Referring, images: list[np.ndarray], texts: list[str]) -> list[Prediction]:
    """Run whichever referring interface `model` has (a bare DANet is wrapped per call: prefer
    `referring_interface` once)."""
    if isinstance(model, Danet):
        model = referring_interface(model)
    if isinstance(model, PslgSam):
        return [Prediction(o.box_xyxy, o.mask, o.scores()) for o in model.predict_batch(images, texts)]
    if isinstance(model, GroundingModel):
        boxes, scores = model.predict(images, texts)
        return [Prediction(b, None, {"box_score": float(s)}) for b, s in zip(boxes, scores, strict=True)]
    if isinstance(model, DanetPredictor):
        masks = model.predict_masks(images, texts)
        return [Prediction(None, np.asarray(m, dtype=bool), {}) for m in masks]
    raise ConfigError(f"eval: model {type(model).__name__} has no referring prediction interface")


def _rank(row: SampleScore) -> float:
    return float(row.iou if row.iou is not None else (row.box_iou if row.box_iou is not None else 0.0))


def _draw_box(img: np.ndarray, box: Any, rgb: tuple[int, int, int]) -> None:
    if box is None:
        return
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    cv2.rectangle(img, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), rgb, thickness=max(1, img.shape[0] // 200))


def _mask_view(image: np.ndarray, mask: np.ndarray | None, rgb: tuple[int, int, int]) -> np.ndarray:
    out = (image.astype(np.float32) * 0.4).astype(np.uint8)
    if mask is not None:
        out[mask] = rgb
    return out


def render_panel(
    image: np.ndarray, sample: ReferringSample, pred: Prediction, gt_mask: np.ndarray | None, row: SampleScore
) -> np.ndarray:
    """image + boxes | predicted mask | ground-truth mask, with the expression and IoUs as a caption."""
    boxed = image.copy()
    _draw_box(boxed, sample.box_xyxy, (0, 200, 0))
    _draw_box(boxed, pred.box_xyxy, (230, 30, 30))
    gap = np.full((image.shape[0], GAP_PX, 3), 255, np.uint8)
    strip = np.concatenate(
        [boxed, gap, _mask_view(image, pred.mask, (230, 30, 30)), gap, _mask_view(image, gt_mask, (0, 200, 0))], axis=1
    )
    caption = np.full((CAPTION_PX, strip.shape[1], 3), 255, np.uint8)
    iou = "-" if row.iou is None else f"{row.iou:.3f}"
    biou = "-" if row.box_iou is None else f"{row.box_iou:.3f}"
    text = f"{sample.sample_id}: {sample.text} | IoU {iou} box IoU {biou}"
    cv2.putText(caption, text[:160], (4, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, caption], axis=0)


@dataclass
class _Keep:
    rank: float
    sample: ReferringSample
    pred: Prediction
    row: SampleScore


def _keep(kept: list[_Keep], item: _Keep, k: int, best: bool) -> None:
    if k <= 0:
        return
    kept.append(item)
    kept.sort(key=lambda x: (-x.rank if best else x.rank, x.sample.sample_id))
    del kept[k:]


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = list(rows[0]) if rows else ["sample_id"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _fmt_box(box: Any) -> str:
    return "" if box is None else " ".join(f"{float(v):.2f}" for v in box)


def evaluate_referring(
    model: nn.Module,
    samples: list[ReferringSample],
    batch_size: int,
    panels: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, np.ndarray]]]:
    """(metrics summary, CSV rows, [(panel name, RGB panel)]) over `samples`."""
    meter = ReferringMeter()
    rows: list[dict[str, Any]] = []
    best: list[_Keep] = []
    worst: list[_Keep] = []
    predictor = referring_interface(model)
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        images = [load_image(s) for s in batch]
        with torch.no_grad():
            preds = predict_referring(predictor, images, [s.text for s in batch])
        for s, img, pred in zip(batch, images, preds, strict=True):
            gt_mask = load_mask(s, img.shape[:2]) if pred.mask is not None else None
            row = meter.add(
                s.sample_id,
                s.category,
                pred_mask=pred.mask if gt_mask is not None else None,
                gt_mask=gt_mask,
                pred_box=pred.box_xyxy if s.box_xyxy is not None else None,
                gt_box=None if s.box_xyxy is None else np.asarray(s.box_xyxy),
            )
            rows.append(
                {
                    "sample_id": s.sample_id,
                    "category": s.category,
                    "text": s.text,
                    "iou": row.iou,
                    "inter_px": row.inter_px,
                    "union_px": row.union_px,
                    "box_iou": row.box_iou,
                    "pred_box": _fmt_box(pred.box_xyxy),
                    "gt_box": _fmt_box(s.box_xyxy),
                    **{k: v for k, v in pred.scores.items()},
                }
            )
            item = _Keep(_rank(row), s, pred, row)
            _keep(best, item, panels, best=True)
            _keep(worst, item, panels, best=False)
    rendered = []
    for tag, kept in (("best", best), ("worst", worst)):
        for i, k in enumerate(kept):
            img = load_image(k.sample)
            gt = load_mask(k.sample, img.shape[:2])
            rendered.append((f"{tag}_{i:02d}_{k.sample.sample_id}.png", render_panel(img, k.sample, k.pred, gt, k.row)))
    return meter.summary(), rows, rendered


def build_referring_model(cfg: EvalConfig, ckpt: Checkpoint) -> nn.Module:
    """The checkpoint's model; a grounding checkpoint with `with_sam` becomes PSLG-SAM with `eval.sam`."""
    if not cfg.with_sam:
        return build_from_checkpoint(ckpt)
    if ckpt.model_name != "grounding":
        raise ConfigError(f"config error: key 'with_sam': needs a grounding checkpoint, got {ckpt.model_name!r}")
    model = PslgSam(model_config_from_dict(ckpt.model_config).grounding, cfg.sam)
    model.grounding.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


def run_referring_eval(cfg: EvalConfig, ckpt: Checkpoint) -> int:
    device = resolve_device(cfg.device)
    model = build_referring_model(cfg, ckpt).to(device)
    samples = load_referring_split(cfg.data, cfg.split)
    if cfg.limit:
        samples = samples[: cfg.limit]
    if not samples:
        raise ConfigError(f"eval: split {cfg.split!r} of {cfg.data.root!r} has no sample")
    log.info("evaluating %s on %d expressions of %s/%s", ckpt.model_name, len(samples), cfg.data.root, cfg.split)
    summary, rows, panels = evaluate_referring(model, samples, cfg.batch_size, cfg.panels)
    report = {
        "model": "pslg_sam" if cfg.with_sam else ckpt.model_name,
        "checkpoint": cfg.checkpoint,
        "data": cfg.data.root,
        "format": cfg.data.format,
        "split": cfg.split,
        **summary,
    }
    storage.put_bytes(storage.join(cfg.output, "metrics.json"), json.dumps(report, indent=2).encode())
    storage.put_bytes(storage.join(cfg.output, "samples.csv"), _csv(rows).encode())
    for name, panel in panels:
        ok, png = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        if ok:
            storage.put_bytes(storage.join(cfg.output, "panels", name), png.tobytes())
    keys = [k for k in ("miou", "oiou", "pr@0.5", "pr@0.7", "pr@0.9", "box_acc@0.5", "box_miou") if k in summary]
    print(f"{ckpt.model_name} on {len(samples)} expressions: " + ", ".join(f"{k} {summary[k]:.4f}" for k in keys))
    print(f"wrote {storage.join(cfg.output, 'metrics.json')}, samples.csv and {len(panels)} panels/")
    return 0
