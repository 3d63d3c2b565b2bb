"""Checkpoints: self-describing round trip (identical outputs), weights_only loading, clear failures."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rrsis.checkpoint_header import read_header
from rrsis.checkpoints import (
    Checkpoint,
    build_from_checkpoint,
    checkpoint_from_model,
    load_checkpoint,
    normalize_image,
    save_checkpoint,
    weights_only_refusal,
)
from rrsis.data.normalize import NormStats
from rrsis.errors import CheckpointError
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model

REPO = Path(__file__).resolve().parents[1]


def _tiny() -> tuple[torch.nn.Module, ModelConfig, Checkpoint]:
    torch.manual_seed(0)
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.width, cfg.waterland.aux_heads = "senet", "half", 1
    model = build_model(cfg).eval()
    ckpt = checkpoint_from_model(
        model, cfg, bands=["VV", "VH"], norm_mean=[-10.0, -17.0], norm_std=[4.0, 5.0], metrics={"iou_water": 0.5}
    )
    return model, cfg, ckpt


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, _, ckpt = _tiny()
    uri = str(tmp_path / "sub" / "model.pt")
    save_checkpoint(ckpt, uri)
    loaded = load_checkpoint(uri)
    assert loaded.model_name == "waterland" and loaded.bands == ["VV", "VH"]
    assert loaded.model_config["waterland"]["family"] == "senet" and loaded.metrics == {"iou_water": 0.5}
    assert loaded.version and loaded.git_commit and loaded.norm_std == [4.0, 5.0]
    rebuilt = build_from_checkpoint(loaded)
    assert not rebuilt.training
    x = torch.randn(2, 2, 37, 45)  # odd size: padded inside the model and cropped back
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    # the file holds plain containers only: the strict weights_only unpickler reads it
    raw = torch.load(uri, weights_only=True)
    assert raw["kind"] == "rrsis-checkpoint"


def test_object_storage_round_trip(s3_bucket: str) -> None:
    model, _, ckpt = _tiny()
    uri = f"s3://{s3_bucket}/models/m.pt"
    save_checkpoint(ckpt, uri)
    rebuilt = build_from_checkpoint(load_checkpoint(uri))
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran on load",))


class _Shell:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo code ran on load",))


def test_wrong_truncated_and_unsafe_files_fail_in_one_line(tmp_path: Path) -> None:
    _, _, ckpt = _tiny()
    good = tmp_path / "good.pt"
    save_checkpoint(ckpt, str(good))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:3000])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    buffer = io.BytesIO()
    torch.save({"kind": "rrsis-checkpoint", "x": _Evil()}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    torch.save({"kind": "rrsis-checkpoint", "state_dict": {"w": torch.zeros(2)}, "x": _Shell()}, buffer)
    (tmp_path / "shell.pt").write_bytes(buffer.getvalue())
    refused = "holds objects that a weights-only load refuses"
    cases = {
        "cut.pt": "truncated",
        "foreign.pt": "not an rrsis checkpoint",
        "evil.pt": rf"{refused} \(global print\)",
        "shell.pt": rf"{refused} \(global {os.system.__module__}\.system, from a blocked module\)",
        "missing.pt": "cannot be read",
    }
    for name, expected in cases.items():
        with pytest.raises(CheckpointError, match=expected) as info:
            load_checkpoint(str(tmp_path / name))
        assert "\n" not in str(info.value) and "\x1b" not in str(info.value) and name in str(info.value)
        assert ("truncated" in str(info.value).rsplit(name, 1)[1]) == (name == "cut.pt")
    ckpt.state_dict = {k: v for k, v in list(ckpt.state_dict.items())[1:]}
    with pytest.raises(CheckpointError, match="do not fit"):
        build_from_checkpoint(ckpt)


def test_weights_only_refusal_names_what_torch_refused() -> None:
    wrap = "Weights only load failed. In PyTorch 2.6 ... source.\nWeightsUnpickler error: \n\n{}\n\nCheck the docs."
    blocked = "Trying to load unsupported GLOBAL subprocess.Popen whose module subprocess is blocked."
    assert weights_only_refusal(wrap.format(blocked)) == "global subprocess.Popen, from a blocked module"
    other = "Unsupported operand 149"
    assert weights_only_refusal(wrap.format(other)) == other
    assert weights_only_refusal("invalid load key, 'x'.") is None  # damage, not a refusal


@pytest.mark.slow
def test_cli_eval_on_truncated_checkpoint_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    proc = subprocess.run(
        [sys.executable, "-m", "rrsis.cli", "eval", f"checkpoint={bad}", f"output={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.pt" in lines[0] and lines[0].startswith("rrsis: checkpoint")


def test_normalize_image_hand_computed() -> None:
    # band 0: (-14 - -10) / 4 = -1; band 1: (-7 - -17) / 5 = 2; the invalid and the NaN pixel get nodata_fill
    stats = NormStats(["VV", "VH"], [-10.0, -17.0], [4.0, 5.0], nodata_fill=0.5)
    image = np.array([[[-14.0, -14.0, np.nan]], [[-7.0, -7.0, -7.0]]], dtype=np.float32)
    valid = np.array([[True, False, True]])
    out = normalize_image(stats, image, valid)
    assert out.dtype == np.float32
    assert np.array_equal(out, np.array([[[-1.0, 0.5, 0.5]], [[2.0, 0.5, 0.5]]], dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"expects \(2, H, W\)"):
        normalize_image(stats, image[:1], valid)


def test_header_reader_matches_the_loader_without_torch_or_tensor_bytes(tmp_path: Path) -> None:
    """The map driver reads only the header (rrsis.checkpoint_header), in a process that never imports torch;
    damaged, foreign or unsafe files give None so the torch loader reports them."""
    _, _, ckpt = _tiny()
    good = tmp_path / "good.pt"
    save_checkpoint(ckpt, str(good))
    loaded = load_checkpoint(str(good))
    header = read_header(str(good))
    assert header is not None
    for name in ("model_name", "model_config", "bands", "norm_mean", "norm_std", "metrics", "norm", "git_commit"):
        assert header[name] == getattr(loaded, name), name
    assert set(header["state_dict"]) == set(loaded.state_dict)
    assert all(v is None for v in header["state_dict"].values())  # tensors never read
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:3000])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    buffer = io.BytesIO()
    torch.save({"kind": "rrsis-checkpoint", "format": 1, "x": _Evil()}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    for name in ("cut.pt", "foreign.pt", "evil.pt", "missing.pt"):
        assert read_header(str(tmp_path / name)) is None, name
    code = (
        "import sys; from rrsis.pipeline.task_waterland import model_info; "
        f"print(model_info({str(good)!r})[1:], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "(['VV', 'VH'], 2) False"
