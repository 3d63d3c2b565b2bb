"""DIOR-RSVG (Zhan et al. 2023): VOC-style XML per image with one `<description>` per object.

Published layout: `<root>/Annotations/*.xml`, `<root>/JPEGImages/*.jpg`, and `<root>/{train,val,test}.txt`
listing object indices, one per line. As in the authors' MGVLF loader, an index counts objects over all
XML files in order (here: sorted file names, i.e. 00001.xml, 00002.xml, ...), objects in document order.
Without a split file, `split="all"` (or a missing file for a single-split fixture) is an error that says so;
every object carries a box, the expression, and its class name as the category.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rrsis.data.referring_sample import ReferringSample, require_dir
from rrsis.errors import InputError


def _text(node: ET.Element, path: str, where: str) -> str:
    child = node.find(path)
    if child is None or child.text is None or not child.text.strip():
        raise InputError(f"{where}: missing <{path}>")
    return child.text.strip()


def parse_rsvg_xml(xml_path: Path, image_dir: Path, first_index: int) -> list[tuple[int, ReferringSample]]:
    """(global object index, sample) for every object of one annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{xml_path}: not valid XML ({exc})") from exc
    filename = _text(root, "filename", str(xml_path))
    try:
        hw = (int(_text(root, "size/height", str(xml_path))), int(_text(root, "size/width", str(xml_path))))
    except ValueError as exc:
        raise InputError(f"{xml_path}: <size> is not integer") from exc
    out = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path}: object {k}"
        try:
            x1, y1, x2, y2 = (float(_text(obj, f"bndbox/{t}", where)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise InputError(f"{where}: <bndbox> coordinates are not numbers") from exc
        if not (0 <= x1 < x2 <= hw[1] and 0 <= y1 < y2 <= hw[0]):
            raise InputError(f"{where}: box {[x1, y1, x2, y2]} is empty or outside the {hw[1]}x{hw[0]} image")
        sample = ReferringSample(
            sample_id=f"{xml_path.stem}_{k}",
            image_path=str(image_dir / filename),
            text=_text(obj, "description", where),
            category=_text(obj, "name", where),
            box_xyxy=(x1, y1, x2, y2),
            image_hw=hw,
        )
        out.append((first_index + k, sample))
    return out


def read_split_indices(path: Path) -> set[int]:
    indices = set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            indices.add(int(line.strip()))
        except ValueError as exc:
            raise InputError(f"{path}: line {n}: {line.strip()!r} is not an object index") from exc
    return indices


def load_rsvg(root: str, split: str, image_dir: str = "") -> list[ReferringSample]:
    """Every object of `split` (train/val/test via `<root>/<split>.txt`; "all" = every object)."""
    base = require_dir(root, "DIOR-RSVG root")
    ann_dir = require_dir(base / "Annotations", "DIOR-RSVG Annotations")
    images = Path(image_dir) if image_dir else base / "JPEGImages"
    xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise InputError(f"{ann_dir}: no .xml annotation files")
    all_objects: list[tuple[int, ReferringSample]] = []
    for xml_path in xmls:
        all_objects.extend(parse_rsvg_xml(xml_path, images, len(all_objects)))
    if split == "all":
        return [s for _, s in all_objects]
    split_file = base / f"{split}.txt"
    if not split_file.is_file():
        raise InputError(f"{split_file}: split file not found (DIOR-RSVG ships train.txt, val.txt, test.txt)")
    wanted = read_split_indices(split_file)
    beyond = sorted(i for i in wanted if not 0 <= i < len(all_objects))
    if beyond:
        raise InputError(f"{split_file}: index {beyond[0]} is beyond the {len(all_objects)} annotated objects")
    return [s for i, s in all_objects if i in wanted]
