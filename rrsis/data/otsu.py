"""The classic SAR water baseline: one global Otsu threshold per chip on a backscatter band (dB).

Calm water is a specular reflector, so it is dark in VV and VH; Otsu (1979) picks the threshold that
maximises the between-class variance of the chip's histogram of valid pixels, and pixels below it are water.
"Global" means one threshold for the whole chip, as opposed to tiled or split-based Otsu variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rrsis.errors import ConfigError

OTSU_BINS = 256


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu threshold of finite `values`: the histogram bin edge maximising between-class variance."""
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return float("nan")
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return low
    counts, edges = np.histogram(data, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts)[:-1].astype(np.float64)
    weight_above = data.size - weight_below
    sum_below = np.cumsum(counts * centres)[:-1]
    mean_below = sum_below / np.maximum(weight_below, 1)
    mean_above = (float((counts * centres).sum()) - sum_below) / np.maximum(weight_above, 1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def otsu_water(band_db: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float]:
    """(H,W) water map (1 = water, below the threshold) from one band, and the threshold used."""
    valid = np.asarray(valid, dtype=bool)
    threshold = otsu_threshold(band_db[valid])
    water = (band_db < threshold) & valid
    return water.astype(np.int64), threshold


# The Otsu gate: a physical post-process of a water model. Calm open water is dark in SAR, so a pixel stays
# water only if the model says water and its band (dB) is below the scene's own global Otsu threshold of that
# band; the model still decides which dark pixels are water (Otsu alone also marks dark land). Written "otsu:VV".
GATE_PREFIX = "otsu:"
NO_GATE = ("", "none")


def gate_band(gate: str, bands: Sequence[str], key: str = "data.gate") -> int | None:
    """Index into `bands` of the band an Otsu gate spec ("otsu:VV") thresholds; None for no gate ("", "none")."""
    if gate in NO_GATE:
        return None
    name = gate[len(GATE_PREFIX) :].upper() if gate.startswith(GATE_PREFIX) else ""
    upper = [b.upper() for b in bands]
    if name not in upper:
        raise ConfigError(f"{key}={gate!r}: expected 'none' or 'otsu:<band>' with a band of {list(bands)}")
    return upper.index(name)


def gate_water(water: np.ndarray, band_db: np.ndarray, threshold: float) -> np.ndarray:
    """`water` where `band_db` is below `threshold`, else 0 (NaN is not below); same dtype as `water`."""
    with np.errstate(invalid="ignore"):
        dark = np.asarray(band_db) < threshold
    return np.where(dark, water, np.zeros((), dtype=np.asarray(water).dtype))
