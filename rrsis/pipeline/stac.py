"""STAC inputs: an Item, ItemCollection, Catalog or Collection JSON -> one scene per item, a VRT of its bands.

The assets of an item are picked by band name, case-insensitively, against the asset key, its `eo:bands`
names and common names (also STAC 1.1 `bands`), and its `sar:polarizations`; Sentinel-2 style names are
compared without leading zeros (`B2` = `B02`, `B8A` = `B08A`). Relative hrefs resolve against the item's own
location (its self link, else the file it was read from). Each scene's URI is the VRT XML built by
`rrsis.geo.raster.stack_bands`, its id the item id.

Units (`rrsis.geo.units.UNITS`): an asset's `raster:bands[0].unit` if given, else the caller's `units[band]`,
else the config's `units` (`rrsis.geo.raster.Declared`, which gives a scale/offset too), else the
conventions of the large catalogs: SAR bands (`sar:polarizations`) are linear power (RTC) and are converted
to dB, the unit of every SAR model here; a SAR item of `sar:product_type` GRD without a unit is refused
(uncalibrated digital numbers). Other bands pass as `value * scale + offset` from `raster:bands`.
Every problem is one line for that item (or file); the other items go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pystac
from pystac.stac_io import DefaultStacIO
from pystac.utils import make_absolute_href

from rrsis import storage
from rrsis.errors import InputError, StorageError
from rrsis.geo.raster import Declared, stack_bands
from rrsis.geo.units import conversion_for_unit
from rrsis.geo.vrt import BandSource

STAC_SUFFIXES = (".json", ".geojson")
_S2_NAME = re.compile(r"^b0*(\d+a?)$")


class ReadStacIO(DefaultStacIO):
    """pystac reads local, file:// and s3:// through rrsis.storage, http(s) with pystac's own client."""

    def read_text(self, source: pystac.utils.HREF, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if urlparse(href).scheme in ("http", "https"):
            return str(super().read_text(source, *args, **kwargs))
        return storage.get_bytes(href).decode("utf-8")


@dataclass(frozen=True)
class StacScene:
    """An item made into a scene: its id, where it was read from, and the VRT XML of its bands."""

    item_id: str
    where: str
    uri: str


def is_stac_input(item: str) -> bool:
    """A JSON file or URL (a query string is allowed after the suffix)."""
    path = urlparse(item).path if "://" in item else item
    return path.lower().endswith(STAC_SUFFIXES)


def _norm(name: str) -> str:
    low = name.strip().lower()
    found = _S2_NAME.match(low)
    return f"b{found.group(1)}" if found else low


def _band_entries(asset: pystac.Asset) -> list[dict[str, Any]]:
    fields = asset.extra_fields
    entries = fields.get("eo:bands") or fields.get("bands") or []
    return [e for e in entries if isinstance(e, dict)]


def asset_names(key: str, asset: pystac.Asset) -> list[str]:
    """Every name a band may go by for this asset (key first)."""
    names = [key]
    for entry in _band_entries(asset):
        names += [str(entry[k]) for k in ("name", "common_name", "eo:common_name") if entry.get(k)]
    names += [str(p) for p in asset.extra_fields.get("sar:polarizations") or []]
    return list(dict.fromkeys(names))


def _is_data(asset: pystac.Asset) -> bool:
    roles = asset.roles or []
    return not roles or "data" in roles


def _match(band: str, item: pystac.Item) -> str | None:
    """The asset key for `band`: an exact key first, then the first data asset naming the band."""
    want = _norm(band)
    keys = [k for k, a in item.assets.items() if _is_data(a)]
    for key in keys:
        if _norm(key) == want:
            return key
    for key in keys:
        if want in {_norm(n) for n in asset_names(key, item.assets[key])}:
            return key
    return None


def default_bands(item: pystac.Item) -> list[str]:
    """Bands when the caller names none: the item's `sar:polarizations`, else every data asset's key."""
    pols = item.properties.get("sar:polarizations")
    if pols:
        return [str(p) for p in pols]
    return [k for k, a in item.assets.items() if _is_data(a) and _band_entries(a)]


def _raster_band(asset: pystac.Asset) -> dict[str, Any]:
    """unit/scale/offset/nodata of the asset's first band: `raster:bands` (STAC 1.0) or `bands` (1.1), where
    1.1 also allows them on the asset itself (the band's own value wins)."""
    fields = asset.extra_fields
    entries = fields.get("raster:bands") or fields.get("bands") or [{}]
    first = entries[0] if entries and isinstance(entries[0], dict) else {}
    found = {k: fields[k] for k in ("unit", "scale", "offset", "nodata") if fields.get(k) is not None}
    found.update({k.removeprefix("raster:"): v for k, v in first.items() if v is not None})
    return found


def _is_sar(item: pystac.Item, asset: pystac.Asset) -> bool:
    return bool(asset.extra_fields.get("sar:polarizations") or item.properties.get("sar:polarizations"))


def band_source(
    item: pystac.Item, band: str, key: str, base: str, units: Mapping[str, str], declared: Declared = Declared()
) -> BandSource:
    """The BandSource of one matched asset: absolute href, unit conversion, scale/offset, nodata.

    Where the asset declares no unit (scale, offset): `units[band]`, else `declared.units` (the config's
    `units`; `declared.scale`, `declared.offset`), else the catalog conventions."""
    asset = item.assets[key]
    href = make_absolute_href(asset.href, item.get_self_href() or base)
    raster = _raster_band(asset)
    unit_key = f"item {item.id} asset {key!r} raster:bands unit"
    unit = raster.get("unit")
    if not unit and band in units:
        unit, unit_key = units[band], f"units.{band}"
    if not unit and declared.units:
        unit, unit_key = declared.units, "units"
    if not unit and _is_sar(item, asset):
        if str(item.properties.get("sar:product_type", "")).upper() == "GRD":
            raise InputError(
                f"item {item.id}: asset {key!r} is SAR GRD without a unit (uncalibrated digital numbers); "
                f"calibrate it (e.g. RTC) or set units.{band}"
            )
        unit = "linear"
    convert = conversion_for_unit(str(unit), unit_key) if unit else "native"
    nodata = raster.get("nodata")
    return BandSource(
        name=band,
        uri=href,
        convert=convert,
        scale=float(raster.get("scale", declared.scale)),
        offset=float(raster.get("offset", declared.offset)),
        nodata=None if nodata is None or isinstance(nodata, str) else float(nodata),
    )


def item_scene(
    item: pystac.Item,
    base: str,
    bands: Sequence[str] | None,
    units: Mapping[str, str],
    declared: Declared = Declared(),
) -> StacScene:
    """One item -> one scene (VRT of the bands); InputError naming the item and what it has otherwise."""
    names = list(bands) if bands else default_bands(item)
    if not names:
        raise InputError(f"item {item.id}: no band to map (no sar:polarizations, no eo:bands): name the bands")
    matched = {band: _match(band, item) for band in names}
    missing = [band for band, key in matched.items() if key is None]
    if missing:
        has = "; ".join(
            f"{k} ({', '.join(asset_names(k, a)[1:]) or k})" if len(asset_names(k, a)) > 1 else k
            for k, a in item.assets.items()
            if _is_data(a)
        )
        raise InputError(f"item {item.id}: no asset for band(s) {', '.join(missing)}; it has: {has or 'no data asset'}")
    sources = [band_source(item, band, str(matched[band]), base, units, declared) for band in names]
    return StacScene(item.id, base, stack_bands(sources, item.id))


def _load(uri: str) -> dict[str, Any]:
    try:
        text = ReadStacIO().read_text(uri)
    except (StorageError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"STAC {uri} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"STAC {uri} is malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"STAC {uri} is not a STAC object (a JSON {type(data).__name__})")
    return data


def read_items(uri: str) -> tuple[list[pystac.Item], list[tuple[str, str]]]:
    """The items a STAC file names and (where, reason) problems: an Item, an ItemCollection, or a Catalog or
    Collection walked recursively (its child and item links read through `ReadStacIO`)."""
    data = _load(uri)
    kind = data.get("type")
    items: list[pystac.Item] = []
    problems: list[tuple[str, str]] = []
    try:
        if kind == "Feature":
            items.append(pystac.Item.from_dict(data, href=uri, preserve_dict=False))
        elif kind == "FeatureCollection":
            for i, feature in enumerate(data.get("features") or []):
                where = f"{uri}#{feature.get('id', i) if isinstance(feature, dict) else i}"
                try:
                    items.append(pystac.Item.from_dict(feature, preserve_dict=False))
                except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
                    problems.append((where, f"STAC item {where} is malformed: {_reason(exc)}"))
        elif kind in ("Catalog", "Collection"):
            root = pystac.read_dict(data, href=uri, stac_io=ReadStacIO())
            if not isinstance(root, pystac.Catalog):
                raise InputError(f"STAC {uri}: type {kind} did not read as a catalog")
            items.extend(root.get_items(recursive=True))
        else:
            raise InputError(f"STAC {uri}: type {kind!r} is not Feature, FeatureCollection, Catalog or Collection")
    except (pystac.STACError, KeyError, TypeError, ValueError, StorageError, OSError) as exc:
        raise InputError(f"STAC {uri} is malformed: {_reason(exc)}") from exc
    return items, problems


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def stac_scenes(
    uri: str,
    bands: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    declared: Declared = Declared(),
) -> tuple[list[StacScene], list[tuple[str, str]]]:
    """Every item of the STAC file `uri` as a scene, and (where, reason) for each item that is not one."""
    items, problems = read_items(uri)
    scenes = []
    for item in items:
        try:
            scenes.append(item_scene(item, uri, bands, units or {}, declared))
        except InputError as exc:
            problems.append((f"{uri}#{item.id}", str(exc)))
    return scenes, problems
