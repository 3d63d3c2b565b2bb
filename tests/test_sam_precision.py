"""Inference precision: the device probe, the auto rule and its one-line fallback, autocast, SAM under bf16."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from rrsis.errors import ModelError
from rrsis.models import precision
from rrsis.models.precision import autocast_for, cpu_has_amx_bf16, cpu_without_amx, resolve_precision
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.predictor import SamTilePredictor

ROOT = Path(__file__).resolve().parents[1]
LANDSAT = ROOT / "data/samples/rasterio/RGB.byte.tif"
DIOR_CANDIDATES = (
    ROOT / "data/samples/dior_rsvg/JPEGImages/00001.jpg",
    Path("/work/shared/data/referring/dior_rsvg_00001/JPEGImages/00001.jpg"),
)
LOGGER = "rrsis.models.precision"


@pytest.fixture
def amx(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Set the CPU's AMX answer; the fallback log starts afresh."""
    answer = [False]
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: answer[0])
    precision.note_fallback.cache_clear()
    return answer


def test_amx_flag_is_read_from_cpuinfo(tmp_path: Path) -> None:
    (tmp_path / "amx").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16 amx_tile amx_int8\n\n")
    (tmp_path / "avx2").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16\nbugs\t\t: amx_bf16\n")
    assert cpu_has_amx_bf16(tmp_path / "amx")
    assert not cpu_has_amx_bf16(tmp_path / "avx2")  # the flag on another line does not count
    assert not cpu_has_amx_bf16(tmp_path / "missing")
    # without AMX the log line says whether bf16 is emulated or native (AVX512-BF16) and how to ask for it
    (tmp_path / "avx2only").write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_without_amx("AVX2", tmp_path / "avx2only").endswith("capability AVX2): bf16 would be emulated")
    native = cpu_without_amx("AVX512", tmp_path / "avx2")  # the file with avx512_bf16
    assert native.endswith("it has avx512_bf16: infer.precision=bf16 uses its native bf16 dot products")


def test_auto_falls_back_to_fp32_without_amx_with_one_log_line(
    amx: list[bool], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_precision(None, "cpu") == "fp32"
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"
        assert resolve_precision("auto", "cpu") == "fp32"
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert lines[0].startswith("precision auto on cpu -> fp32: CPU without AMX")


def test_auto_picks_bf16_with_amx_silently(amx: list[bool], caplog: pytest.LogCaptureFixture) -> None:
    amx[0] = True
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_precision("auto", "cpu") == "bf16"
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_explicit_precisions_are_honoured_on_a_cpu(amx: list[bool]) -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("BF16", "cpu") == "bf16"  # emulated without AMX, but asked for
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ModelError, match="precision 'half'; allowed: auto, fp32, bf16, fp16"):
        resolve_precision("half", "cpu")


def test_cuda_rule_follows_the_devices_bf16_support(
    amx: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_precision("auto", "cuda:0") == "fp32"
        assert resolve_precision("bf16", "cuda") == "fp32"
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "precision auto on cuda -> fp32: CUDA device Tesla T4 has no native bf16",
        "precision bf16 on cuda -> fp32: CUDA device Tesla T4 has no native bf16",
    ]


def test_autocast_for_applies_the_dtype_and_fp32_is_a_no_op() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast_for("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with autocast_for("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32
    with pytest.raises(ModelError, match="resolve 'auto' first"), autocast_for("auto", "cpu"):
        pass


def test_predictor_resolves_its_precision_and_keeps_weights_and_embeddings_fp32(amx: list[bool]) -> None:
    sam = build_sam(SamConfig(model_type="tiny"))
    assert SamTilePredictor(sam).precision == "fp32"  # the default: unchanged behaviour
    assert SamTilePredictor(sam, precision="auto").precision == "fp32"
    amx[0] = True
    p = SamTilePredictor(sam, precision=None)
    assert p.precision == "bf16"
    p.set_image(np.random.default_rng(0).integers(0, 256, (50, 70, 3)).astype(np.uint8))
    assert p.embedding.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in sam.state_dict().values() if t.is_floating_point())


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def landsat_rgb() -> np.ndarray:
    with rasterio.open(LANDSAT) as src:
        return np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))


def dior_rgb() -> np.ndarray:
    path = next((p for p in DIOR_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip(f"DIOR-RSVG image 00001.jpg not found in {[str(p) for p in DIOR_CANDIDATES]}")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("image", ["landsat", "dior_rsvg"])
def test_bf16_masks_agree_with_fp32_masks_on_the_shared_images(image: str) -> None:
    """Per box IoU >= 0.99 between the encoder in bf16 and in fp32 (decoder fp32 in both).

    With random tiny weights SAM's masks are not box-shaped (they cover much of the scene whatever the box),
    so the IoU of whole masks is lenient; the IoU inside each box, where a box prompt's mask matters, and the
    share of pixels flipping across the threshold are checked too.
    """
    rgb = landsat_rgb() if image == "landsat" else dior_rgb()
    h, w = rgb.shape[:2]
    sam = build_sam(SamConfig(model_type="tiny", seed=0))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero relative-position tables, so their bias runs in bf16 too
        for name, param in sam.image_encoder.named_parameters():
            if "rel_pos" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    fp32, bf16 = SamTilePredictor(sam, precision="fp32"), SamTilePredictor(sam, precision="bf16")
    fractions = [[0.13, 0.14, 0.38, 0.35], [0.5, 0.42, 0.88, 0.9], [0.0, 0.0, 1.0, 1.0], [0.44, 0.07, 0.53, 0.17]]
    boxes = np.round(np.array(fractions) * [w, h, w, h])
    fp32.set_image(rgb)
    bf16.set_image(rgb)
    assert bf16.embedding.dtype == torch.float32
    assert 0 < float((fp32.embedding - bf16.embedding).abs().max()) < 0.1  # bf16 did run, and stayed close
    masks32, _ = fp32.predict(boxes)
    masks16, _ = bf16.predict(boxes)
    for (x0, y0, x1, y1), m32, m16 in zip(boxes.astype(int), masks32, masks16, strict=True):
        assert m32.any()
        assert box_iou(m32, m16) >= 0.99
        assert box_iou(m32[y0:y1, x0:x1], m16[y0:y1, x0:x1]) >= 0.99
        assert np.mean(m32 != m16) < 0.005
