"""Every model family trains one epoch through `rrsis train ... train.enabled=true` (Ray Train, 2 gloo workers).

Each family runs its tiny config (real sample data: Sen1Floods11 chips for water-land and the SAM decoder, the
rasterio Landsat scenes with their real valid-data mask for DANet and grounding) through the CLI entry, on
the shared `ray_session`, checkpointing to the moto S3 server. Asserted: metrics.jsonl has
epoch 1 with a finite loss; the epoch-1 checkpoint folder holds `state.pt` and the family's self-describing
checkpoint, both loading with weights_only=True, the latter into the real model class.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from rrsis import storage
from rrsis.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "train"
SAMPLES = REPO / "data" / "samples"

FAMILIES = {
    "waterland": ["waterland_tiny.yaml", f"data.root={SAMPLES / 'sen1floods11'}"],
    "danet": ["danet_tiny.yaml", f"data.root={SAMPLES / 'referring_tiny.jsonl'}"],
    "grounding": ["grounding_tiny.yaml", f"data.root={SAMPLES / 'referring_tiny.jsonl'}"],
    "sam_decoder": ["sam_decoder_tiny.yaml", f"data.root={SAMPLES / 'sen1floods11'}", "data.crop_px=128"],
}


def _load(uri: str) -> dict[str, object]:
    return dict(torch.load(io.BytesIO(storage.get_bytes(uri)), map_location="cpu", weights_only=True))


def _check_model_file(family: str, uri: str, tmp_path: Path) -> None:
    """The family's checkpoint builds its real model class (SAM: the decoder loads into a tiny SAM)."""
    if family == "sam_decoder":
        from rrsis.models.sam.build import build_sam, load_decoder_checkpoint
        from rrsis.models.sam.config import SamConfig

        local = tmp_path / "decoder.pt"
        storage.get_file(uri, str(local))
        state = load_decoder_checkpoint(build_sam(SamConfig(model_type="tiny")), str(local), "tiny")
        assert state["epoch"] == 1 and math.isfinite(state["metrics"]["loss"])
        return
    from rrsis.checkpoints import build_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(uri)
    assert ckpt.model_name == family and ckpt.metrics["epoch"] == 1 and math.isfinite(ckpt.metrics["loss"])
    model = build_from_checkpoint(ckpt)  # loads the state dict into the real class
    classes = {"waterland": "WaterlandNet", "danet": "Danet", "grounding": "GroundingModel"}
    assert type(model).__name__ == classes[family]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_one_epoch_on_ray_train(family: str, ray_session: None, s3_bucket: str, tmp_path: Path) -> None:
    config, *overrides = FAMILIES[family]
    output = f"s3://{s3_bucket}/runs"  # every family checkpoints to the moto S3 server
    argv = ["train", "--config", str(CONFIGS / config), f"output={output}", f"run_name={family}_ray"]
    argv += [*overrides, "optim.epochs=1", "train.enabled=true", "train.num_workers=2"]
    assert main(argv) == 0
    run = storage.join(output, f"{family}_ray")
    (record,) = [json.loads(line) for line in storage.get_bytes(storage.join(run, "metrics.jsonl")).splitlines()]
    assert record["epoch"] == 1 and math.isfinite(record["loss"]) and record["loss"] > 0
    folder = storage.join(run, "epoch_00001")
    state = _load(storage.join(folder, "state.pt"))
    assert state["epoch"] == 1 and state["model"] and state["optimizer"]
    model_file = "decoder.pt" if family == "sam_decoder" else "model.pt"
    _check_model_file(family, storage.join(folder, model_file), tmp_path)


@pytest.mark.slow
def test_danet_plain_run_through_rrsis_train(tmp_path: Path) -> None:
    """`rrsis train model.name=danet` without Ray: the plain loop over the same recipe."""
    from rrsis.checkpoints import load_checkpoint

    config, *overrides = FAMILIES["danet"]
    argv = ["train", "--config", str(CONFIGS / config), f"output={tmp_path}", "run_name=plain", *overrides]
    assert main([*argv, "optim.epochs=1"]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and math.isfinite(record["loss"]) and 0.0 <= record["val_miou"] <= 1.0
    assert load_checkpoint(str(tmp_path / "plain" / "best.pt")).metrics["val_miou"] == record["val_miou"]
    assert main([*argv, "optim.amp=true"]) == 2  # only the water-land loop has AMP: one config error line
