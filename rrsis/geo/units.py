"""Units an input band may be declared in, and the conversion each needs to the models' units.

Pure (no GDAL): the map config validates its `units` key against the same table the readers use.
Conversions: `native` (the values as they are, after any scale/offset: dB, reflectance), `power` (linear
backscatter -> 10·log10) and `amplitude` (-> 20·log10), applied on read by `rrsis.geo.vrt`.
"""

from __future__ import annotations

from rrsis.errors import InputError

# unit spellings (lower case) -> conversion; anything else is refused with the key that carried it
UNITS: dict[str, str] = {
    "db": "native",
    "decibel": "native",
    "decibels": "native",
    "linear": "power",
    "power": "power",
    "linear power": "power",
    "amplitude": "amplitude",
    "linear amplitude": "amplitude",
    "reflectance": "native",
    "1": "native",
    "none": "native",
}
CONVERSIONS = ("native", "power", "amplitude")
ALLOWED_UNITS = "dB, linear (power), amplitude, reflectance, 1"


def is_known_unit(unit: str) -> bool:
    return unit.strip().lower() in UNITS


def conversion_for_unit(unit: str, key: str) -> str:
    """The conversion to the model's units (dB for SAR) for a declared unit; InputError naming `key` if unknown."""
    conversion = UNITS.get(unit.strip().lower())
    if conversion is None:
        raise InputError(f"{key}: unknown unit {unit!r}; allowed: {ALLOWED_UNITS}")
    return conversion
