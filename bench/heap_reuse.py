"""Page faults and time of the demo model's forwards with glibc's default malloc and with `infer.reuse_heap`.

Each case runs in a fresh process (GLIBC_TUNABLES is read at start-up): the committed water-land demo model,
one torch thread, pinned to the lowest CPU, N forwards of 512 px tiles of a generated 2-band dB tile, run in
the main thread (as bench/map_overhead.py's loop) or in a second thread (as a Ray actor's calls). Prints, per
case, wall time and minor page faults per forward of the forwarding thread, and the ratios reuse / default.

    .venv/bin/python bench/heap_reuse.py [--forwards 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def thread_faults() -> int:
    """Minor page faults of the calling thread so far."""
    stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[7])


def forwards(n: int, in_thread: bool) -> dict[str, float]:
    import numpy as np
    import torch

    from rrsis.checkpoints import build_from_checkpoint, load_checkpoint

    model = build_from_checkpoint(load_checkpoint(str(ROOT / "models/waterland_demo/model.pt"))).eval()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0, 1, (1, 2, 512, 512)).astype(np.float32))
    out: dict[str, float] = {}

    def run() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        faults, start = thread_faults(), time.perf_counter()
        with torch.inference_mode():
            for _ in range(n):
                torch.softmax(model(x).float(), dim=1)[:, 1].numpy()
        out.update(wall_s=time.perf_counter() - start, faults_per_forward=(thread_faults() - faults) / n)

    if in_thread:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    return out


def main() -> None:
    if sys.argv[1:2] == ["--case"]:
        print(json.dumps(forwards(int(sys.argv[2]), sys.argv[3] == "thread")))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--forwards", type=int, default=60)
    args = parser.parse_args()
    from rrsis.resources import heap_reuse_env

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX")}
    results = {}
    for where in ("thread", "main"):
        for label, extra in (("default", {}), ("reuse_heap", heap_reuse_env(env))):
            cmd = [sys.executable, __file__, "--case", str(args.forwards), where]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**env, **extra})
            results[where, label] = json.loads(done.stdout.splitlines()[-1])
            r = results[where, label]
            print(f"{where:6s} {label:10s}: {r['wall_s']:.2f} s, {r['faults_per_forward']:.0f} faults a forward")
    ratios = [results[w, "reuse_heap"]["wall_s"] / results[w, "default"]["wall_s"] for w in ("thread", "main")]
    print(f"{args.forwards} forwards; time reuse_heap / default: thread {ratios[0]:.3f}, main {ratios[1]:.3f}")


if __name__ == "__main__":
    main()
