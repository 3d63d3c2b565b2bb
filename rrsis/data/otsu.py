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
# band; the model still decides which dark pixels are water (Otsu alone also marks dark land). Written
# "otsu:VV". "otsu:VV:median5" compares the 5x5 median of the band instead of the pixel: speckle then no longer
# punches bright holes into water or leaves dark specks on land (round 6 of models/waterland_demo/README.md).
GATE_PREFIX = "otsu:"
NO_GATE = ("", "none")
MEDIAN_PREFIX = "median"


def gate_spec(gate: str, bands: Sequence[str], key: str = "data.gate") -> tuple[int | None, int]:
    """(index into `bands` of the band, side of the median window) of a gate spec "otsu:<band>[:median<k>]",
    k odd >= 3 (1: the pixel itself); (None, 1) for no gate ("", "none")."""
    if gate in NO_GATE:
        return None, 1
    parts = gate[len(GATE_PREFIX) :].split(":") if gate.startswith(GATE_PREFIX) else []
    upper = [b.upper() for b in bands]
    window = 1
    if len(parts) == 2:
        size = parts[1].lower().removeprefix(MEDIAN_PREFIX)
        window = int(size) if parts[1].lower().startswith(MEDIAN_PREFIX) and size.isdigit() else 0
    if not parts or len(parts) > 2 or parts[0].upper() not in upper or window < 1 or window % 2 == 0:
        raise ConfigError(
            f"{key}={gate!r}: expected 'none' or 'otsu:<band>[:median<odd k>]' with a band of {list(bands)}"
        )
    return upper.index(parts[0].upper()), window


def gate_band(gate: str, bands: Sequence[str], key: str = "data.gate") -> int | None:
    """Index into `bands` of the band an Otsu gate spec ("otsu:VV") thresholds; None for no gate ("", "none")."""
    return gate_spec(gate, bands, key)[0]


def dark(band_db: np.ndarray, threshold: float, window: int = 1) -> np.ndarray:
    """(H,W) bool: the `window` x `window` median of `band_db` is below `threshold` (1: the pixel itself).

    A median of n = window² values is below t exactly when more than n/2 of them are, so this counts the dark
    pixels of each window (an integral image) instead of sorting. NaN and the outside of the array count as
    bright: a map tile's outside is the scene's outside (read as 0 dB) or its overlap, so a tile gives what the
    whole scene would, and the 0 dB a read gives nodata is bright too.
    """
    with np.errstate(invalid="ignore"):
        below = np.asarray(band_db) < threshold
    if window <= 1:
        return below
    half = window // 2
    padded = np.pad(below, half).astype(np.int32)  # outside: not dark
    counts = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int32)
    np.cumsum(np.cumsum(padded, axis=0), axis=1, out=counts[1:, 1:])
    height, width = below.shape
    inside = (
        counts[window : window + height, window : window + width]
        - counts[:height, window : window + width]
        - counts[window : window + height, :width]
        + counts[:height, :width]
    )
    return 2 * inside > window * window


def gate_water(water: np.ndarray, band_db: np.ndarray, threshold: float, window: int = 1) -> np.ndarray:
    """`water` where `band_db` (its `window` median) is below `threshold`, else 0; same dtype as `water`."""
    return np.where(dark(band_db, threshold, window), water, np.zeros((), dtype=np.asarray(water).dtype))
