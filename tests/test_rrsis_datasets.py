"""RRSIS datasets: DIOR-RSVG XML (real sample + fixtures), refer pickles (restricted unpickler), JSONL."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from rrsis.data.coco_masks import rle_string_counts, segment_to_mask
from rrsis.data.refer import load_refer
from rrsis.data.referring import load_image, load_mask, load_referring_split
from rrsis.data.rsvg import load_rsvg
from rrsis.errors import InputError

XML = """<annotation><filename>{name}.jpg</filename><size><width>32</width><height>24</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = (
    "<object><name>{cat}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
    "</bndbox><description>{text}</description></object>"
)


def write_jpeg(path: Path, h: int = 24, w: int = 32) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return img


def test_real_dior_rsvg_xml(samples: Path) -> None:
    (s,) = load_rsvg(str(samples / "dior_rsvg"), "all")
    assert s.text == "A green and brown golf field"
    assert s.category == "golffield"
    assert s.box_xyxy == (133.0, 237.0, 684.0, 672.0)
    assert s.image_hw == (800, 800)
    assert s.image_path.endswith("JPEGImages/00001.jpg")


def rsvg_fixture(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    objs1 = OBJ.format(cat="vehicle", x1=1, y1=2, x2=10, y2=12, text="the car on the left") + OBJ.format(
        cat="ship", x1=12, y1=2, x2=30, y2=20, text="a large ship"
    )
    (root / "Annotations" / "00001.xml").write_text(XML.format(name="00001", objects=objs1))
    objs2 = OBJ.format(cat="dam", x1=0, y1=0, x2=32, y2=24, text="the dam")
    (root / "Annotations" / "00002.xml").write_text(XML.format(name="00002", objects=objs2))
    for name in ("00001", "00002"):
        write_jpeg(root / "JPEGImages" / f"{name}.jpg")
    (root / "train.txt").write_text("0\n2\n")  # object indices over sorted files: 0, 1 in 00001; 2 in 00002
    (root / "test.txt").write_text("1\n")
    return root


def test_dior_rsvg_splits_count_objects_across_files(tmp_path: Path) -> None:
    root = rsvg_fixture(tmp_path / "rsvg")
    train = load_rsvg(str(root), "train")
    assert [s.text for s in train] == ["the car on the left", "the dam"]
    (test,) = load_rsvg(str(root), "test")
    assert test.category == "ship" and test.box_xyxy == (12.0, 2.0, 30.0, 20.0)
    img = load_image(test)
    assert img.shape == (24, 32, 3) and img[0, 0, 0] > 150 and img[0, 0, 2] < 50  # RGB, not BGR
    assert load_mask(test) is None  # boxes only
    cfg = SimpleNamespace(format="dior_rsvg", root=str(root), image_dir="", split_file="")
    assert len(load_referring_split(cfg, "all")) == 3


def test_dior_rsvg_malformed_inputs_name_file_and_record(tmp_path: Path) -> None:
    root = rsvg_fixture(tmp_path / "rsvg")
    bad = OBJ.format(cat="ship", x1=5, y1=2, x2=3, y2=20, text="backwards box")
    (root / "Annotations" / "00003.xml").write_text(XML.format(name="00003", objects=bad))
    with pytest.raises(InputError, match=r"00003\.xml: object 0: box .* is empty"):
        load_rsvg(str(root), "all")
    (root / "Annotations" / "00003.xml").write_text(
        XML.format(
            name="00003",
            objects="<object><name>x</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>3</ymax></bndbox></object>",
        )
    )
    with pytest.raises(InputError, match=r"00003\.xml: object 0: missing <description>"):
        load_rsvg(str(root), "all")
    (root / "Annotations" / "00003.xml").unlink()
    (root / "val.txt").write_text("0\n7\n")
    with pytest.raises(InputError, match=r"val\.txt: index 7 is beyond the 3"):
        load_rsvg(str(root), "val")


def test_rle_decoding_by_hand() -> None:
    # one 6-bit chunk per count: '5' = 53 - 48 = 5, '3' = 3, '8' = 8; counts 0-2 are stored as they are
    assert rle_string_counts("538") == [5, 3, 8]
    # from the 4th count on, each is stored relative to the count two before: 'O' = 79 - 48 = 31 = 0b11111,
    # sign bit (0x10) set -> -1, so count 3 = 4 + (-1) = 3; '5' -> count 4 = 1 + 5 = 6
    assert rle_string_counts("241O5") == [2, 4, 1, 3, 6]
    m = segment_to_mask({"counts": "538", "size": [4, 4]}, (4, 4))
    want = np.zeros((4, 4), bool)
    want[1:4, 1] = True  # column-major: pixels 5, 6, 7 are rows 1-3 of column 1
    assert np.array_equal(m, want)
    assert np.array_equal(segment_to_mask({"counts": [5, 3, 8], "size": [4, 4]}, (4, 4)), want)
    poly = segment_to_mask([[0, 0, 2, 0, 2, 2, 0, 2]], (4, 4))
    assert poly[:3, :3].all() and poly.sum() == 9


def refer_fixture(root: Path, refs: list[object] | None = None) -> Path:
    root.mkdir(parents=True)
    write_jpeg(root / "images" / "a.jpg", 4, 4)
    write_jpeg(root / "images" / "b.jpg", 4, 4)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 4, "width": 4},
            {"id": 2, "file_name": "b.jpg", "height": 4, "width": 4},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 1, 1, 3],
                "segmentation": {"counts": "538", "size": [4, 4]},
            },
            {
                "id": 20,
                "image_id": 2,
                "category_id": 4,
                "bbox": [0, 0, 2, 2],
                "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]],
            },
            {
                "id": 21,
                "image_id": 2,
                "category_id": 4,
                "bbox": [3, 3, 1, 1],
                "segmentation": {"counts": [15, 1], "size": [4, 4]},
            },
        ],
        "categories": [{"id": 3, "name": "vehicle"}, {"id": 4, "name": "storagetank"}],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    if refs is None:
        refs = [
            {
                "ref_id": 0,
                "image_id": 1,
                "ann_id": 10,
                "split": "train",
                "category_id": 3,
                "file_name": "a.jpg",
                "sentences": [{"sent_id": 0, "sent": "the car"}, {"sent_id": 1, "raw": "a vehicle"}],
            },
            # RRSIS-M style: one expression, two instances
            {
                "ref_id": 1,
                "image_id": 2,
                "ann_id": [20, 21],
                "split": "test",
                "category_id": 4,
                "sentences": [{"sent_id": 2, "sent": "the storage tanks"}],
            },
        ]
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def test_refer_splits_masks_and_multi_instance(tmp_path: Path) -> None:
    root = refer_fixture(tmp_path / "rrsisd")
    train = load_refer(str(root), "train")
    assert [s.text for s in train] == ["the car", "a vehicle"]
    assert train[0].category == "vehicle" and train[0].box_xyxy == (1.0, 1.0, 2.0, 4.0)
    m = load_mask(train[0], (4, 4))
    assert m is not None and m.sum() == 3 and m[1:4, 1].all()
    (tanks,) = load_refer(str(root), "test")
    assert tanks.box_xyxy == (0.0, 0.0, 4.0, 4.0)  # enclosing box of both instances
    mt = load_mask(tanks)
    assert mt is not None and mt.sum() == 4 + 1 and mt[3, 3] and mt[:2, :2].all()  # union: 2x2 polygon + 1 px
    assert load_image(tanks).shape == (4, 4, 3)


