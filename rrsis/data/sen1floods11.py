"""Sen1Floods11 hand-labelled chips (Bonafilia et al., CVPRW 2020).

Layout (as the v1.1 release and our `data/samples/sen1floods11`): `<root>/S1Hand/<event>_<id>_S1Hand.tif`
(2 bands float32 dB, VV then VH, NaN nodata), `<root>/S2Hand/<event>_<id>_S2Hand.tif` (13 bands B1..B12 incl.
B8A and B10, TOA x 10000, nodata 0) and `<root>/LabelHand/<event>_<id>_LabelHand.tif` (int16, -1 ignore,
0 land, 1 water). The event (text before the first underscore) is the split group: leave-one-event-out
and held-out events keep chips of one flood out of training together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rrsis.data.pairs import SampleRef, geotiff_ref
from rrsis.errors import InputError

SENSOR_FOLDERS = {"s1": "S1Hand", "s2": "S2Hand"}
BAND_NAMES = {
    "s1": ("VV", "VH"),
    "s2": ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"),
}
# The water/land paper uses Sentinel-2 B2, B3, B4, B8; for SAR both polarisations.
DEFAULT_BANDS = {"s1": ("VV", "VH"), "s2": ("B2", "B3", "B4", "B8")}
_NAME = re.compile(r"^(?P<event>[A-Za-z\-]+)_(?P<chip>\d+)_(?P<layer>S1Hand|S2Hand)\.tif$")


def band_indexes(sensor: str, bands: Sequence[str]) -> tuple[list[str], list[int]]:
    """Band names (defaults if empty) and their 1-based indexes in the sensor's chips."""
    names = list(bands) or list(DEFAULT_BANDS[sensor])
    known = {b.upper(): i + 1 for i, b in enumerate(BAND_NAMES[sensor])}
    missing = [b for b in names if b.upper() not in known]
    if missing:
        raise InputError(f"data.bands={missing} not in Sen1Floods11 {sensor}: {', '.join(BAND_NAMES[sensor])}")
    return [b.upper() for b in names], [known[b.upper()] for b in names]


def find_chips(root: str, sensor: str = "s1", bands: Sequence[str] = ()) -> list[SampleRef]:
    """Every `<event>_<id>` chip of `sensor` with its LabelHand; bad names or missing labels name the file."""
    if sensor not in SENSOR_FOLDERS:
        raise InputError(f"data.sensor={sensor!r} is not one of {sorted(SENSOR_FOLDERS)}")
    image_dir = Path(root) / SENSOR_FOLDERS[sensor]
    label_dir = Path(root) / "LabelHand"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise InputError(f"data.root={root}: Sen1Floods11 layout needs {image_dir} and {label_dir} folders")
    _, indexes = band_indexes(sensor, bands)
    refs = []
    for path in sorted(image_dir.glob("*.tif")):
        match = _NAME.match(path.name)
        if match is None or match["layer"] != SENSOR_FOLDERS[sensor]:
            raise InputError(f"{path}: not a Sen1Floods11 name <event>_<id>_{SENSOR_FOLDERS[sensor]}.tif")
        chip_id = f"{match['event']}_{match['chip']}"
        label = label_dir / f"{chip_id}_LabelHand.tif"
        if not label.is_file():
            raise InputError(f"{path} has no label {label}")
        ref = geotiff_ref(chip_id, match["event"], str(path), str(label), [str(i) for i in indexes])
        if ref.bands != tuple(indexes):
            raise InputError(f"{path}: expected Sen1Floods11 {sensor} bands {indexes}, got {ref.bands}")
        refs.append(ref)
    if not refs:
        raise InputError(f"data.root={root}: no *_{SENSOR_FOLDERS[sensor]}.tif chips in {image_dir}")
    return refs
