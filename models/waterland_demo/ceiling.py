"""How far a single global threshold per chip can go on the six Sen1Floods11 chips with water.

For each chip, the best threshold on VV, on VH, and on their 5x5 medians (`rrsis.data.otsu.dark`), each
chosen on that chip's own hand labels: an oracle no method has, so an upper bound for every thresholding
rule (Otsu included) and a yardstick for the issue's goal (mean per-chip IoU_water >= 0.60). The chips' own
Otsu thresholds stand beside it. It chooses nothing; round 6 of README.md says when it was first run.

Usage: .venv/bin/python models/waterland_demo/ceiling.py [folder]   (default ../shared/data/sen1floods11)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio

from rrsis.data.otsu import dark, otsu_threshold

CHIPS = ("Bolivia_312675", "India_900498", "Mekong_333434", "Pakistan_849790", "Spain_6860600", "Spain_7370579")
THRESHOLDS_DB = np.arange(-40.0, 10.01, 0.25)  # above every chip's brightest land: "all water" is a candidate
WAYS = (("VV", 0, 1), ("VH", 1, 1), ("VV median5", 0, 5), ("VH median5", 1, 5))


def iou_water(water: np.ndarray, label: np.ndarray, valid: np.ndarray) -> float:
    truth, pred = (label == 1) & valid, water & valid
    union = int((truth | pred).sum())
    return int((truth & pred).sum()) / union if union else float("nan")


def chip_row(root: Path, chip: str) -> list[float]:
    with rasterio.open(root / "S1Hand" / f"{chip}_S1Hand.tif") as src:
        image = src.read().astype(np.float32)
    with rasterio.open(root / "LabelHand" / f"{chip}_LabelHand.tif") as src:
        label = src.read(1)
    seen = np.isfinite(image).all(axis=0)  # what a method sees: Otsu's histogram knows no label
    valid = (label >= 0) & seen  # what is scored
    row = [iou_water(image[band] < otsu_threshold(image[band][seen]), label, valid) for band in (0, 1)]
    for _, band, window in WAYS:
        row.append(max(iou_water(dark(image[band], t, window), label, valid) for t in THRESHOLDS_DB))
    return row


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sen1floods11")
    names = ["Otsu VV", "Otsu VH", *(f"oracle {name}" for name, _, _ in WAYS)]
    print("| chip | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    rows = [chip_row(root, chip) for chip in CHIPS]
    for chip, row in zip(CHIPS, rows, strict=True):
        print(f"| {chip} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    means = np.mean(rows, axis=0)
    print("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in means) + " |")
    best = np.max(np.asarray(rows)[:, 2:], axis=1)
    print(f"best of the four oracles on each chip, mean over the six chips: {best.mean():.3f}")


if __name__ == "__main__":
    main()
