"""A map sized from the cluster's CPUs: the shipped water-land config on a head smaller than its stages runs
with every stage scaled alike, and says so in one line, instead of refusing or waiting forever."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.pipeline.build import PipelineResources, resources_for
from rrsis.resources import cpu_scale

REPO = Path(__file__).resolve().parents[1]


def test_cpu_scale_fits_the_held_cpus_into_the_cluster() -> None:
    assert cpu_scale(4.0, 8.0) == 1.0 and cpu_scale(4.0, 4.0) == 1.0 and cpu_scale(0.0, 2.0) == 1.0
    assert cpu_scale(4.0, 2.0) == 0.5
    assert cpu_scale(3.0, 2.0) == 0.6666  # rounded down to Ray's grain: never more than the cluster
    assert cpu_scale(4.0, 0.0) == 0.0
    for held, cpus in ((7.0, 3.0), (5.5, 1.0), (3.0, 2.0), (400.0, 3.0)):
        assert held * cpu_scale(held, cpus) <= cpus


def _held(res: PipelineResources) -> float:
    pools = res.infer.num_cpus * res.infer.pool_size + res.refine.num_cpus * res.refine.pool_size
    return pools + res.read.num_cpus + res.write.num_cpus


def test_the_shipped_config_on_a_2_cpu_head_is_scaled_to_fit_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rrsis.map")
    cfg = load_config(MapConfig, REPO / "configs" / "map" / "waterland.yaml", [])
    roomy = resources_for(cfg, 0.0, 8.0, cluster={"CPU": 8.0})
    assert (roomy.infer.num_cpus, roomy.read.num_cpus) == (1.0, 1.0) and not caplog.records
    res = resources_for(cfg, 0.0, 2.0, cluster={"CPU": 2.0})
    assert _held(res) <= 2.0 < _held(roomy)
    assert (res.infer.num_cpus, res.refine.num_cpus, res.read.num_cpus, res.write.num_cpus) == (0.5,) * 4
    assert res.infer.pool_size == cfg.infer.pool_size and res.refine.pool_size == cfg.refine.pool_size
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "the Ray cluster has 2" in line and "scaled by 0.5" in line
    assert "'infer.num_cpus'" in line and "'read_num_cpus'" in line  # which keys size the stages


def test_a_cluster_without_cpus_or_too_small_for_one_products_task_is_one_config_error() -> None:
    cfg = load_config(MapConfig, REPO / "configs" / "map" / "waterland.yaml", [])
    with pytest.raises(ConfigError, match="has no CPU"):
        resources_for(cfg, 0.0, 0.0, cluster={})
    big = load_config(MapConfig, REPO / "configs" / "map" / "waterland.yaml", ["products_num_cpus=3"])
    with pytest.raises(ConfigError, match="'products_num_cpus'"):
        resources_for(big, 0.0, 2.0, cluster={"CPU": 2.0})
