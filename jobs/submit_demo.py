"""Smoke-test a cluster through the whole submit path without running a model.

`rrsis submit map --config configs/map/waterland.yaml --submit-config configs/submit/smoke.yaml` ships
this script instead of jobs/map.py: it loads the shipped config as the real job would, connects to the
cluster, prints the Ray options every stage would get on it (rrsis.resources), runs one task per stage
with those options, reports which object-storage variables arrived (names only), then optionally
sleeps (`--sleep-s`, to try `rrsis jobs stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rrsis.config.submit import DEFAULT_ENV_VARS
from rrsis.resources import STAGES, ray_options


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="submit_demo")
    parser.add_argument("--config", required=True)
    parser.add_argument("--sleep-s", type=float, default=0.0)
    parser.add_argument("--job", default="map", help="which job's schema the shipped config follows")
    args = parser.parse_args(argv)

    import ray

    from rrsis.config.jobs import schema_for
    from rrsis.config.load import load_config

    load_config(schema_for(args.job), args.config, None)  # the shipped config is valid where it runs
    print(f"config {args.config}: valid {args.job} config", flush=True)
    ray.init(log_to_driver=False)  # RAY_ADDRESS is set by the job supervisor
    cluster = ray.cluster_resources()
    print("cluster " + json.dumps({k: v for k, v in sorted(cluster.items()) if not k.startswith("node:")}))

    def where(_: str) -> str:
        return ray.get_runtime_context().get_node_id()[:8]

    for name in STAGES:
        options = ray_options(name, cluster)
        options.pop("memory", None)  # a demo task needs no reservation; the full options are printed
        node = ray.get(ray.remote(where).options(**options).remote(name))
        print(f"stage {name}: {json.dumps(ray_options(name, cluster))} ran on node {node}", flush=True)
    arrived = [n for n in DEFAULT_ENV_VARS if os.environ.get(n)]
    print("env passed by name: " + (", ".join(arrived) or "none"), flush=True)
    if args.sleep_s:
        print(f"sleeping {args.sleep_s:g} s", flush=True)
        time.sleep(args.sleep_s)
    print("submit_demo: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
