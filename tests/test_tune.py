"""Ray Tune: ASHA over >= 8 tiny water-land trials on a 2-node local cluster, best config exported, and an
interrupted search (SIGINT after some trials finished) resumed with Tuner.restore without rerunning them.

The cluster test runs in its own subprocess (`python tests/test_tune.py PHASE OUT`): a 2-node
`ray.cluster_utils.Cluster` cannot share a process with the session's `ray_session`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.config.tune import TuneConfig
from rrsis.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tune" / "waterland_tiny.yaml"


def tiny_tune_cfg(out: str) -> TuneConfig:
    root = REPO / "data" / "samples" / "sen1floods11"
    return load_config(
        TuneConfig,
        TINY,
        [f"output={out}", f"base.data.root={root}", f"space={REPO / 'configs/tune/space_waterland_tiny.yaml'}"],
    )


def test_space_files_parse_and_name_bad_keys(tmp_path: Path) -> None:
    from rrsis.train.tune import apply_overrides, load_space

    for space in sorted((REPO / "configs" / "tune").glob("space_*.yaml")):
        assert load_space(str(space))
    cfg = apply_overrides(TrainConfig(), {"optim.lr": 0.005, "model.waterland.family": "munet"})
    assert cfg.optim.lr == 0.005 and cfg.model.waterland.family == "munet"
    bad = tmp_path / "space_bad.yaml"
    bad.write_text("optim.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_space(str(bad))
    bad.write_text("optim.lr: {normal: [0, 1]}\n")
    with pytest.raises(ConfigError, match=r"optim\.lr must be one of"):
        load_space(str(bad))


def _cluster_phase(phase: str, out: str) -> None:
    """Subprocess body: a 2-node local cluster, then a search ('interrupt': SIGINT after 3 finished trials)."""
    import ray
    from ray.cluster_utils import Cluster

    from rrsis.train import tune as rt

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    cfg = tiny_tune_cfg(out)
    cfg.restore = phase == "restore"
    if phase == "interrupt":
        from ray import tune

        finished = Path(out) / "finished.txt"

        class StopAfterThree(tune.Callback):
            def on_trial_complete(self, iteration: int, trials: list, trial: object, **info: object) -> None:
                with finished.open("a") as f:
                    f.write(f"{trial.trial_id}\n")  # type: ignore[attr-defined]
                if len(finished.read_text().split()) == 3:
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C: Tune saves its state and stops

        rt.build_tuner(cfg, callbacks=[StopAfterThree()]).fit()
    else:
        rt.run_tune(cfg)
    ray.shutdown()
    cluster.shutdown()


def _run(phase: str, out: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, __file__, phase, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_asha_on_two_node_cluster_exports_best_and_restores(tmp_path: Path) -> None:
    import pandas as pd

    _run("interrupt", tmp_path)
    done_before = set((tmp_path / "finished.txt").read_text().split())
    assert len(done_before) >= 3
    exp = tmp_path / "waterland_tiny"

    def result_lines() -> dict[str, int]:
        return {d.parent.name: len(d.read_text().splitlines()) for d in exp.glob("*/result.json")}

    iterations_before = result_lines()
    _run("restore", tmp_path)
    table = pd.read_csv(exp / "results.csv")
    assert len(table) == 8 and set(table.columns) >= {"trial_id", "epochs_run", "val_iou_mean", "optim.lr"}
    # ASHA (max_t=4, grace 1, rf 2) stopped some trials before the last epoch, and kept at least one to the end
    assert (table["epochs_run"] < 4).any() and (table["epochs_run"] == 4).any()
    # finished trials were not rerun: their result logs did not grow during the restored run
    after = result_lines()
    finished_dirs = [name for name in iterations_before if any(t in name for t in done_before)]
    assert len(finished_dirs) >= 3 and all(after[name] == iterations_before[name] for name in finished_dirs)
    best = load_config(TrainConfig, exp / "best_train.yaml")
    top = table.sort_values("val_iou_mean", ascending=False).iloc[0]
    assert (
        best.optim.lr == pytest.approx(top["optim.lr"]) and best.model.waterland.family == top["model.waterland.family"]
    )


@pytest.mark.slow
def test_sam_decoder_search_runs_through_rrsis_tune(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-water-land family through the same Tuner: 2 tiny SAM decoder trials over the data-fraction grid;
    the console has one line per trial event and the sorted table, not Ray's status table."""
    import pandas as pd

    from rrsis.cli import main

    argv = [
        "tune",
        "--config",
        str(REPO / "configs" / "tune" / "sam_decoder_tiny.yaml"),
        f"output={tmp_path}",
        f"space={REPO / 'configs' / 'tune' / 'space_sam_decoder_tiny.yaml'}",
        f"base.data.root={REPO / 'data' / 'samples' / 'sen1floods11'}",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Trial status" not in out and "Trial name" not in out  # Ray's own table is off
    lines = out.splitlines()
    assert sum(" started: " in line and "data.train_fraction=" in line for line in lines) == 2
    assert sum(" epoch 1/1: loss=" in line and "| best " in line for line in lines) == 2
    assert sum(line.endswith("finished after 1 epoch(s)") for line in lines) == 2
    assert lines[-1].startswith("best trial {")
    table = pd.read_csv(tmp_path / "sam_decoder_tiny" / "results.csv")
    assert len(table) == 2 and sorted(table["data.train_fraction"]) == [0.5, 1.0]
    assert (table["epochs_run"] == 1).all() and (table["loss"] > 0).all()
    best = load_config(TrainConfig, tmp_path / "sam_decoder_tiny" / "best_train.yaml")
    top = table.sort_values("loss").iloc[0]
    assert best.model.name == "sam_decoder" and best.data.train_fraction == top["data.train_fraction"]
    assert best.optim.lr == pytest.approx(top["optim.lr"])


if __name__ == "__main__":
    _cluster_phase(sys.argv[1], sys.argv[2])
