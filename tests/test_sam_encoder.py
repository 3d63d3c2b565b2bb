"""Our SAM image encoder against segment-anything's `ImageEncoderViT`: same keys, same init, same embeddings.

Weights are random (no official weights offline) but shared: the reference is built, every parameter is
perturbed (the relative-position tables and the absolute position embedding are zero at init, which would
leave the bias untested), and its state dict is loaded strictly into ours. Inputs are real images prepared as
SAM's predictor prepares them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from segment_anything.modeling import ImageEncoderViT
from segment_anything.utils.transforms import ResizeLongestSide

from rrsis.errors import ModelError
from rrsis.models.sam.build import (
    PIXEL_MEAN,
    PIXEL_STD,
    SamArch,
    build_image_encoder,
    build_sam,
    build_sam_model,
    sam_arch,
)
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.encoder import EfficientImageEncoderViT, chunk_plan
from rrsis.models.sam.predictor import SamTilePredictor

ROOT = Path(__file__).resolve().parents[1]
LANDSAT = ROOT / "data/samples/rasterio/RGB.byte.tif"
DIOR_CANDIDATES = (
    ROOT / "data/samples/dior_rsvg/JPEGImages/00001.jpg",
    Path("/work/shared/data/referring/dior_rsvg_00001/JPEGImages/00001.jpg"),
)
TOL = 1e-4
# 10x10 token grid, windows of 4 (padded to 12), one global block, 4 heads: every code path in a second
SMALL = SamArch(
    encoder_embed_dim=64,
    encoder_depth=3,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1,),
    img_size=160,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=32,
)


def landsat_rgb() -> np.ndarray:
    with rasterio.open(LANDSAT) as src:
        return np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))


def dior_rgb() -> np.ndarray:
    path = next((p for p in DIOR_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip(f"DIOR-RSVG image 00001.jpg not found in {[str(p) for p in DIOR_CANDIDATES]}")
    return np.asarray(Image.open(path).convert("RGB"))


IMAGES = {"landsat": landsat_rgb, "dior_rsvg": dior_rgb}


def model_input(rgb: np.ndarray, img_size: int) -> torch.Tensor:
    """SAM's preprocessing: longest side to img_size, normalise with SAM's statistics, pad bottom/right."""
    resized = torch.as_tensor(ResizeLongestSide(img_size).apply_image(rgb)).permute(2, 0, 1).float()
    x = (resized - torch.tensor(PIXEL_MEAN)[:, None, None]) / torch.tensor(PIXEL_STD)[:, None, None]
    h, w = x.shape[1:]
    return torch.nn.functional.pad(x, (0, img_size - w, 0, img_size - h))[None]


def randomise_(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "rel_pos" in name:
                p.copy_(noise * 0.5)  # bias terms of order 1 against logits of order 1
            elif "pos_embed" in name:
                p.copy_(noise * 0.1)
            else:
                p.add_(noise * 0.02)


def twin_encoders(arch: SamArch, **efficient_kwargs: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """segment-anything's encoder with perturbed random weights, and ours holding the same state dict."""
    torch.manual_seed(0)
    reference = build_image_encoder(arch, "reference").eval()
    randomise_(reference)
    efficient = build_image_encoder(arch, "efficient").eval()
    if efficient_kwargs:
        for block in efficient.blocks:  # type: ignore[union-attr]
            block.attn.mask_budget = efficient_kwargs["mask_budget"]
    efficient.load_state_dict(reference.state_dict(), strict=True)
    return reference, efficient


