"""`SceneMeasurer`: each scene's decimated read once per actor, the next scene's taken ahead in a thread.

Real GeoTIFFs written here; the reads are the real `measure_scene`, counted through a wrapper.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rrsis.checkpoints import load_checkpoint, save_checkpoint
from rrsis.data.normalize import SceneMeasures, measure_scene, scene_measures_needed, scene_stats, scene_thresholds
from rrsis.pipeline import scene_inputs
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.scene_inputs import SceneMeasurer
from rrsis.pipeline.stages import InferStage, read_stage
from tests.test_otsu import _otsu_checkpoint
from tests.test_scene_norm import _write


def _scenes(tmp_path: Path, n: int) -> list[str]:
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    water = np.sin(xx / 13.0) * np.cos(yy / 11.0) > 0.3
    out = []
    for i in range(n):
        vv = np.where(water, -20.0, -8.0) + 2.0 * i + np.sin(yy / 7.0)
        out.append(_write(tmp_path / f"s{i}.tif", np.stack([vv, vv - 7.0])))
    return out


class _Recorder:
    """`measure_scene` that records which scene it read, on which thread, and can hold a read back."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, uri: str, bands: list[int], **kwargs: bool) -> SceneMeasures:
        self.calls.append((uri, threading.current_thread().name))
        self.release.wait(timeout=30)
        return measure_scene(uri, bands, **kwargs)


def test_needs_follow_the_checkpoint_rules() -> None:
    assert scene_measures_needed("split", "") == (False, False)
    assert scene_measures_needed("split", "none") == (False, False)
    assert scene_measures_needed("scene", "") == (True, False)
    assert scene_measures_needed("otsu", "") == (False, True)
    assert scene_measures_needed("split", "otsu:VV") == (False, True)
    assert scene_measures_needed("scene", "otsu:VV") == (True, True)


def test_measures_are_those_of_the_scene_and_the_next_scene_is_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uris = _scenes(tmp_path, 3)
    recorder = _Recorder()
    monkeypatch.setattr(scene_inputs, "measure_scene", recorder)
    recorder.release.clear()  # hold the first read: the constructor must not wait for it
    order = [(u, "1,2") for u in uris]
    measurer = SceneMeasurer(True, True, order)
    assert list(measurer.futures) == [order[0]]  # started at once, before any tile arrived
    recorder.release.set()
    got = measurer.get(order[0])
    assert got.stats == scene_stats(uris[0], [1, 2])
    assert got.thresholds == scene_thresholds(uris[0], [1, 2])
    assert list(measurer.futures) == order[:2]  # the next scene is under way, the one after it is not
    measurer.futures[order[1]].result(timeout=30)  # it completes without anyone asking for it
    assert [uri for uri, _ in recorder.calls] == uris[:2]
    assert all(name.startswith("rrsis-scene") for _, name in recorder.calls)  # never on the caller's thread
    for key in (order[1], order[1], order[2], order[0]):  # repeated and out-of-order requests
        measurer.get(key)
    assert [uri for uri, _ in recorder.calls] == uris  # one read per scene
    (tmp_path / "other").mkdir()
    other = (_scenes(tmp_path / "other", 1)[0], "2")
    assert measurer.get(other).thresholds == scene_thresholds(other[0], [2])  # not in the order: read on demand
    assert len(recorder.calls) == 4


def test_nothing_is_read_for_a_split_model_and_an_unreadable_scene_says_why(tmp_path: Path) -> None:
    measurer = SceneMeasurer(False, False, [(str(tmp_path / "missing.tif"), "1")])
    assert measurer.pool is None and measurer.get((str(tmp_path / "missing.tif"), "1")) == SceneMeasures()
    blank = _write(tmp_path / "blank.tif", np.full((2, 32, 32), np.nan, dtype=np.float32))
    got = SceneMeasurer(True, True, [(blank, "1,2")]).get((blank, "1,2"))
    assert got.stats is None and got.thresholds is None and "blank.tif: no valid pixel" in got.error


def test_otsu_gated_infer_stage_reads_each_scene_once_for_both_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """norm=otsu with an Otsu gate: one read per scene feeds the anchor and the gate (it used to be two)."""
    uris = _scenes(tmp_path, 2)
    ckpt = load_checkpoint(_otsu_checkpoint(tmp_path))
    ckpt.gate = "otsu:VV"
    save_checkpoint(ckpt, str(tmp_path / "both.pt"))
    recorder = _Recorder()
    monkeypatch.setattr(scene_inputs, "measure_scene", recorder)
    resolved, _ = resolve_inputs(uris)
    _, rows, _ = plan_run(
        resolved, str(tmp_path / "run"), tile_px=64, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    read = read_stage({k: np.asarray([r[k] for r in rows]) for k in rows[0]})
    infer = InferStage(str(tmp_path / "both.pt"), device="cpu", torch_threads=1, scenes=[(u, "1,2") for u in uris])
    out = infer(dict(read))
    assert sorted(uri for uri, _ in recorder.calls) == sorted(uris)
    for i, row in enumerate(rows):
        norm, gate_db = infer.scenes[(str(row["scene_uri"]), "1,2")]
        thresholds = scene_thresholds(str(row["scene_uri"]), [1, 2])
        assert norm.anchor == thresholds and gate_db == thresholds[0]
        assert (out["prob"][i][read["image"][i][0] >= gate_db] == 0).all()
