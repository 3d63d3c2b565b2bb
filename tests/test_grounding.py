"""Grounding model: L1/GIoU by hand, query matching, real MiniLM + tiny ResNet overfit, weights loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rrsis.errors import CheckpointError, InputError
from rrsis.models.grounding.config import GroundingConfig, tiny_grounding_config
from rrsis.models.grounding.losses import (
    cxcywh_to_xyxy,
    generalized_box_iou,
    giou_loss,
    grounding_loss,
    l1_loss,
    match_queries,
    xyxy_to_cxcywh,
)
from rrsis.models.grounding.model import GroundingModel


def tiny_cfg(**kw: object) -> GroundingConfig:
    return tiny_grounding_config(**kw)


def test_giou_by_hand() -> None:
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([1.0, 1.0, 3.0, 3.0])
    # I = 1, U = 4 + 4 - 1 = 7, enclosing C = 3 x 3 = 9: GIoU = 1/7 - (9 - 7)/9 = -5/63
    assert generalized_box_iou(a, b).item() == pytest.approx(-5 / 63, abs=1e-6)
    # disjoint: [0,0,1,1] vs [2,0,3,1]: I = 0, U = 2, C = 3 x 1 = 3 -> GIoU = 0 - 1/3
    assert generalized_box_iou(torch.tensor([0.0, 0, 1, 1]), torch.tensor([2.0, 0, 3, 1])).item() == pytest.approx(
        -1 / 3, abs=1e-6
    )
    assert generalized_box_iou(a, a).item() == pytest.approx(1.0, abs=1e-6)


def test_l1_and_giou_loss_by_hand() -> None:
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]])
    tgt = torch.tensor([[0.6, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]])
    # per box sum |Δ|: 0.1 and 0 -> mean 0.05
    assert l1_loss(pred, tgt).item() == pytest.approx(0.05, abs=1e-6)
    # box 1: [0.4,0.4,0.6,0.6] vs [0.5,0.4,0.7,0.6]: I = 0.1*0.2 = 0.02, U = 0.04+0.04-0.02 = 0.06,
    # C = 0.3*0.2 = 0.06 -> GIoU = 1/3; box 2 identical -> 1.  loss = mean(1 - 1/3, 0) = 1/3
    assert giou_loss(pred, tgt).item() == pytest.approx(1 / 3, abs=1e-5)


def test_box_conversions_round_trip() -> None:
    b = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    assert torch.allclose(xyxy_to_cxcywh(b), torch.tensor([[0.3, 0.55, 0.4, 0.7]]))


def test_matching_picks_the_cheapest_query_and_scores_it() -> None:
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.52, 0.5, 0.2, 0.2]]])
    assert match_queries(boxes, target, 1.0, 1.0).tolist() == [1]
    logits = torch.tensor([[-10.0, 10.0]])  # query 1 confident, query 0 not: score BCE ~ 0
    terms = grounding_loss(boxes, logits, target)
    assert terms["score"].item() < 1e-3
    assert terms["l1"].item() == pytest.approx(0.02, abs=1e-6)


@pytest.mark.slow
def test_overfits_a_handful_of_samples_with_real_minilm() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~55 tiny steps: one thread is as fast and fair to parallel test runs
    try:
        _overfit()
    finally:
        torch.set_num_threads(threads)


def _overfit() -> None:
    torch.manual_seed(0)
    model = GroundingModel(tiny_cfg(text_trainable=False))
    assert model.text.bert.__class__.__name__ == "BertModel"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    texts = ["the red car on the left", "a storage tank", "the bridge over the river", "a golf field"]
    target = torch.tensor([[0.2, 0.3, 0.2, 0.2], [0.7, 0.7, 0.3, 0.2], [0.5, 0.5, 0.6, 0.2], [0.4, 0.6, 0.5, 0.5]])
    pixels = model.preprocess(images)
    ids, mask = model.text.tokenize(texts)
    opt = torch.optim.AdamW(model.param_groups(1e-5, 2e-3), weight_decay=1e-4)
    model.train()
    first = last = None
    for _ in range(120):
        out = model(pixels, ids, mask)
        terms = grounding_loss(out["boxes"], out["logits"], target)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = terms["giou"].item() if first is None else first
        last = terms["giou"].item()
        if last <= 0.1 * first:
            break
    assert first is not None and last is not None
    assert last <= 0.1 * first, f"GIoU loss fell only from {first:.3f} to {last:.3f}"
    boxes, scores = model.predict(images, texts)
    assert boxes.shape == (4, 4) and scores.shape == (4,)
    want = cxcywh_to_xyxy(target).numpy() * np.array([64, 48, 64, 48])
    assert np.abs(boxes - want).max() < 8.0  # pixels, in the original 64 x 48 frame


def test_predict_rejects_bad_inputs(tmp_path: Path) -> None:
    model = GroundingModel(tiny_cfg())
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="expression 0 is empty"):
        model.predict([img], ["  "])
    with pytest.raises(InputError, match="image 0"):
        model.predict([np.zeros((16, 16), np.uint8)], ["a car"])
    with pytest.raises(InputError, match="1 images but 2"):
        model.predict([img], ["a", "b"])
    assert model.text.count_tokens("a car") == 4  # [CLS] a car [SEP]


def test_param_groups_follow_the_paper_rates() -> None:
    model = GroundingModel(tiny_cfg(text_trainable=True))
    groups = {g["name"]: g for g in model.param_groups(1e-5, 1e-4)}
    assert groups["text"]["lr"] == 1e-5 and groups["rest"]["lr"] == 1e-4
    n_text = sum(p.numel() for p in groups["text"]["params"])  # type: ignore[attr-defined]
    assert n_text == sum(p.numel() for p in model.text.parameters())


def test_resnet_weights_from_a_user_file(tmp_path: Path) -> None:
    from torchvision.models.resnet import BasicBlock, ResNet

    ref = ResNet(BasicBlock, [1, 1, 1, 1])
    torch.nn.init.constant_(ref.conv1.weight, 0.125)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(ref.state_dict(), path)
    model = GroundingModel(tiny_cfg(image_weights=str(path)))
    assert torch.all(model.visual.stem[0].weight == 0.125)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="does not fit the ResNet"):
        GroundingModel(tiny_cfg(image_weights=str(bad)))
    with pytest.raises(CheckpointError, match="no such file"):
        GroundingModel(tiny_cfg(image_weights=str(tmp_path / "missing.pth")))