def max_diff(reference: torch.nn.Module, efficient: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = reference(x), efficient(x)
    assert a.shape == b.shape
    return float((a - b).abs().max())


# ---- same parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["tiny", "vit_b_256"])
def test_keys_order_and_seeded_init_equal_segment_anythings(model_type: str) -> None:
    arch = sam_arch(model_type)
    torch.manual_seed(3)
    theirs = build_image_encoder(arch, "reference").state_dict()
    torch.manual_seed(3)
    ours = build_image_encoder(arch, "efficient").state_dict()
    assert list(theirs) == list(ours)
    for key, value in theirs.items():
        assert torch.equal(value, ours[key]), key


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_official_shapes_load_into_our_encoder(model_type: str) -> None:
    with torch.device("meta"):
        theirs = build_image_encoder(sam_arch(model_type), "reference").state_dict()
        ours = build_image_encoder(sam_arch(model_type), "efficient")
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(theirs, strict=True, assign=True)


def test_builder_selects_the_encoder_and_refuses_unknown_ones() -> None:
    assert isinstance(build_sam(SamConfig(model_type="tiny")).image_encoder, EfficientImageEncoderViT)
    assert isinstance(build_sam(SamConfig(model_type="tiny", encoder="reference")).image_encoder, ImageEncoderViT)
    with pytest.raises(ModelError, match=r"model\.sam\.encoder 'flash'; allowed: efficient, reference"):
        build_image_encoder(sam_arch("tiny"), "flash")


def test_a_full_sam_checkpoint_of_the_reference_gives_the_same_masks(tmp_path: Path) -> None:
    torch.manual_seed(5)
    saved = build_sam_model(sam_arch("tiny"), "reference")
    randomise_(saved.image_encoder)
    torch.save(saved.state_dict(), tmp_path / "sam_tiny.pth")
    predictors = [
        SamTilePredictor.from_config(
            SamConfig(model_type="tiny", encoder=kind, checkpoint=str(tmp_path / "sam_tiny.pth"))
        )
        for kind in ("reference", "efficient")
    ]
    rgb = landsat_rgb()
    boxes = np.array([[100, 100, 300, 250], [400, 300, 700, 650]], float)
    embeddings = []
    for p in predictors:
        p.set_image(rgb)
        embeddings.append(p.embedding)
    assert float((embeddings[0] - embeddings[1]).abs().max()) < TOL
    masks = [p.predict(boxes)[0] for p in predictors]
    assert np.mean(masks[0] != masks[1]) < 1e-3  # logits within 1e-4 can flip a pixel sitting on the threshold


# ---- same embeddings ------------------------------------------------------------------------------


def test_chunk_plan_fits_the_budget() -> None:
    assert chunk_plan(batch=25, heads=12, rows=14, cols=14, budget=1 << 22) == (4, 14)  # 1024 px vit_b windows
    assert chunk_plan(batch=25, heads=12, rows=14, cols=14, budget=1 << 24) == (12, 14)
    assert chunk_plan(batch=1, heads=12, rows=64, cols=64, budget=1 << 22) == (1, 16)  # 1024 px global block
    assert chunk_plan(batch=1, heads=12, rows=64, cols=64, budget=1 << 25) == (2, 64)
    assert chunk_plan(batch=1, heads=2, rows=8, cols=8, budget=1) == (1, 1)  # never less than one row
    for b, h, r, c, budget in [(1, 12, 64, 64, 1 << 22), (25, 12, 14, 14, 1 << 20), (4, 3, 10, 7, 5000)]:
        heads, rows = chunk_plan(b, h, r, c, budget)
        assert b * heads * rows * c * r * c <= budget


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("mask_budget", [1 << 22, 700])  # one call per block; chunks of heads and rows
def test_windowed_padded_and_global_blocks_match_segment_anything(image: str, mask_budget: int) -> None:
    reference, efficient = twin_encoders(SMALL, mask_budget=mask_budget)
    x = model_input(IMAGES[image](), SMALL.img_size)
    assert max_diff(reference, efficient, x) < TOL


def test_batch_of_two_images_matches() -> None:
    reference, efficient = twin_encoders(SMALL, mask_budget=3000)
    x = torch.cat([model_input(landsat_rgb(), SMALL.img_size), model_input(landsat_rgb()[::-1].copy(), 160)])
    assert max_diff(reference, efficient, x) < TOL


@pytest.mark.parametrize("image", list(IMAGES))
def test_vit_b_encoder_matches_at_256_px(image: str) -> None:
    arch = sam_arch("vit_b_256")  # 16x16 grid: windows of 14 padded to 28, global blocks 2, 5, 8, 11
    reference, efficient = twin_encoders(arch)
    assert max_diff(reference, efficient, model_input(IMAGES[image](), arch.img_size)) < TOL


@pytest.mark.slow
def test_vit_b_encoder_matches_at_1024_px_on_landsat() -> None:
    arch = sam_arch("vit_b")  # the official vit_b shape (random weights): 64x64 grid, windows of 14 -> 70
    reference, efficient = twin_encoders(arch)
    assert max_diff(reference, efficient, model_input(landsat_rgb(), arch.img_size)) < TOL
