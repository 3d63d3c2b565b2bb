"""Water-land evaluation of a checkpoint: split metrics, per-chip CSV, PNG panels and the Otsu baseline.

Two summaries are reported, because they answer different questions: "pooled" sums confusion counts over
every chip (the paper's split-level IoU), "mean of per-chip IoU_water" averages chips equally (a chip with
1 % water counts as much as one with 60 %). Per-chip IoU_water is undefined (NaN) on a chip whose label and
prediction hold no water; such chips are left out of that mean and the CSV shows NaN.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rrsis import storage
from rrsis.checkpoints import Checkpoint, build_from_checkpoint
from rrsis.config.eval import EvalConfig
from rrsis.data import ombria
from rrsis.data.dataset import WaterLandDataset, build_splits
from rrsis.data.normalize import NormStats, otsu_thresholds, sample_pixels
from rrsis.data.otsu import gate_spec, gate_water, otsu_water
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.evaluate.panels import write_panel
from rrsis.log import get_logger
from rrsis.metrics.segmentation import ConfusionMeter

log = get_logger(__name__)
BASELINE_BANDS = ("VV", "VH")
METHOD_MODEL = "model"


@dataclass
class ChipResult:
    sample_id: str
    group: str
    meters: dict[str, ConfusionMeter] = field(default_factory=dict)  # method -> counts over the chip
    thresholds_db: dict[str, float] = field(default_factory=dict)  # Otsu method -> threshold per window

    def metrics(self, method: str) -> dict[str, float]:
        return self.meters[method].compute()


def _meter(chip: ChipResult, method: str) -> ConfusionMeter:
    return chip.meters.setdefault(method, ConfusionMeter(num_classes=2, ignore_index=-1))


@torch.no_grad()
def evaluate_chips(
    model: nn.Module,
    ckpt: Checkpoint,
    dataset: WaterLandDataset,
    device: torch.device,
    *,
    baseline: bool,
    panels: int = 0,
    panel_dir: str = "",
    gate: int | None = None,
    gate_median: int = 1,
) -> list[ChipResult]:
    """Run the model (and the Otsu baselines) over every window of every chip of `dataset`.

    `gate`: index of the band of the checkpoint's Otsu gate (`rrsis.data.otsu`); the model's water is kept
    only below that band's Otsu threshold over the whole chip (the chip is the scene, as in `rrsis map`);
    with `gate_median` > 1, the band's median over that window is what is compared."""
    chips = [ChipResult(ref.sample_id, ref.group) for ref in dataset.refs]
    gate_db: dict[int, float] = {}
    baseline_bands = [b for b in BASELINE_BANDS if b in ckpt.bands] if baseline else []
    panels_done: set[int] = set()
    for index in range(len(dataset)):
        sample, _ = dataset.items[index]
        image, valid, label = dataset.read(index)
        x = torch.from_numpy(dataset.normalize(index, image, valid))[None].to(device)
        pred = model(x).argmax(dim=1)[0].cpu().numpy()
        if gate is not None:
            if sample not in gate_db:
                gate_db[sample] = otsu_thresholds(sample_pixels(dataset.refs[sample]))[gate]
            pred = gate_water(pred, image[gate], gate_db[sample], gate_median)
        chip = chips[sample]
        _meter(chip, METHOD_MODEL).update(pred, label, valid)
        predictions = [pred]
        for band in baseline_bands:
            water, threshold = otsu_water(image[ckpt.bands.index(band)], valid)
            _meter(chip, f"otsu_{band.lower()}").update(water, label, valid)
            chip.thresholds_db[f"otsu_{band.lower()}"] = threshold
            predictions.append(water)
        if panel_dir and len(panels_done) < panels and sample not in panels_done:
            panels_done.add(sample)
            uri = storage.join(panel_dir, f"{chip.sample_id}.png")
            write_panel(uri, image[0], valid, label, predictions)
    return chips


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(chips: list[ChipResult]) -> dict[str, Any]:
    """Per method: pooled metrics, mean of per-chip IoU_water, and chips where it beats/loses to the model."""
    methods = list(chips[0].meters) if chips else []
    summary: dict[str, Any] = {}
    for method in methods:
        pooled = ConfusionMeter(num_classes=2, ignore_index=-1)
        for chip in chips:
            pooled.merge(chip.meters[method])
        per_chip = [chip.metrics(method)["iou_water"] for chip in chips]
        summary[method] = {
            "pooled": pooled.compute(),
            "mean_chip_iou_water": _nanmean(per_chip),
            "chips_with_iou_water": sum(not math.isnan(v) for v in per_chip),
        }
    model_iou = [c.metrics(METHOD_MODEL)["iou_water"] for c in chips]
    for method in methods:
        if method != METHOD_MODEL:
            other = [c.metrics(method)["iou_water"] for c in chips]
            pairs = [(m, o) for m, o in zip(model_iou, other, strict=True) if not (math.isnan(m) or math.isnan(o))]
            summary[method]["model_beats_on_chips"] = sum(m > o for m, o in pairs)
            summary[method]["compared_chips"] = len(pairs)
    return summary