def test_refer_malformed_records_name_file_and_ref(tmp_path: Path) -> None:
    root = refer_fixture(
        tmp_path / "bad",
        refs=[{"ref_id": 5, "image_id": 1, "ann_id": 99, "split": "train", "sentences": [{"sent": "x"}]}],
    )
    with pytest.raises(InputError, match=r"refs\(unc\)\.p: ref 0: ann_id 99 is not in instances.json"):
        load_refer(str(root), "train")
    (root / "refs(unc).p").write_bytes(pickle.dumps([{"ref_id": 1}]))
    with pytest.raises(InputError, match=r"ref 0: missing or bad field 'image_id'"):
        load_refer(str(root), "all")
    (root / "refs(unc).p").write_bytes(b"\x80\x04garbage")
    with pytest.raises(InputError, match=r"refs\(unc\)\.p: not a readable refs pickle"):
        load_refer(str(root), "all")


class _OpensAFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


class _RunsAShellCommand:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_OpensAFile, _RunsAShellCommand])
def test_malicious_refs_pickle_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    root = refer_fixture(tmp_path / "evil")
    victim = tmp_path / "pwned.txt"
    refs = [{"ref_id": 0, "image_id": 1, "ann_id": 10, "split": "train", "sentences": [payload(str(victim))]}]
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(InputError, match=r"refs\(unc\)\.p: refused to load \w+\.(open|system) "):
        load_refer(str(root), "all")
    assert not victim.exists()


def test_jsonl_records_and_errors(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "img.jpg", 8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:6] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    lines = [
        {"id": "a", "image": "img.jpg", "text": "the roof", "box": [2, 2, 6, 4], "mask": "m.png", "split": "test"},
        {"image": "img.jpg", "text": "a tree", "box": [0, 0, 1, 1], "split": "train"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = SimpleNamespace(format="jsonl", root=str(path), image_dir="", split_file="")
    (s,) = load_referring_split(cfg, "test")
    assert s.sample_id == "a" and s.box_xyxy == (2.0, 2.0, 6.0, 4.0)
    m = load_mask(s, (8, 8))
    assert m is not None and m.sum() == 8
    assert len(load_referring_split(cfg, "all")) == 2
    path.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"data\.jsonl: line 2: not valid JSON"):
        load_referring_split(cfg, "all")
    path.write_text(json.dumps({"image": "img.jpg", "text": "x"}) + "\n")
    with pytest.raises(InputError, match=r"line 1: needs a 'box' and/or a 'mask'"):
        load_referring_split(cfg, "all")
    path.write_text(json.dumps({"image": "img.jpg", "text": "", "box": [0, 0, 1, 1]}) + "\n")
    with pytest.raises(InputError, match=r"line 1: missing or empty 'text'"):
        load_referring_split(cfg, "all")
