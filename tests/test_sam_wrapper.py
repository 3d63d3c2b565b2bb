"""SAM wrapper on a tiny random-initialised instance of the real `segment_anything` classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.utils.transforms import ResizeLongestSide

from rrsis.checkpoints import save_decoder_checkpoint
from rrsis.errors import CheckpointError, InputError, ModelError
from rrsis.models.sam.build import build_sam, build_sam_model, sam_arch, trainable_parameters
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.frame import SamFrame
from rrsis.models.sam.predictor import SamTilePredictor, resize_to_frame

TINY = SamConfig(model_type="tiny")
ROOT = Path(__file__).resolve().parents[1]


def tile(h: int = 100, w: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor() -> SamTilePredictor:
    return SamTilePredictor.from_config(TINY)


# ---- the 1024 (here 64) input frame --------------------------------------------------------------


def test_frame_known_transform() -> None:
    f = SamFrame(height_px=100, width_px=200, input_size_px=64)
    # scale = 64 / 200 = 0.32: resized h = int(100 * 0.32 + 0.5) = 32, w = 64
    assert f.resized_hw == (32, 64)
    assert np.allclose(f.points_to_model(np.array([[100.0, 50.0]])), [[32.0, 16.0]])
    # box (10, 20, 190, 90) * 0.32 = (3.2, 6.4, 60.8, 28.8)
    assert np.allclose(f.boxes_to_model(np.array([[10, 20, 190, 90]])), [[3.2, 6.4, 60.8, 28.8]])
    assert np.allclose(f.boxes_to_tile(f.boxes_to_model(np.array([[10, 20, 190, 90]]))), [[10, 20, 190, 90]])


def test_frame_matches_sams_resize_longest_side_at_1024() -> None:
    f = SamFrame(height_px=300, width_px=512, input_size_px=1024)
    assert f.resized_hw == (600, 1024)  # scale 2
    pts = np.array([[0.0, 0.0], [511.0, 299.0], [123.4, 56.7]])
    sam_tf = ResizeLongestSide(1024)
    assert np.allclose(f.points_to_model(pts), sam_tf.apply_coords(pts, (300, 512)))
    boxes = np.array([[5.0, 6.0, 400.0, 280.0]])
    assert np.allclose(f.boxes_to_model(boxes), sam_tf.apply_boxes(boxes, (300, 512)))


@pytest.mark.parametrize("hw", [(800, 800), (300, 512), (1024, 700), (2048, 1500), (1, 3)])
def test_resize_equals_segment_anythings_resize_longest_side(hw: tuple[int, int]) -> None:
    import rasterio

    with rasterio.open(ROOT / "data/samples/rasterio/RGB.byte.tif") as src:  # the shared Landsat scene
        landsat = src.read(window=((200, 600), (200, 600))).transpose(1, 2, 0)
    image = np.ascontiguousarray(np.resize(landsat, (*hw, 3)))  # a real image's pixels, tiled to the size
    ours = resize_to_frame(image, SamFrame(*hw, input_size_px=1024))
    assert np.array_equal(ours, ResizeLongestSide(1024).apply_image(image))


def test_the_sam_model_path_does_not_import_torchvision() -> None:
    code = (
        "import sys, numpy as np\n"
        "from rrsis.models.sam.config import SamConfig\n"
        "from rrsis.models.sam.predictor import SamTilePredictor\n"
        "p = SamTilePredictor.from_config(SamConfig(model_type='tiny'))\n"
        "p.set_image(np.zeros((40, 50, 3), np.uint8))\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "from segment_anything import SamPredictor\n"  # the whole package still imports on demand
        "from segment_anything.modeling import Sam\n"
        "assert SamPredictor(p.sam).model is p.sam and isinstance(p.sam, Sam)\n"
        "assert 'torchvision' in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]


def test_prompts_reach_the_prompt_encoder_in_the_input_frame(predictor: SamTilePredictor) -> None:
    seen: dict[str, Any] = {}

    def grab(_module: torch.nn.Module, _args: Any, kwargs: dict[str, Any], _out: Any) -> None:
        seen.update(kwargs)

    handle = predictor.sam.prompt_encoder.register_forward_hook(grab, with_kwargs=True)
    try:
        predictor.set_image(tile(100, 200))
        predictor.predict(np.array([[10, 20, 190, 90], [0, 0, 50, 50]]), np.array([[100, 50], [np.nan, np.nan]]))
    finally:
        handle.remove()
    assert torch.allclose(seen["boxes"], torch.tensor([[3.2, 6.4, 60.8, 28.8], [0.0, 0.0, 16.0, 16.0]]))
    coords, labels = seen["points"]
    assert torch.allclose(coords[0], torch.tensor([[32.0, 16.0]]))  # (100, 50) * 0.32
    assert labels.tolist() == [[1], [-1]]  # a NaN point becomes SAM's "not a point"


# ---- phases: embed once, prompt many -------------------------------------------------------------


def test_embedding_is_computed_once_per_tile(predictor: SamTilePredictor) -> None:
    calls = []
    handle = predictor.sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        before = predictor.embed_count
        predictor.set_image(tile(seed=1), key="scene/t1")
        for n in (1, 3, 7):
            masks, scores = predictor.predict(np.tile([[20.0, 10.0, 120.0, 80.0]], (n, 1)))
            assert masks.shape == (n, 100, 200) and masks.dtype == bool and scores.shape == (n,)
        predictor.set_image(tile(seed=1), key="scene/t1")  # same key: cached
        assert len(calls) == 1 and predictor.embed_count == before + 1
        predictor.set_image(tile(seed=2), key="scene/t2")
        assert len(calls) == 2
    finally:
        handle.remove()


def test_batched_prompts_equal_one_big_batch() -> None:
    boxes = np.array([[5, 5, 60, 40], [50, 10, 190, 95], [0, 0, 200, 100], [30, 30, 31, 31], [100, 5, 150, 60]], float)
    big = SamTilePredictor.from_config(SamConfig(model_type="tiny", prompt_batch=64))
    small = SamTilePredictor(big.sam, prompt_batch=2)
    img = tile(seed=3)
    big.set_image(img)
    small.set_image(img)
    m1, s1 = big.predict(boxes)
    m2, s2 = small.predict(boxes)
    assert np.array_equal(m1, m2) and np.allclose(s1, s2, atol=1e-5)


def test_multimask_keeps_the_best_scored_mask(predictor: SamTilePredictor) -> None:
    predictor.set_image(tile(seed=4))
    boxes = np.array([[10, 10, 90, 70]], float)
    masks, scores = predictor.predict(boxes, multimask=True)
    box_t, _ = predictor.prompt_tensors(boxes, None, None)
    with torch.no_grad():
        _, iou = predictor.decode(predictor.embedding, box_t, None, multimask=True)
    assert iou.shape == (1, 3)
    assert scores[0] == pytest.approx(float(iou.max()))
    assert masks.shape == (1, 100, 200)


def test_bad_tiles_and_order_fail_with_one_line() -> None:
    p = SamTilePredictor.from_config(TINY)
    with pytest.raises(InputError, match="set_image"):
        p.predict(np.zeros((1, 4)))
    with pytest.raises(InputError, match="uint8"):
        p.set_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        p.set_image(np.zeros((10, 10, 4), np.uint8))


# ---- modes ----------------------------------------------------------------------------------------


def test_weak_mode_has_no_trainable_parameters() -> None:
    assert trainable_parameters(build_sam(SamConfig(model_type="tiny", mode="weak"))) == 0


def test_finetune_mode_trains_only_the_decoder() -> None:
    sam = build_sam(SamConfig(model_type="tiny", mode="finetune"))
    decoder = sum(p.numel() for p in sam.mask_decoder.parameters())
    assert decoder > 0 and trainable_parameters(sam) == decoder
    assert not any(p.requires_grad for p in sam.image_encoder.parameters())
    assert not any(p.requires_grad for p in sam.prompt_encoder.parameters())


# ---- weights from user files ----------------------------------------------------------------------


def test_loads_a_full_sam_checkpoint_from_a_local_path(tmp_path: Path) -> None:
    torch.manual_seed(123)
    saved = build_sam_model(sam_arch("tiny"))
    path = tmp_path / "sam_tiny.pth"
    torch.save(saved.state_dict(), path)  # the official checkpoints are plain state dicts too
    loaded = build_sam(SamConfig(model_type="tiny", checkpoint=str(path), seed=7))
    for (k, a), b in zip(saved.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_weights_are_mapped_from_the_file_and_a_half_precision_file_is_cast(tmp_path: Path) -> None:
    torch.manual_seed(5)
    saved = build_sam_model(sam_arch("tiny"))
    path = tmp_path / "sam_tiny.pth"
    torch.save(saved.state_dict(), path)
    loaded = build_sam(SamConfig(model_type="tiny", checkpoint=str(path), seed=1))
    # the checkpoint is mapped, its tensors are the model's (not a second, copied set)
    assert str(path) in Path("/proc/self/maps").read_text()
    weight = loaded.image_encoder.patch_embed.proj.weight
    assert torch.equal(weight, saved.image_encoder.patch_embed.proj.weight)
    weight.data.add_(1.0)  # copy-on-write: the model's weights change, the file does not
    again = build_sam(SamConfig(model_type="tiny", checkpoint=str(path), seed=1))
    assert torch.equal(again.image_encoder.patch_embed.proj.weight, saved.image_encoder.patch_embed.proj.weight)

    half = tmp_path / "sam_tiny_fp16.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in saved.state_dict().items()}, half)
    cast = build_sam(SamConfig(model_type="tiny", checkpoint=str(half), seed=1))
    assert all(p.dtype == torch.float32 for p in cast.parameters())
    expected = saved.image_encoder.patch_embed.proj.weight.half().float()
    assert torch.equal(cast.image_encoder.patch_embed.proj.weight, expected)


def test_checkpoint_problems_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="fetch it"):
        build_sam(SamConfig(model_type="tiny", checkpoint="s3://bucket/sam_vit_b.pth"))
    with pytest.raises(CheckpointError, match="no such file"):
        build_sam(SamConfig(model_type="tiny", checkpoint=str(tmp_path / "missing.pth")))
    state = build_sam_model(sam_arch("tiny")).state_dict()
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="1 missing"):
        build_sam(SamConfig(model_type="tiny", checkpoint=str(tmp_path / "partial.pth")))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        build_sam(SamConfig(model_type="tiny", checkpoint=str(tmp_path / "junk.pth")))
    with pytest.raises(ModelError, match=r"model\.sam\.checkpoint is required"):
        build_sam(SamConfig(model_type="vit_b"))


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_registry_presets_match_segment_anything_key_for_key(model_type: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init time
        theirs = sam_model_registry[model_type]().state_dict()
        ours = build_sam_model(sam_arch(model_type)).state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}


def test_decoder_checkpoint_round_trip(tmp_path: Path) -> None:
    tuned = build_sam(SamConfig(model_type="tiny", mode="finetune", seed=1))
    with torch.no_grad():
        for p in tuned.mask_decoder.parameters():
            p.add_(0.5)
    path = save_decoder_checkpoint(tuned, tmp_path / "dec.pt", "tiny", {"lr": 1e-4}, {"loss": 0.1}, epoch=3)
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "rrsis.sam_decoder" and raw["model_type"] == "tiny" and raw["epoch"] == 3
    assert raw["arch"]["prompt_embed_dim"] == 32 and raw["metrics"] == {"loss": 0.1}
    assert all(k.startswith(("transformer", "iou", "mask", "output")) for k in raw["state_dict"])
    fresh = build_sam(SamConfig(model_type="tiny", decoder_checkpoint=str(path), seed=2))
    for a, b in zip(tuned.mask_decoder.state_dict().values(), fresh.mask_decoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_decoder_checkpoint_for_another_sam_is_refused(tmp_path: Path) -> None:
    path = save_decoder_checkpoint(build_sam(TINY), tmp_path / "dec.pt", "tiny")
    raw = torch.load(path, weights_only=True)
    raw["model_type"] = "vit_b"
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="trained for SAM 'vit_b'"):
        build_sam(SamConfig(model_type="tiny", decoder_checkpoint=str(tmp_path / "other.pt")))
    with pytest.raises(CheckpointError, match="decoder_checkpoint"):
        build_sam(SamConfig(model_type="tiny", checkpoint=str(path)))


def test_points_only_prompts_with_negative_labels(predictor: SamTilePredictor) -> None:
    seen: dict[str, Any] = {}
    handle = predictor.sam.prompt_encoder.register_forward_hook(
        lambda _m, _a, kw, _o: seen.update(kw), with_kwargs=True
    )
    try:
        predictor.set_image(tile(100, 200, seed=5))
        pts = np.array([[[100, 50], [10, 10]], [[150, 25], [np.nan, np.nan]]], float)  # (N=2, K=2, 2)
        masks, scores = predictor.predict(None, pts, point_labels=np.array([[1, 0], [1, 1]]))
    finally:
        handle.remove()
    assert masks.shape == (2, 100, 200) and scores.shape == (2,)
    assert seen["boxes"] is None
    coords, labels = seen["points"]
    assert torch.allclose(coords[1, 0], torch.tensor([48.0, 8.0]))  # (150, 25) * 0.32
    assert labels.tolist() == [[1, 0], [1, -1]]
