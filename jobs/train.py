"""Ray-job entry point of `rrsis train`: `python jobs/train.py --config FILE [key=value ...]`.

Thin on purpose: the same CLI path as `rrsis train`, so a submitted job and a local run cannot diverge. On a
cluster (RAY_ADDRESS set by `ray job submit`) the run attaches to that cluster instead of starting Ray.
"""

from __future__ import annotations

import sys

from rrsis.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
