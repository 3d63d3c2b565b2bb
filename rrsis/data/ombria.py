"""OMBRIA (Drakonakis et al., IEEE JSTARS 2022): Sentinel-1 flood chips, before/after images and a flood mask.

Layouts under `data.root` (the folder holding `OmbriaS1/` and/or `2021/`), each in a nested form (one folder
per role, as published) or flat (all three files in one folder):
- `OmbriaS1/{train,test}/{BEFORE,AFTER,MASK}/S1_{before,after,mask}_NNNN.png`; group `OmbriaS1-train` or
  `OmbriaS1-test` (the chips' events are not given, so the published split is the only grouping).
- `2021/<EVENT>/Sentinel1/{BEFORE,AFTER,MASK}/{imbefore,imafter,gt}_N.png`; group `<EVENT>` (e.g. ALBANIA).
All PNGs are 1 band, 8 bit, 256 x 256, without georeferencing. Masks are 0 / 255, 255 = flooded.

What the 8-bit values are (measured on the 624 `OmbriaS1/train` triplets, none of it documented upstream):
- **A per-image min-max stretch.** Every after and every before image has its minimum at exactly 0 and its
  maximum at exactly 255, so each chip has its own unknown offset and scale: absolute backscatter is lost.
- **Of dB, not of linear power or amplitude.** Non-flooded pixels of the after images have a median of 171
  DN and a left-skewed histogram (skewness -0.64; per chip median 183, -0.69). The same min-max stretch
  applied to 256 px crops of the Sen1Floods11 chips gives, for dB, a land median of 158 (VV) / 180 (VH) and
  skewness -0.25 / -0.60; for amplitude 77 / 91 and +0.5 / +0.4; for linear power 31 / 37 and +1.5 / +1.3.
  Only the dB stretch matches. Flooded pixels sit 76 DN below the rest (chip medians 107 vs 183), about the
  8-10 dB water-land contrast of Sen1Floods11 for the ~9 DN/dB such a stretch gives.
- **The polarisation cannot be told from the values.** The land median and skewness sit nearer a VH
  stretch, the low percentiles nearer a VV one (with or without a 3-5 px median filter). A third-party
  description of the dataset (not upstream) says VV with a 30 m median filter; the band is named VV here,
  the usual single-polarisation flood band, and the evidence for that is weak.

Hence the PNG -> tensor scaling: the digital numbers go in unchanged (float32) and the model must normalise
each chip by its own robust statistics (`data.norm=scene`: median and IQR/1.349). That rule is exactly
invariant to a per-image affine stretch, so an OMBRIA chip and a Sen1Floods11 chip in dB land in the same
input space (up to 8-bit quantisation and the clipping of the stretch); any fixed affine DN -> dB would be
wrong by each chip's own unknown offset and scale. `check_norm` enforces this.

The masks are Copernicus EMS flood delineations drawn on other imagery: permanent water is 0 (land) and the
edges are not pixel-aligned, so they teach flood extent, not water/land. The before images are found and
checked with each triplet (`OmbriaSample.before`) but not fed to the water-land model, which sees one image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rrsis.data.pairs import SampleRef
from rrsis.errors import ConfigError, InputError

BAND_NAMES = ("VV",)  # one band; see the module docstring for why it is called VV
FLOOD_VALUE = 255
# (folder that holds one split or event, file name of each role with {n} for the chip number)
_S1_FILES = {"before": "S1_before_{n}.png", "after": "S1_after_{n}.png", "mask": "S1_mask_{n}.png"}
_2021_FILES = {"before": "imbefore_{n}.png", "after": "imafter_{n}.png", "mask": "gt_{n}.png"}
_ROLE_DIRS = {"before": "BEFORE", "after": "AFTER", "mask": "MASK"}
_AFTER_NAME = {"S1": re.compile(r"^S1_after_(?P<n>\d+)\.png$"), "2021": re.compile(r"^imafter_(?P<n>\d+)\.png$")}


@dataclass(frozen=True)
class OmbriaSample:
    """One before/after/mask triplet of one chip."""

    sample_id: str
    group: str
    before: str
    after: str
    mask: str
    width: int
    height: int

    def ref(self) -> SampleRef:
        """The water-land sample: the after image with the flood mask (255 = flooded, read as water)."""
        return SampleRef(
            sample_id=self.sample_id,
            group=self.group,
            image_uri=self.after,
            label_uri=self.mask,
            bands=(1,),
            width=self.width,
            height=self.height,
            kind="png",
            water_value=FLOOD_VALUE,
        )


def band_indexes(bands: Sequence[str]) -> tuple[list[str], list[int]]:
    """OMBRIA has one band: `data.bands` must be empty or [VV]."""
    names = [b.upper() for b in bands] or list(BAND_NAMES)
    if names != list(BAND_NAMES):
        raise InputError(f"data.bands={list(bands)}: OMBRIA chips have one band, {BAND_NAMES[0]} (or leave it empty)")
    return names, [1]


def check_norm(norm: str, key: str = "data.norm") -> None:
    """OMBRIA's 8-bit values are a per-image stretch: only per-scene normalisation puts them in a model's space."""
    if norm != "scene":
        raise ConfigError(
            f"{key}={norm!r}: OMBRIA chips are stretched per image (no absolute dB), so they need norm=scene"
        )


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a 1-band 8-bit PNG, after checking the whole file's chunks; errors name the file."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            mode, size = img.mode, img.size
    except (OSError, SyntaxError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"OMBRIA file {path} is not a readable PNG: {first}") from exc
    if mode != "L":
        raise InputError(f"OMBRIA file {path}: expected a 1-band 8-bit PNG (mode L), got mode {mode}")
    return size


def _role_path(folder: Path, nested: bool, role: str, names: dict[str, str], n: str) -> Path:
    return (folder / _ROLE_DIRS[role] if nested else folder) / names[role].format(n=n)


def _triplets(folder: Path, kind: str, group: str, prefix: str) -> list[OmbriaSample]:
    """The triplets of one split or event folder, nested (BEFORE/AFTER/MASK) or flat."""
    names = _S1_FILES if kind == "S1" else _2021_FILES
    nested = (folder / _ROLE_DIRS["after"]).is_dir()
    after_dir = folder / _ROLE_DIRS["after"] if nested else folder
    out = []
    for after in sorted(after_dir.glob("*.png")):
        match = _AFTER_NAME[kind].match(after.name)
        if match is None:
            continue
        n = match["n"]
        paths = {role: _role_path(folder, nested, role, names, n) for role in names}
        for role, path in paths.items():
            if not path.is_file():
                raise InputError(f"OMBRIA sample {after} is incomplete: its {role} image {path} is missing")
        sizes = {role: _png_size(path) for role, path in paths.items()}
        if len(set(sizes.values())) != 1:
            shown = ", ".join(f"{paths[r].name} {w}x{h}" for r, (w, h) in sizes.items())
            raise InputError(f"OMBRIA sample {after}: its three images differ in size ({shown})")
        width, height = sizes["after"]
        out.append(
            OmbriaSample(
                f"{prefix}_{n}", group, str(paths["before"]), str(paths["after"]), str(paths["mask"]), width, height
            )
        )
    return out


def find_samples(root: str) -> list[OmbriaSample]:
    """Every OMBRIA triplet under `root` (`OmbriaS1/{train,test}` and `2021/<EVENT>/Sentinel1`), sorted by id.

    A missing before/after/mask file or a PNG that does not decode as 1-band 8-bit is an InputError naming it."""
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"data.root={root}: OMBRIA folder not found")
    samples: list[OmbriaSample] = []
    for split in ("train", "test"):
        folder = base / "OmbriaS1" / split
        if folder.is_dir():
            samples += _triplets(folder, "S1", f"OmbriaS1-{split}", f"OmbriaS1-{split}")
    events = base / "2021"
    if events.is_dir():
        for event in sorted(p for p in events.iterdir() if (p / "Sentinel1").is_dir()):
            samples += _triplets(event / "Sentinel1", "2021", event.name, event.name)
    if not samples:
        raise InputError(
            f"data.root={root}: no OMBRIA chips (expected OmbriaS1/{{train,test}}/AFTER/S1_after_NNNN.png or "
            "2021/<EVENT>/Sentinel1/AFTER/imafter_N.png, or the same files without the role folders)"
        )
    return sorted(samples, key=lambda s: s.sample_id)


def find_refs(root: str, bands: Sequence[str] = ()) -> list[SampleRef]:
    """The water-land sample refs (after image + flood mask) of every triplet under `root`."""
    band_indexes(bands)
    return [sample.ref() for sample in find_samples(root)]