def chip_rows(chips: list[ChipResult]) -> list[dict[str, Any]]:
    rows = []
    for chip in chips:
        row: dict[str, Any] = {"sample_id": chip.sample_id, "group": chip.group}
        counts = chip.meters[METHOD_MODEL].counts
        row["valid_px"] = int(counts.sum())
        row["water_fraction"] = round(float(counts[1].sum() / max(int(counts.sum()), 1)), 4)
        for method, meter in chip.meters.items():
            metrics = meter.compute()
            for key in ("iou_water", "iou_land", "iou_mean", "f1"):
                row[f"{method}_{key}"] = round(metrics[key], 4)
            if method in chip.thresholds_db:
                row[f"{method}_threshold_db"] = round(chip.thresholds_db[method], 3)
        rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def print_report(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    methods = list(summary)
    print("per-chip IoU_water: " + " | ".join(methods))
    for row in rows:
        values = "  ".join(f"{row[f'{m}_iou_water']:.4f}" for m in methods)
        print(f"  {row['sample_id']:<20} water {row['water_fraction']:.3f}  {values}")
    for method, s in summary.items():
        pooled = s["pooled"]
        extra = ""
        if "model_beats_on_chips" in s:
            extra = f"; model better on {s['model_beats_on_chips']}/{s['compared_chips']} chips"
        print(
            f"{method:<9} mean per-chip IoU_water {s['mean_chip_iou_water']:.4f} | pooled IoU_water "
            f"{pooled['iou_water']:.4f} IoU_land {pooled['iou_land']:.4f} IoU_mean {pooled['iou_mean']:.4f} "
            f"F1 {pooled['f1']:.4f}{extra}"
        )


def run_waterland_eval(cfg: EvalConfig, ckpt: Checkpoint) -> int:
    device = resolve_device(cfg.device)
    data = cfg.data
    if list(data.bands) and [b.upper() for b in data.bands] != [b.upper() for b in ckpt.bands]:
        raise ConfigError(f"data.bands={list(data.bands)} but the checkpoint was trained on {ckpt.bands}")
    data.bands = list(ckpt.bands)
    if data.format == "ombria":
        ombria.check_norm(ckpt.norm, key="the checkpoint's norm")
    splits = build_splits(data)
    refs = splits.get(cfg.split)
    stats = NormStats(list(ckpt.bands), ckpt.norm_mean, ckpt.norm_std, ckpt.nodata_fill, norm=ckpt.norm)
    dataset = WaterLandDataset(refs, stats, train=False, crop_px=data.eval_tile_px)
    gate = "" if data.gate == "none" else (data.gate or ckpt.gate)
    gate_index, gate_median = gate_spec(gate, ckpt.bands)
    model = build_from_checkpoint(ckpt).to(device)
    log.info(
        "evaluating %s on %d %s chips: %s", cfg.checkpoint, len(refs), cfg.split, ", ".join(r.sample_id for r in refs)
    )
    chips = evaluate_chips(
        model,
        ckpt,
        dataset,
        device,
        baseline=cfg.baseline,
        panels=cfg.panels,
        panel_dir=storage.join(cfg.output, "panels"),
        gate=gate_index,
        gate_median=gate_median,
    )
    rows = chip_rows(chips)
    summary = summarise(chips)
    report = {
        "checkpoint": cfg.checkpoint,
        "split": cfg.split,
        "chips": [r.sample_id for r in refs],
        "checkpoint_metrics": ckpt.metrics,
        "gate": gate,
        **summary,
    }
    storage.put_bytes(storage.join(cfg.output, "metrics.json"), json.dumps(report, indent=2).encode())
    storage.put_bytes(storage.join(cfg.output, "chips.csv"), _csv_text(rows).encode())
    if gate:
        print(f"model water gated by {gate}: kept only below each chip's Otsu threshold of that band")
    print_report(rows, summary)
    print(f"wrote {storage.join(cfg.output, 'metrics.json')}, chips.csv and panels/")
    return 0
