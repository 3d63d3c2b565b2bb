"""Box utilities and the grounding loss: L1 + GIoU on the matched query, BCE on the query scores.

Boxes are normalised to [0, 1] of the original image; the model predicts (cx, cy, w, h), the losses compare
in both parametrisations as DETR/TransVG do (L1 on cxcywh, GIoU on xyxy). With one target per expression,
DETR's Hungarian matching reduces to picking the query of lowest matching cost; that query is trained to
regress the box and to score 1, every other query to score 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise GIoU of (..., 4) xyxy boxes: IoU - |C \\ (A ∪ B)| / |C|, C the smallest enclosing box."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / (union + eps)
    c_lt = torch.minimum(a[..., :2], b[..., :2])
    c_rb = torch.maximum(a[..., 2:], b[..., 2:])
    c_area = (c_rb - c_lt).clamp(min=0).prod(-1)
    return iou - (c_area - union) / (c_area + eps)


def l1_loss(pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor) -> torch.Tensor:
    """Mean over boxes of the summed absolute coordinate error (TransVG: F.l1_loss(..., 'sum') / B)."""
    return (pred_cxcywh - target_cxcywh).abs().sum(-1).mean()


def giou_loss(pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - GIoU."""
    return (1.0 - generalized_box_iou(cxcywh_to_xyxy(pred_cxcywh), cxcywh_to_xyxy(target_cxcywh))).mean()


def match_queries(pred_boxes: torch.Tensor, target: torch.Tensor, l1_w: float, giou_w: float) -> torch.Tensor:
    """(B,) index of the query whose box is cheapest to move onto the target (one-target Hungarian match)."""
    with torch.no_grad():
        t = target[:, None, :].expand_as(pred_boxes)
        cost = l1_w * (pred_boxes - t).abs().sum(-1)
        cost = cost + giou_w * (1.0 - generalized_box_iou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(t)))
        return cost.argmin(dim=1)


def grounding_loss(
    pred_boxes: torch.Tensor,
    pred_logits: torch.Tensor,
    target_cxcywh: torch.Tensor,
    l1_weight: float = 1.0,
    giou_weight: float = 1.0,
    score_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """pred_boxes (B, Q, 4) cxcywh in [0, 1], pred_logits (B, Q), target (B, 4) -> loss terms and total."""
    idx = match_queries(pred_boxes, target_cxcywh, l1_weight, giou_weight)
    rows = torch.arange(pred_boxes.shape[0], device=pred_boxes.device)
    matched = pred_boxes[rows, idx]
    l1 = l1_loss(matched, target_cxcywh)
    giou = giou_loss(matched, target_cxcywh)
    score_target = torch.zeros_like(pred_logits)
    score_target[rows, idx] = 1.0
    score = F.binary_cross_entropy_with_logits(pred_logits, score_target)
    total = l1_weight * l1 + giou_weight * giou + score_weight * score
    return {"loss": total, "l1": l1, "giou": giou, "score": score}
