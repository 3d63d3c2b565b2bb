"""The split loader shared by every RRSIS format: `data.format` picks the reader.

Formats: `dior_rsvg` (rrsis.data.rsvg), `refer` (RRSIS-D / RefSegRS / RRSIS-M, rrsis.data.refer) and
`jsonl` (rrsis.data.jsonl). The sample type and its pixel readers live in `rrsis.data.referring_sample`
(re-exported here for callers).
"""

from __future__ import annotations

from typing import Any

from rrsis.data.jsonl import load_jsonl
from rrsis.data.refer import load_refer
from rrsis.data.referring_sample import ReferringSample, load_image, load_mask, require_dir
from rrsis.data.rsvg import load_rsvg
from rrsis.errors import ConfigError

__all__ = ["REFERRING_FORMATS", "ReferringSample", "load_image", "load_mask", "load_referring_split", "require_dir"]

REFERRING_FORMATS = ("dior_rsvg", "refer", "jsonl")


def load_referring_split(data: Any, split: str) -> list[ReferringSample]:
    """The samples of `split` for a `data.*` config section (`format`, `root`, `split_file`, `image_dir`)."""
    if data.format == "dior_rsvg":
        return load_rsvg(data.root, split, image_dir=data.image_dir)
    if data.format == "refer":
        return load_refer(data.root, split, refs_file=data.split_file, image_dir=data.image_dir)
    if data.format == "jsonl":
        return load_jsonl(data.root, split)
    raise ConfigError(
        f"config error: key 'data.format': {data.format!r} is not a referring format; "
        f"allowed: {', '.join(REFERRING_FORMATS)}"
    )
