"""Ray-job entry point of `rrsis map`: `python jobs/map.py --config configs/map/waterland.yaml key=value ...`.

Thin on purpose: the same config parsing as the CLI, then `rrsis.pipeline.run.run_map`. Submitted as a Ray
job, RAY_ADDRESS is set by Ray and the driver joins that cluster; run by hand, it starts an embedded Ray.
"""

from __future__ import annotations

import sys

from rrsis.cli import main

if __name__ == "__main__":
    sys.exit(main(["map", *sys.argv[1:]]))
