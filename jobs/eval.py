"""Ray-job entry point of `rrsis eval`: `python jobs/eval.py --config FILE [key=value ...]`.

Thin on purpose: the same CLI path as `rrsis eval`, so a submitted job and a local run cannot diverge.
"""

from __future__ import annotations

import sys

from rrsis.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
