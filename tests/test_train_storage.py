"""Training jobs honour their `storage:` section: plain training, the SAM decoder and a Tune search write to
`s3://` on the moto server when only `storage.endpoint_url` (not AWS_ENDPOINT_URL) says where S3 is, and their
checkpoints read back from there."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from rrsis import storage
from rrsis.checkpoints import build_from_checkpoint, load_checkpoint
from rrsis.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


@pytest.fixture()
def endpoint_only_in_config(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 endpoint reaches the job only through `storage.endpoint_url`."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return f"storage.endpoint_url={s3_endpoint}"


FAMILIES = {
    "waterland": ("waterland_tiny.yaml", "sen1floods11", [], "WaterlandNet"),
    "danet": ("danet_tiny.yaml", "referring_tiny.jsonl", [], "Danet"),
    "grounding": ("grounding_tiny.yaml", "referring_tiny.jsonl", [], "GroundingModel"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_plain_training_writes_run_folder_to_s3(s3_bucket: str, endpoint_only_in_config: str, family: str) -> None:
    config, data, extra, model_class = FAMILIES[family]
    output = f"s3://{s3_bucket}/runs"
    argv = ["train", "-c", str(REPO / "configs/train" / config), f"data.root={SAMPLES / data}", *extra]
    assert main([*argv, f"output={output}", "run_name=plain", "optim.epochs=1", endpoint_only_in_config]) == 0
    run = storage.join(output, "plain")
    (record,) = [json.loads(line) for line in storage.get_bytes(storage.join(run, "metrics.jsonl")).splitlines()]
    ckpt = load_checkpoint(storage.join(run, "best.pt"))
    assert ckpt.metrics["epoch"] == 1 and ckpt.metrics["loss"] == record["loss"]
    assert type(build_from_checkpoint(ckpt)).__name__ == model_class
    assert storage.exists(storage.join(run, "last.pt")) and storage.exists(storage.join(run, "config.yaml"))


def test_sam_decoder_plain_run_writes_decoder_to_s3(
    s3_bucket: str, endpoint_only_in_config: str, tmp_path: Path
) -> None:
    output = f"s3://{s3_bucket}/runs"
    argv = ["train", "-c", str(REPO / "configs/train/sam_decoder_tiny.yaml"), f"data.root={SAMPLES / 'sen1floods11'}"]
    assert main([*argv, f"output={output}", "optim.epochs=1", "data.crop_px=256", endpoint_only_in_config]) == 0
    assert not (Path.cwd() / "s3:").exists()  # never a local folder named after the scheme
    raw = torch.load(io.BytesIO(storage.get_bytes(f"{output}/sam_decoder_tiny/decoder.pt")), weights_only=True)
    assert raw["kind"] == "rrsis.sam_decoder" and raw["epoch"] == 1 and math.isfinite(raw["metrics"]["loss"])


TINY_SEARCH = {  # family -> (tiny train config as the base, data, the family's ranking metric)
    "waterland": ("waterland_tiny.yaml", "sen1floods11", "val_iou_mean"),
    "danet": ("danet_tiny.yaml", "referring_tiny.jsonl", "val_miou"),
    "grounding": ("grounding_tiny.yaml", "referring_tiny.jsonl", "val_box_acc@0.5"),
    "sam_decoder": ("sam_decoder_tiny.yaml", "sen1floods11", "loss"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TINY_SEARCH))
def test_tune_writes_experiment_and_trial_checkpoints_to_s3(
    ray_session: None,
    s3_bucket: str,
    endpoint_only_in_config: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    family: str,
) -> None:
    """One trial of one epoch of each family's tiny model over a learning-rate space, written to S3."""
    train_config, data, metric = TINY_SEARCH[family]
    base = yaml.safe_load((REPO / "configs/train" / train_config).read_text())
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({"base": base}))
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    output = f"s3://{s3_bucket}/tune"
    argv = ["tune", "-c", str(tmp_path / "tune.yaml"), f"space={space}", f"output={output}", f"name={family}"]
    argv += [f"metric={metric}", f"mode={'min' if metric == 'loss' else 'max'}", "num_samples=1", "scheduler=fifo"]
    argv += [f"base.data.root={SAMPLES / data}", "base.optim.epochs=1", endpoint_only_in_config]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    exp = storage.join(output, family)
    assert storage.exists(storage.join(exp, "results.csv")) and storage.exists(storage.join(exp, "best_train.yaml"))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("best trial") and "s3://" in last, last
    best_model = last.rsplit(" ", 1)[-1]
    if family == "sam_decoder":
        raw = torch.load(io.BytesIO(storage.get_bytes(best_model)), weights_only=True)
        assert raw["kind"] == "rrsis.sam_decoder" and raw["epoch"] == 1
        return
    ckpt = load_checkpoint(best_model)
    assert ckpt.model_name == family and ckpt.metrics["epoch"] == 1
