"""Ray Train glue: a 2-worker gloo run matches the plain loop and checkpoints to S3; a killed worker resumes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from rrsis import storage
from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.train import ray_train
from rrsis.train.run import run_train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "waterland_tiny.yaml")


def tiny_cfg(output: str, *overrides: str) -> TrainConfig:
    root = str(REPO / "data" / "samples" / "sen1floods11")
    return load_config(
        TrainConfig, TINY, [f"output={output}", f"run_name=r{uuid.uuid4().hex[:8]}", f"data.root={root}", *overrides]
    )


def metrics(cfg: TrainConfig) -> list[dict[str, float]]:
    text = storage.get_bytes(storage.join(cfg.output, cfg.run_name, "metrics.jsonl")).decode()
    return [json.loads(line) for line in text.splitlines() if line]


@pytest.mark.slow
def test_two_worker_gloo_run_matches_plain_loop_and_checkpoints_to_s3(
    ray_session: None, s3_bucket: str, tmp_path: Path
) -> None:
    plain = tiny_cfg(str(tmp_path), "optim.epochs=3")
    assert run_train(plain) == 0
    ray_cfg = tiny_cfg(f"s3://{s3_bucket}/runs", "optim.epochs=3", "train.enabled=true", "train.num_workers=2")
    assert run_train(ray_cfg) == 0  # run_train hands over to ray_train.fit when train.enabled
    plain_m, ray_m = metrics(plain), metrics(ray_cfg)
    assert [m["epoch"] for m in ray_m] == [1, 2, 3]
    # Same data, seed and global batch; the samplers differ (RandomSampler vs DistributedSampler shards), so the
    # curves are not bitwise equal. Stated tolerance: the final mean training loss is within 25% of the plain
    # loop's (observed on this machine: see the report of issue 10).
    print("final loss plain", plain_m[-1]["loss"], "ray", ray_m[-1]["loss"])
    assert abs(ray_m[-1]["loss"] - plain_m[-1]["loss"]) <= 0.25 * plain_m[-1]["loss"]
    objects = storage.list_prefix(f"s3://{s3_bucket}/runs/{ray_cfg.run_name}/")
    states = [o for o in objects if o.endswith("/state.pt")]
    assert states and all(o.replace("state.pt", "model.pt") in objects for o in states)
    assert len(states) <= ray_cfg.train.keep_best + 1  # best K, plus the latest Ray always keeps


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(ray_session: None, tmp_path: Path) -> None:
    cfg = tiny_cfg(str(tmp_path), "optim.epochs=5", "train.enabled=true", "train.num_workers=2", "train.max_failures=2")
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(code=ray_train.fit(cfg)), daemon=True)
    thread.start()
    run = tmp_path / cfg.run_name
    deadline = time.monotonic() + 240
    snapshot = run / "checkpoint_manager_snapshot.json"  # written once Ray has registered a checkpoint

    def registered() -> bool:
        return snapshot.exists() and "epoch_00001" in snapshot.read_text()

    while not registered() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert registered(), "no first checkpoint in time"
    victim = json.loads((run / "workers" / "rank_1.json").read_text())
    assert victim["start_epoch"] == 1
    os.kill(int(victim["pid"]), signal.SIGKILL)  # a training worker dies mid-run (epoch 2 or later)
    thread.join(timeout=300)
    assert outcome.get("code") == 0
    records = metrics(cfg)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]  # every epoch once: resumed, not restarted
    restarted = json.loads((run / "workers" / "rank_1.json").read_text())
    assert restarted["pid"] != victim["pid"] and restarted["start_epoch"] >= 2
    assert max(r["restored_from_epoch"] for r in records) >= 1
