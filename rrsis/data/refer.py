"""RefCOCO-style referring datasets: RRSIS-D, RefSegRS (converted to the refer layout) and RRSIS-M.

Layout (as the LAVT/RMSIN `refer` API reads it): `<root>/refs(<split_by>).p` (a pickled list of refs) and
`<root>/instances.json` (COCO images / annotations / categories); images in `<root>/images` unless
`data.image_dir` says otherwise. A ref has `ref_id`, `image_id`, `ann_id`, `split`, `category_id` and
`sentences` ([{"sent_id", "sent" or "raw"}]); each sentence is one expression (one sample). RRSIS-M refers
to several instances of a scene at once: its `ann_id` may be a list, and the target is their union.

The pickle is read by `RestrictedUnpickler`, which admits builtin containers and scalars only: a refs file
that names any class or function (os.system, numpy, ...) is refused before anything runs.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

from rrsis.data.referring_sample import ReferringSample, require_dir
from rrsis.errors import InputError

# What a pickle may name: only builtin value types (protocol <= 2 pickles name set/frozenset this way).
ALLOWED_GLOBALS = {
    ("builtins", name)
    for name in (
        "set",
        "frozenset",
        "list",
        "dict",
        "tuple",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "bool",
        "complex",
    )
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside the allowed set."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside `ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refused to load {module}.{name} (only builtin containers and scalars)")


def restricted_load(path: Path) -> Any:
    """Unpickle a refs file safely; Python 2 pickles (the original refer files) decode as latin-1."""
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as exc:
        raise InputError(f"{path}: {exc}") from exc
    except Exception as exc:  # truncated or corrupt pickles raise EOFError, ValueError, ...
        raise InputError(f"{path}: not a readable refs pickle ({type(exc).__name__}: {exc})") from exc


def find_refs_file(base: Path, refs_file: str) -> Path:
    if refs_file:
        p = Path(refs_file) if Path(refs_file).is_absolute() else base / refs_file
        if not p.is_file():
            raise InputError(f"{p}: refs file not found (data.split_file)")
        return p
    found = sorted(base.glob("refs(*).p"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputError(f"{base}: need exactly one refs(*).p (found {names}); set data.split_file")
    return found[0]


def _index_instances(path: Path) -> tuple[dict[int, Any], dict[int, Any], dict[int, str]]:
    try:
        coco = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read COCO instances JSON ({exc})") from exc
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise InputError(f"{path}: missing list {key!r}")
    try:
        images = {int(im["id"]): im for im in coco["images"]}
        anns = {int(a["id"]): a for a in coco["annotations"]}
        cats = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: an image, annotation or category has no valid 'id' ({exc})") from exc
    return images, anns, cats


def _ref_samples(
    ref: Any,
    n: int,
    refs_path: Path,
    images: dict[int, Any],
    anns: dict[int, Any],
    cats: dict[int, str],
    image_dir: Path,
) -> list[ReferringSample]:
    where = f"{refs_path}: ref {n}"
    if not isinstance(ref, dict):
        raise InputError(f"{where}: is a {type(ref).__name__}, not a dict")
    try:
        ref_id, image_id = ref["ref_id"], int(ref["image_id"])
        ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], (list, tuple)) else [ref["ann_id"]]
        sentences = ref["sentences"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: missing or bad field {exc}") from exc
    image = images.get(image_id)
    if image is None:
        raise InputError(f"{where}: image_id {image_id} is not in instances.json")
    hw = (int(image["height"]), int(image["width"]))
    instances = []
    for a in ann_ids:
        if int(a) not in anns:
            raise InputError(f"{where}: ann_id {a} is not in instances.json")
        instances.append(anns[int(a)])
    boxes = [inst["bbox"] for inst in instances if "bbox" in inst]
    box: tuple[float, float, float, float] | None = None
    if boxes:  # COCO [x, y, w, h] -> xyxy; several instances -> their enclosing box
        box = (
            float(min(b[0] for b in boxes)),
            float(min(b[1] for b in boxes)),
            float(max(b[0] + b[2] for b in boxes)),
            float(max(b[1] + b[3] for b in boxes)),
        )
    category = cats.get(int(ref.get("category_id", instances[0].get("category_id", -1)) if instances else -1), "")
    segments = tuple(inst["segmentation"] for inst in instances if inst.get("segmentation"))
    out = []
    for k, sent in enumerate(sentences):
        text = (sent.get("sent") or sent.get("raw") or "").strip() if isinstance(sent, dict) else ""
        if not text:
            raise InputError(f"{where}: sentence {k} has no text")
        out.append(
            ReferringSample(
                sample_id=f"{ref_id}_{sent.get('sent_id', k)}",
                image_path=str(image_dir / str(image.get("file_name", ref.get("file_name", "")))),
                text=text,
                category=category,
                box_xyxy=box,
                segments=segments,
                image_hw=hw,
            )
        )
    return out


def load_refer(root: str, split: str, refs_file: str = "", image_dir: str = "") -> list[ReferringSample]:
    """One sample per sentence of every ref whose `split` matches (or every ref for "all")."""
    base = require_dir(root, "refer dataset root")
    refs_path = find_refs_file(base, refs_file)
    refs = restricted_load(refs_path)
    if not isinstance(refs, list):
        raise InputError(f"{refs_path}: holds a {type(refs).__name__}, not a list of refs")
    images, anns, cats = _index_instances(base / "instances.json")
    img_dir = Path(image_dir) if image_dir else base / "images"
    out: list[ReferringSample] = []
    for n, ref in enumerate(refs):
        if split != "all" and isinstance(ref, dict) and ref.get("split") != split:
            continue
        out.extend(_ref_samples(ref, n, refs_path, images, anns, cats, img_dir))
    return out
