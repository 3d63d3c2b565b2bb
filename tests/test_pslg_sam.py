"""PSLG-SAM composed: tiny grounding + tiny SAM + CFPG + MBO, single and batched, weak and finetune modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rrsis.errors import InputError
from rrsis.models.config import ModelConfig
from rrsis.models.grounding.config import tiny_grounding_config
from rrsis.models.pslg_sam import PslgSam
from rrsis.models.registry import build_model
from rrsis.models.sam.config import SamConfig

TINY_GROUNDING = tiny_grounding_config()


def scene() -> np.ndarray:
    """A textured background with a bright square object at rows/cols 20-39."""
    rng = np.random.default_rng(1)
    img = rng.integers(40, 90, (64, 80, 3), dtype=np.uint8)
    img[20:40, 20:40] = (230, 220, 40)
    return img


@pytest.fixture(scope="module")
def model() -> PslgSam:
    return PslgSam(TINY_GROUNDING, SamConfig(model_type="tiny"))


def test_predict_returns_box_mask_scores(model: PslgSam) -> None:
    img = scene()
    box, mask, scores = model.predict(img, "the yellow square")
    assert box.shape == (4,) and mask.shape == (64, 80) and mask.dtype == bool
    assert 0 <= box[0] <= box[2] <= 80 and 0 <= box[1] <= box[3] <= 64
    assert 0.0 <= scores["box_score"] <= 1.0
    assert scores["cfpg_reason"] in (
        "ok",
        "roi_too_small",
        "uniform_roi",
        "no_foreground_marker",
        "no_region_above_area",
        "box_outside_image",
    )


@pytest.mark.slow
def test_batched_equals_single_and_embeds_each_image_once(model: PslgSam) -> None:
    img, other = scene(), scene()[::-1].copy()
    texts = ["the yellow square", "the background", "a square"]
    before = model.predictor.embed_count
    outs = model.predict_batch([img, other, img], texts)
    assert model.predictor.embed_count - before == 2  # two distinct arrays -> two embeddings
    for out, (image, text) in zip(outs, [(img, texts[0]), (other, texts[1]), (img, texts[2])], strict=True):
        box, mask, scores = model.predict(image, text)
        assert out.box_score == pytest.approx(scores["box_score"], abs=1e-4)
        assert np.allclose(out.box_xyxy, box, atol=1e-3)
        assert np.array_equal(out.mask, mask)


def test_oracle_box_stage_two_uses_cfpg_and_mbo(model: PslgSam) -> None:
    img = scene()
    (out,) = model.segment_boxes([img], np.array([[16.0, 16.0, 44.0, 44.0]]))
    assert out.cfpg_reason == "ok"  # bright convex square inside a textured box: CFPG finds a point
    assert out.mbo_iterations >= 1
    # MBO (GrabCut) keeps the refined mask inside the grown window around the box
    ys, xs = np.nonzero(out.mask)
    if ys.size:
        assert ys.min() >= 0 and xs.max() < 80


def test_modes_and_registry(tmp_path: Path) -> None:
    cfg = ModelConfig(name="pslg_sam", grounding=TINY_GROUNDING, sam=SamConfig(model_type="tiny", mode="weak"))
    weak = build_model(cfg)
    assert isinstance(weak, PslgSam)
    assert sum(p.numel() for p in weak.sam.parameters() if p.requires_grad) == 0  # weak: nothing of SAM trains
    cfg.sam.mode = "finetune"
    tuned = build_model(cfg)
    assert isinstance(tuned, PslgSam)
    trainable = {n.split(".")[0] for n, p in tuned.sam.named_parameters() if p.requires_grad}
    assert trainable == {"mask_decoder"}
    keys = tuned.state_dict().keys()
    assert any(k.startswith("grounding.") for k in keys) and any(k.startswith("sam.mask_decoder.") for k in keys)
    assert torch.equal(
        weak.sam.image_encoder.patch_embed.proj.weight, tuned.sam.image_encoder.patch_embed.proj.weight
    )  # same seeded tiny SAM


def test_mismatched_inputs(model: PslgSam) -> None:
    with pytest.raises(InputError, match="2 images but 1 boxes"):
        model.segment_boxes([scene(), scene()], np.zeros((1, 4)))
