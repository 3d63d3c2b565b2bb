"""Turn the `input` list of a map config into scene URIs, each with a stable, unique scene id.

Accepted items: local paths, `file://`, `s3://` and `http(s)://` URIs; globs (`*`, `?`, `[`) on local paths
and on s3 keys; folders and s3 prefixes ending in `/` (every raster under them, recursively); and text files
(`.txt`, `.lst`, `.list`) with one item per line (`#` comments allowed). A literal path is kept even when it
does not exist, so a missing scene is reported in failures.parquet like any other bad scene; a glob or prefix
that matches nothing is reported the same way.

A STAC Item, ItemCollection, Catalog or Collection JSON (`.json`, local, s3:// or http(s)://) gives one scene
per item: its bands stacked into a VRT (`rrsis.pipeline.stac`), its id the item id. An item that cannot be a
scene (a band missing, an href that does not open, an unknown unit) is an input problem naming the item.

What the config declares for plain rasters (`units`, `input_scale`/`input_offset`, `gcp_crs`:
`rrsis.geo.raster.Declared`) makes each of them a VRT scene that applies it on read
(`rrsis.geo.raster.declared_scene`; one header read per file, here in the driver); its id stays the file's.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rrsis import storage
from rrsis.errors import InputError, StorageError
from rrsis.geo.raster import Declared, declared_scene
from rrsis.pipeline.stac import is_stac_input, stac_scenes

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
LIST_SUFFIXES = (".txt", ".lst", ".list")
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SceneRef:
    """One scene to map: where it is and the id its outputs are keyed by."""

    scene_id: str
    uri: str


@dataclass(frozen=True)
class InputProblem:
    """An input item that named no scene (empty glob/prefix, unreadable list file)."""

    item: str
    reason: str


def _is_raster(uri: str) -> bool:
    return uri.lower().endswith(RASTER_SUFFIXES)


def _scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def _expand_s3(item: str) -> list[str]:
    if _GLOB_CHARS.search(item):
        static = _GLOB_CHARS.split(item, maxsplit=1)[0]
        return [u for u in storage.list_prefix(static) if fnmatch.fnmatchcase(u, item) and _is_raster(u)]
    if item.endswith("/"):
        return [u for u in storage.list_prefix(item) if _is_raster(u)]
    return [item]


def _expand_local(item: str) -> list[str]:
    path = item[len("file://") :] if item.startswith("file://") else item
    if _GLOB_CHARS.search(path):
        return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p) and _is_raster(p))
    if os.path.isdir(path):
        return [u for u in storage.list_prefix(path) if _is_raster(u)]
    return [path]


def _read_list(item: str) -> list[str]:
    try:
        text = storage.get_bytes(item).decode("utf-8")
    except (UnicodeDecodeError, StorageError) as exc:
        raise InputError(f"input list {item} cannot be read: {exc}") from exc
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _is_list(item: str) -> bool:
    return item.lower().endswith(LIST_SUFFIXES) and _scheme(item) in ("", "file", "s3")


def expand_item(item: str) -> list[str]:
    """The scene URIs one input item names (a list file expands its lines, one level deep)."""
    item = item.strip()
    if not item:
        return []
    scheme = _scheme(item)
    if item.lower().endswith(LIST_SUFFIXES) and scheme in ("", "file", "s3"):
        out: list[str] = []
        for line in _read_list(item):
            out.extend(expand_item(line) if not line.lower().endswith(LIST_SUFFIXES) else [line])
        return out
    if scheme in ("http", "https"):
        return [item]
    if scheme == "s3":
        return _expand_s3(item)
    if scheme in ("", "file"):
        return _expand_local(item)
    raise InputError(f"input {item!r}: unsupported scheme {scheme!r}; use a local path, s3://, http(s):// or a list")


def scene_id_for(uri: str) -> str:
    """File name without its extension, made safe for object keys."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return _UNSAFE.sub("_", stem).strip("_") or "scene"


def resolve_inputs(
    items: list[str],
    bands: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    declared: Declared = Declared(),
) -> tuple[list[SceneRef], list[InputProblem]]:
    """Expand every item, drop duplicate URIs (first wins), and give each scene a unique id.

    `bands` (the checkpoint's band names) pick the assets of STAC items (default: an item's
    `sar:polarizations`); `units` gives a band's unit where an item declares none (e.g. {"VV": "dB"});
    `declared` (the config's `units`, scale/offset, `gcp_crs`) applies to plain rasters and, after `units`,
    to STAC assets.
    Two different URIs with the same id (file name or item id) get their id suffixed with 8 hex digits of the
    URI's SHA-1, so ids stay deterministic whatever the order of the inputs.
    """
    found_ids: list[tuple[str, str]] = []  # (uri, id)
    problems: list[InputProblem] = []

    def add_stac(uri: str) -> None:
        scenes, bad = stac_scenes(uri, bands, units, declared)
        found_ids.extend((s.uri, _UNSAFE.sub("_", s.item_id).strip("_") or "item") for s in scenes)
        problems.extend(InputProblem(where, reason) for where, reason in bad)
        if not scenes and not bad:
            problems.append(InputProblem(uri, f"STAC {uri} has no item"))

    for item in items:
        text = str(item).strip()
        try:
            if is_stac_input(text):
                add_stac(text)
                continue
            had_stac = False
            if _is_list(text):  # its STAC lines are STAC inputs, the others as in expand_item
                found = []
                for line in _read_list(text):
                    if is_stac_input(line):
                        add_stac(line)
                        had_stac = True
                    else:
                        found.extend(expand_item(line) if not _is_list(line) else [line])
            else:
                found = expand_item(text)
        except InputError as exc:
            problems.append(InputProblem(str(item), str(exc)))
            continue
        if not found and text and not had_stac:
            problems.append(InputProblem(str(item), f"input {item!r} matches no raster ({', '.join(RASTER_SUFFIXES)})"))
        for uri in found:
            try:
                found_ids.append((declared_scene(uri, declared), scene_id_for(uri)))
            except InputError as exc:
                problems.append(InputProblem(uri, str(exc)))
    seen: set[str] = set()
    unique: list[tuple[str, str]] = []
    for uri, sid in found_ids:
        if uri not in seen:
            seen.add(uri)
            unique.append((uri, sid))
    counts: dict[str, int] = {}
    for _, sid in unique:
        counts[sid] = counts.get(sid, 0) + 1
    scenes_out = []
    for uri, sid in unique:
        if counts[sid] > 1:
            sid = f"{sid}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}"
        scenes_out.append(SceneRef(sid, uri))
    return scenes_out, problems
