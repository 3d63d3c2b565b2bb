"""`infer.precision` in the map's model stages: the water-land demo model and DANet under bf16 against fp32,
SAM's precision through the boxes task's options, and which precisions enter the run id."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.models.sam.config import SamConfig
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.stages import InferStage, read_stage
from rrsis.pipeline.task_boxes import SamBoxStage, sam_options
from rrsis.pipeline.task_danet import DanetInferStage, danet_run_id
from rrsis.pipeline.task_waterland import run_id_for
from tests.danet_tiny import save_tiny_danet

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models/waterland_demo/model.pt"
CHIPS = sorted((ROOT / "data/samples/sen1floods11/S1Hand").glob("*.tif"))


def water_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def wettest_window(chip: Path, size_px: int) -> tuple[int, int]:
    """(col_off, row_off) of the `size_px` window (on a `size_px` grid) holding the most labelled water."""
    with rasterio.open(str(chip).replace("S1Hand", "LabelHand")) as src:
        label = src.read(1)
    best, where = -1, (0, 0)
    for row in range(0, label.shape[0] - size_px + 1, size_px):
        for col in range(0, label.shape[1] - size_px + 1, size_px):
            water = int((label[row : row + size_px, col : col + size_px] == 1).sum())
            if water > best:
                best, where = water, (col, row)
    return where


@pytest.fixture(scope="module")
def demo_probs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """P(water) from the demo model's InferStage on every shared Sen1Floods11 chip, per precision: one 256 px
    tile per chip, its wettest by the hand label (bf16 is emulated on a CPU without AMX, ~10x slower than
    fp32: a whole 512 px chip each would take minutes); `valid` marks the tiles' valid pixels."""
    scenes, problems = resolve_inputs([str(p) for p in CHIPS])
    assert not problems
    out = str(tmp_path_factory.mktemp("precision") / "run")
    _, rows, _ = plan_run(
        scenes, out, tile_px=256, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"], in_bands=2
    )
    wanted = {Path(c).stem: wettest_window(c, 256) for c in CHIPS}
    rows = [r for r in rows if (r["win_col_off"], r["win_row_off"]) == wanted[Path(str(r["scene_uri"])).stem]]
    assert len(rows) == len(CHIPS)
    threads = torch.get_num_threads()
    probs: dict[str, dict[str, np.ndarray]] = {}
    try:
        for precision in ("fp32", "bf16"):
            stage = InferStage(str(DEMO), device="cpu", torch_threads=2, precision=precision)
            assert stage.precision == precision
            batch = read_stage({k: np.asarray([r[k] for r in rows]) for k in rows[0]})
            valid = batch["valid"]
            probs[precision] = {"prob": stage(batch)["prob"], "valid": valid}
    finally:
        torch.set_num_threads(threads)
    return probs


@pytest.mark.slow
def test_demo_model_bf16_masks_agree_with_fp32_on_the_shared_chips(
    demo_probs: dict[str, dict[str, np.ndarray]],
) -> None:
    """Water IoU of bf16 against fp32 masks, pooled over the shared chips, >= 0.995; per chip, at most 0.5 % of
    the pixels flip. Per-chip IoU is not bounded: a chip with a few dozen water pixels (Mekong) loses a
    few of them at the 0.5 threshold and its IoU drops to ~0.9 while the masks are otherwise identical."""
    p32, p16 = demo_probs["fp32"]["prob"], demo_probs["bf16"]["prob"]
    valid = demo_probs["fp32"]["valid"]
    assert 0 < float(np.abs(p32 - p16).max()) < 0.1  # bf16 did run, and stayed close
    a, b = (p32 >= 0.5) & valid, (p16 >= 0.5) & valid
    per_chip = {
        c.stem: (round(water_iou(x, y), 4), int(x.sum()), int((x != y).sum()))
        for c, x, y in zip(CHIPS, a, b, strict=True)
    }
    print("per chip (IoU, fp32 water px, flipped px):", per_chip)
    assert sum(int(x.any()) for x in a) >= 4  # the check is not only over empty masks
    assert water_iou(a, b) >= 0.995, per_chip
    for (_, _, flipped), v in zip(per_chip.values(), valid, strict=True):
        assert flipped <= 0.005 * max(int(v.sum()), 1), per_chip


def test_precision_key_is_checked_and_only_lower_precisions_change_the_run_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"infer\.precision"):
        load_config(MapConfig, None, ["infer.precision=half"])
    scenes, _ = resolve_inputs([str(CHIPS[0])])
    ids = {
        p: run_id_for(load_config(MapConfig, None, [f"infer.precision={p}"]), scenes)
        for p in ("auto", "fp32", "bf16", "fp16")
    }
    assert ids["auto"] == ids["fp32"] == run_id_for(MapConfig(), scenes)  # unchanged for existing runs
    assert len({ids["fp32"], ids["bf16"], ids["fp16"]}) == 3


def test_sam_precision_reaches_the_boxes_actor_through_its_options() -> None:
    cfg = SamConfig(model_type="tiny")
    assert sam_options(cfg)["precision"] == "fp32"
    assert SamBoxStage(sam_options(cfg, "bf16"), torch_threads=1).predictor.precision == "bf16"
    assert SamBoxStage(sam_options(dataclasses.replace(cfg, precision="fp16"))).predictor.precision == "fp16"


@pytest.mark.slow
def test_danet_stage_runs_bf16_and_returns_fp32_probabilities(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "danet.pt")
    save_tiny_danet(ckpt)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(0, 255, (2, 3, 48, 48)).astype(np.float32), "valid": np.ones((2, 48, 48), bool)}
    probs = {}
    for precision in ("fp32", "bf16"):
        stage = DanetInferStage(
            ckpt, device="cpu", torch_threads=1, query="the lake", value_max=255.0, precision=precision
        )
        assert stage.precision == precision
        probs[precision] = stage(dict(batch))["prob"]
        assert probs[precision].dtype == np.float32
    assert 0 < float(np.abs(probs["fp32"] - probs["bf16"]).max()) < 0.05
    cfg = load_config(MapConfig, None, ["task=referring", "method=danet", f"referring.danet={ckpt}", "query=lake"])
    bf16 = dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, precision="bf16"))
    assert danet_run_id(cfg, ["s.tif"]) != danet_run_id(bf16, ["s.tif"])
