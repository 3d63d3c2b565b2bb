"""A simple format for users' own referring data: one JSON object per line.

Keys: `image` (path, relative to the file's folder), `text`, and at least one of `box` ([x1, y1, x2, y2]
in pixels) and `mask` (path to a single-band PNG/TIFF, non-zero = object); optional `id`, `category`,
`split`. `data.root` is either a `.jsonl` file (lines filtered by their `split`, "all" keeps every line)
or a folder holding `<split>.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rrsis.data.referring_sample import ReferringSample
from rrsis.errors import InputError


def parse_line(obj: object, where: str, folder: Path, n: int) -> ReferringSample:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a JSON object")
    for key in ("image", "text"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise InputError(f"{where}: missing or empty {key!r}")
    if "box" not in obj and "mask" not in obj:
        raise InputError(f"{where}: needs a 'box' and/or a 'mask'")
    box = None
    if "box" in obj:
        b = obj["box"]
        if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
            raise InputError(f"{where}: 'box' must be [x1, y1, x2, y2] numbers, got {b!r}")
        if not (b[0] < b[2] and b[1] < b[3]):
            raise InputError(f"{where}: 'box' {b} is empty (need x1 < x2 and y1 < y2)")
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    mask = str(folder / obj["mask"]) if isinstance(obj.get("mask"), str) else None
    if "mask" in obj and mask is None:
        raise InputError(f"{where}: 'mask' must be a path")
    return ReferringSample(
        sample_id=str(obj.get("id", n)),
        image_path=str(folder / obj["image"]),
        text=obj["text"].strip(),
        category=str(obj.get("category", "")),
        box_xyxy=box,
        mask_path=mask,
    )


def load_jsonl(root: str, split: str) -> list[ReferringSample]:
    p = Path(root)
    path = p if p.suffix == ".jsonl" else p / f"{split}.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: JSONL file not found")
    filter_split = p.suffix == ".jsonl" and split != "all"
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from exc
        sample = parse_line(obj, where, path.parent, n)
        if filter_split and obj.get("split", split) != split:
            continue
        out.append(sample)
    return out
