"""Water-land datasets on real files: the shipped Sen1Floods11 chips, generated SNOWED folders and GeoTIFFs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rrsis.config.train import DataConfig
from rrsis.data.augment import dihedral, random_dihedral
from rrsis.data.dataset import WaterLandDataset, build_splits, eval_windows
from rrsis.data.normalize import NormStats, compute_stats
from rrsis.data.pairs import find_geotiff_pairs, read_sample
from rrsis.data.sen1floods11 import find_chips
from rrsis.data.snowed import find_samples
from rrsis.errors import ConfigError, InputError
from rrsis.geo.tiling import PixelWindow


def _tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 4000000),
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def test_sen1floods11_real_chips_split_by_event_and_skip_empty(samples: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = samples / "sen1floods11"
    chips = find_chips(str(root), "s1")
    assert len(chips) == 9 and chips[0].bands == (1, 2)
    caplog.set_level(logging.WARNING)
    splits = build_splits(DataConfig(root=str(root), val_events=["India", "Mekong"]))
    skipped = [r.getMessage() for r in caplog.records if "skipping sample" in r.getMessage()]
    # Ghana_83483: label all -1; Paraguay_34417: image all NaN. One warning line each, no crash.
    assert len(skipped) == 2
    assert any("Ghana_83483" in m and "label" in m for m in skipped)
    assert any("Paraguay_34417" in m and "image" in m for m in skipped)
    assert [r.sample_id for r in splits.val] == ["India_900498", "Mekong_333434"]
    assert {r.group for r in splits.train} == {"Ghana", "Pakistan", "Spain"}
    assert splits.bands == ["VV", "VH"]
    with pytest.raises(ConfigError, match="Atlantis"):
        build_splits(DataConfig(root=str(root), val_events=["Atlantis"]))


def test_sen1floods11_read_masks_nodata_and_s2_bands(samples: Path) -> None:
    root = samples / "sen1floods11"
    ref = next(r for r in find_chips(str(root), "s1") if r.sample_id == "Mekong_333434")
    image, valid, label = read_sample(ref, PixelWindow(100, 50, 64, 32))
    assert image.shape == (2, 32, 64) and label.shape == (32, 64)
    with rasterio.open(ref.label_uri) as src:
        raw = src.read(1, window=((50, 82), (100, 164)))
    assert np.array_equal(label[raw == -1], np.full((raw == -1).sum(), -1))
    assert set(np.unique(label)) <= {-1, 0, 1}
    assert np.isfinite(image).all() and valid.any()
    s2 = find_chips(str(root), "s2")  # the paper's B2, B3, B4, B8 = bands 2, 3, 4, 8 of the 13
    assert [r.sample_id for r in s2] == ["Spain_7370579"] and s2[0].bands == (2, 3, 4, 8)


def test_sen1floods11_bad_layout_names_the_file(samples: Path, tmp_path: Path) -> None:
    root = tmp_path / "s1f"
    (root / "LabelHand").mkdir(parents=True)
    (root / "S1Hand").mkdir()
    src = samples / "sen1floods11" / "S1Hand" / "India_900498_S1Hand.tif"
    shutil.copy(src, root / "S1Hand" / "India_900498_S1Hand.tif")
    with pytest.raises(InputError, match=r"India_900498_LabelHand\.tif"):
        find_chips(str(root))
    (root / "S1Hand" / "India_900498_S1Hand.tif").unlink()
    shutil.copy(src, root / "S1Hand" / "chip.tif")
    with pytest.raises(InputError, match=r"chip\.tif: not a Sen1Floods11 name"):
        find_chips(str(root))
    with pytest.raises(InputError, match="needs"):
        find_chips(str(tmp_path / "nowhere"))


def _snowed(root: Path, name: str, image: np.ndarray, label: np.ndarray) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    np.save(folder / "sample_2A.npy", image)
    np.save(folder / "label.npy", label)
    (folder / "metadata.pkl").write_bytes(b"never unpickled")
    return folder


def test_snowed_layout_bands_and_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 5000, size=(16, 16, 12)).astype(np.float32)
    label = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    _snowed(tmp_path, "0001", image, label)
    _snowed(tmp_path, "0002", image, np.zeros((16, 16), np.uint8))
    refs = find_samples(str(tmp_path))
    assert [r.sample_id for r in refs] == ["0001", "0002"]
    assert refs[0].bands == (2, 3, 4, 8)  # B2, B3, B4, B8 in B1..B8, B8A, B9, B11, B12 order
    out, valid, lab = read_sample(refs[0], PixelWindow(4, 2, 8, 6))
    assert np.array_equal(out, np.moveaxis(image[2:8, 4:12][:, :, [1, 2, 3, 7]], -1, 0))
    assert np.array_equal(lab, label[2:8, 4:12]) and valid.all()
    # a window past the edge reads boundless: outside is invalid and ignored
    out, valid, lab = read_sample(refs[0], PixelWindow(12, 12, 8, 8))
    assert valid[:4, :4].all() and not valid[4:].any() and (lab[4:] == -1).all()


def test_snowed_bad_samples_name_the_file(tmp_path: Path) -> None:
    folder = _snowed(tmp_path, "0001", np.zeros((8, 8, 12), np.float32), np.zeros((8, 8), np.uint8))
    (folder / "label.npy").unlink()
    with pytest.raises(InputError, match=r"0001 lacks label\.npy"):
        find_samples(str(tmp_path))
    np.save(folder / "label.npy", np.zeros((8, 9), np.uint8))
    with pytest.raises(InputError, match=r"label.npy: shape \(8, 9\)"):
        find_samples(str(tmp_path))
    np.save(folder / "sample_2A.npy", np.zeros((8, 8, 4), np.float32))
    with pytest.raises(InputError, match=r"sample_2A.npy: expected \(H, W, 12\)"):
        find_samples(str(tmp_path))
    np.save(folder / "sample_2A.npy", np.zeros((8, 8, 12), np.float32))
    np.save(folder / "label.npy", np.full((8, 8), 7, np.uint8))
    with pytest.raises(InputError, match=r"label .*label.npy has values \[7\]"):
        read_sample(find_samples(str(tmp_path))[0])


def test_geotiff_pairs_crop_band_selection_and_nodata(tmp_path: Path) -> None:
    image = np.arange(3 * 40 * 30, dtype=np.float32).reshape(3, 40, 30)
    image[:, 0, 0] = -9999.0
    label = np.zeros((1, 40, 30), np.uint8)
    label[0, 20:, :] = 1
    label[0, 0:2, 5] = 255
    _tif(tmp_path / "images" / "a.tif", image, nodata=-9999.0)
    _tif(tmp_path / "labels" / "a.tif", label, nodata=255)
    (ref,) = find_geotiff_pairs(str(tmp_path), ["3", "1"])
    assert ref.bands == (3, 1) and (ref.width, ref.height) == (30, 40)
    out, valid, lab = read_sample(ref, PixelWindow(0, 0, 8, 8))
    assert np.array_equal(out[:, 1:, 1:], image[[2, 0], 1:8, 1:8])
    assert not valid[0, 0] and lab[0, 0] == -1  # image nodata -> invalid -> ignored label
    assert (lab[0:2, 5] == -1).all() and lab[5, 5] == 0
    _tif(tmp_path / "labels" / "a.tif", np.full((1, 40, 30), 3, np.uint8))
    with pytest.raises(InputError, match=r"labels/a.tif has values \[3\]"):
        read_sample(ref)
    (tmp_path / "images" / "b.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match=r"b\.tif"):
        find_geotiff_pairs(str(tmp_path), [])


def test_normalisation_stats_hand_computed(tmp_path: Path) -> None:
    # band 1 valid values: 1, 3 (chip a) and 5, 7 (chip b) -> mean 4, var ((9 + 1 + 1 + 9) / 4) = 5
    # band 2 valid values: 10, 10, 10, 10 -> mean 10, std 0 (clipped to MIN_STD); NaN pixels are invalid
    a = np.array([[[1, 3, np.nan]], [[10, 10, 99]]], dtype=np.float32)
    b = np.array([[[5, 7, np.nan]], [[10, 10, 99]]], dtype=np.float32)
    for name, data in (("a", a), ("b", b)):
        _tif(tmp_path / "images" / f"{name}.tif", data)
        _tif(tmp_path / "labels" / f"{name}.tif", np.zeros((1, 1, 3), np.uint8))
    stats = compute_stats(find_geotiff_pairs(str(tmp_path), []), ["x", "y"])
    assert stats.norm_mean == pytest.approx([4.0, 10.0])
    assert stats.norm_std[0] == pytest.approx(np.sqrt(5.0))
    assert 0 < stats.norm_std[1] <= 1e-6


def test_dihedral_augment_keeps_image_label_valid_aligned() -> None:
    base = np.arange(12).reshape(3, 4)
    variants = {dihedral(base, k, f).tobytes() + bytes(dihedral(base, k, f).shape) for k in range(4) for f in (0, 1)}
    assert len(variants) == 8  # the 8 elements of the dihedral group are distinct on an asymmetric array
    image = np.stack([base, base * 2]).astype(np.float32)
    for _ in range(6):
        img, lab, val = random_dihedral(image, base.copy(), base % 2 == 0)
        assert np.array_equal(img[0], lab) and np.array_equal(img[1], 2 * lab) and np.array_equal(val, lab % 2 == 0)


def test_dataset_crops_and_eval_cover(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(2, 50, 70)).astype(np.float32)
    _tif(tmp_path / "images" / "s.tif", data)
    _tif(tmp_path / "labels" / "s.tif", (data[:1] > 0).astype(np.uint8))
    refs = find_geotiff_pairs(str(tmp_path), [])
    stats = NormStats(["a", "b"], [0.0, 0.0], [2.0, 2.0])
    train = WaterLandDataset(refs, stats, train=True, crop_px=32, augment=True, crops_per_sample=3)
    item = train[0]
    assert len(train) == 3 and item["image"].shape == (2, 32, 32) and item["label"].dtype.is_floating_point is False
    windows = eval_windows(refs[0], 32)  # 70 x 50 in 32 px tiles: 3 columns x 2 rows, edge tiles boundless
    assert len(windows) == 6 and {(w.width, w.height) for w in windows} == {(32, 32)}
    tiles = WaterLandDataset(refs, stats, train=False, crop_px=32)
    # every pixel counted once: valid pixels over the 6 tiles = 70 * 50, the 96 x 64 - 70 x 50 padding is invalid
    assert sum(int(tiles[i]["valid"].sum()) for i in range(len(tiles))) == 70 * 50
    val = WaterLandDataset(refs, stats, train=False)
    assert np.allclose(val[0]["image"].numpy(), data / 2.0, atol=1e-6)
    with pytest.raises(InputError, match="no usable sample"):
        WaterLandDataset([], stats, train=True)
