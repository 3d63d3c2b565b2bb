"""How `rrsis map` scales with the tile count: the driver's memory must stay flat, the first tile must not wait
for the whole plan, and a finished run must resume (skip) in seconds without reading a tile.

Workload: one generated 2-band SAR-like scene, hard-linked as many scenes (disk stays small; every scene is a
separate input with its own outputs), 32 px tiles without overlap so the tile count is high, and the cheapest
real model (a random half-width SeNet, one forward per batch of 16 tiles, no core of its own: writing the
tiles is most of the work). Products are the COG mosaic and
stats (vectors and quicklook off: they measure GDAL, not the driver). Each map runs as a user runs it, `rrsis
map` in its own process with its embedded Ray:

- small: 10 scenes of 1024^2 = 10,240 tiles;
- large: 500 scenes of 640^2 = 200,000 tiles;

each followed by the same command again (a full resume of the finished run). Before them, the time to the
first tile is probed `--probes` times per size, alternating small and large (each probe is a fresh map,
stopped at its first tile), and the medians are compared: one map each would mix the VM's drift in. Measured
per run: the driver process's peak RSS (VmHWM), the peak of the PSS summed over the driver and all its
descendants (Ray's processes), the time from the command's start to the first written tile, the wall time, and
the resume's wall time with its counts (scenes skipped, tiles verified = tiles read). Goals: driver peak RSS
large / small <= 1.10; time to the first tile at 500 scenes / at 10 scenes <= 1.2; resume of the large run <=
30 s and no tile read. The last line prints the three ratios.

    .venv/bin/python bench/map_scale.py [--small-scenes 10 --small-size 1024] [--large-scenes 500
        --large-size 640] [--tile 32] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.map_memory import PeakSampler
from tests.pipeline_data import tiny_checkpoint, write_scene

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "scale"


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of one process so far (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Watch(threading.Thread):
    """The driver's VmHWM (last reading before it exits) and when the first mask tile appeared."""

    def __init__(self, pid: int, run_dir: Path, start: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.run_dir, self.start_t = pid, run_dir, start
        self.hwm = 0
        self.hwm_at_s = 0.0  # when the driver's peak was reached (diagnostic: during the waves or at the end)
        self.first_tile_s = float("nan")
        self.stop = threading.Event()

    def _first_tile(self) -> bool:
        try:
            for entry in os.scandir(self.run_dir):
                tiles = Path(entry.path, "tiles")
                if entry.is_dir() and tiles.is_dir() and any(n.endswith(".tif") for n in os.listdir(tiles)):
                    return True
        except OSError:
            pass
        return False

    def run(self) -> None:
        while not self.stop.is_set():
            hwm = vm_hwm_bytes(self.pid)
            if hwm > self.hwm:
                self.hwm, self.hwm_at_s = hwm, time.perf_counter() - self.start_t
            if self.first_tile_s != self.first_tile_s and self._first_tile():
                self.first_tile_s = time.perf_counter() - self.start_t
            time.sleep(0.02 if self.first_tile_s != self.first_tile_s else 0.25)


def rrsis_map(overrides: list[str], out: Path) -> dict[str, object]:
    """One `rrsis map` process, watched; returns its figures and summary."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "rrsis.cli", "map", *overrides, f"output={out}", f"run_id={RUN_ID}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch, peak = Watch(proc.pid, out / RUN_ID, start), PeakSampler(proc.pid)
    watch.start()
    peak.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    for t in (watch, peak):
        t.stop.set()
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"rrsis map exited {proc.returncode}:\n{output[-3000:]}")
    summary = json.loads((out / RUN_ID / "summary.json").read_text())
    figures = {"driver_hwm": watch.hwm, "hwm_at": watch.hwm_at_s, "pss": peak.peak, "first_tile": watch.first_tile_s}
    return {"wall": wall, **figures, **summary}


def first_tile_probe(overrides: list[str], out: Path) -> float:
    """Seconds from `rrsis map`'s start to its first written tile; the map is then stopped (its whole process
    group: the driver and the Ray it started)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "rrsis.cli", "map", *overrides, f"output={out}", f"run_id={RUN_ID}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    watch = Watch(proc.pid, out / RUN_ID, start)
    watch.start()
    while watch.first_tile_s != watch.first_tile_s and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its Ray is left
    watch.stop.set()
    watch.join()
    return watch.first_tile_s


def scenes(root: Path, count: int, size: int) -> list[str]:
    """`count` hard links of one generated scene (each a separate input with its own outputs)."""
    root.mkdir(parents=True, exist_ok=True)
    base = write_scene(root / "base.tif", size, size, seed=3)
    links = []
    for k in range(count):
        link = root / f"s{k:05d}.tif"
        os.link(base, link)
        links.append(str(link))
    return links


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small-scenes", type=int, default=10)
    parser.add_argument("--small-size", type=int, default=1024)
    parser.add_argument("--large-scenes", type=int, default=500)
    parser.add_argument("--large-size", type=int, default=640)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--probes", type=int, default=2, help="first-tile probes per size, alternating")
    parser.add_argument("--set", nargs="*", default=[], help="extra `rrsis map` overrides")
    args = parser.parse_args()
    bench_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rrsis-scale-"))
    ckpt = tiny_checkpoint(tmp / "model.pt", family="senet", width="half")
    common = [
        f"infer.checkpoint={ckpt}", f"tiling.tile_px={args.tile}", "tiling.overlap_px=0", "infer.batch_size=16",
        "infer.batch_invariant=false", "outputs.vectors=false", "outputs.quicklook=false",
        # the model is too cheap to deserve a core of its own: the writes are the work here
        "infer.dedicated_cores=false", *args.set,
    ]  # fmt: skip
    rows, listings = {}, {}
    for label, count, size in (("small", args.small_scenes, args.small_size), ("large", args.large_scenes,
                                                                               args.large_size)):  # fmt: skip
        inputs = scenes(tmp / f"scenes_{label}", count, size)
        listings[label] = tmp / f"{label}.txt"
        listings[label].write_text("\n".join(inputs) + "\n")
    # Time to the first tile, alternating small / large so the machine's drift hits both alike.
    probes: dict[str, list[float]] = {"small": [], "large": []}
    for k in range(args.probes):
        for label in ("small", "large"):
            first = first_tile_probe([f"input=[{listings[label]}]", *common], tmp / f"probe_{label}_{k}")
            probes[label].append(first)
            print(f"first-tile probe {label} {k}: {first:.1f} s", flush=True)
    for label, count, size in (("small", args.small_scenes, args.small_size), ("large", args.large_scenes,
                                                                               args.large_size)):  # fmt: skip
        out = tmp / f"out_{label}"
        run = rrsis_map([f"input=[{listings[label]}]", *common], out)
        again = rrsis_map([f"input=[{listings[label]}]", *common], out)
        rows[label] = (count, run, again)
        print(
            f"{label}: {count} scenes of {size}^2, {run['tiles']} tiles: driver peak RSS "
            f"{int(run['driver_hwm']) / 1e6:.0f} MB (reached at {run['hwm_at']:.0f} s), "
            f"peak summed PSS {int(run['pss']) / 1e9:.2f} GB, first tile "
            f"{run['first_tile']:.1f} s, wall {run['wall']:.0f} s ({run['tiles_per_s']:.0f} tiles/s in compute); "
            f"full resume {again['wall']:.1f} s (scenes skipped {again['scenes_resumed']}, tiles read "
            f"{again['tiles_verified']}, computed {again['tiles_computed']}), driver peak RSS "
            f"{int(again['driver_hwm']) / 1e6:.0f} MB",
            flush=True,
        )
    small, large = rows["small"][1], rows["large"][1]
    first_small = statistics.median(probes["small"])
    print(f"first tile, median of {args.probes} alternating probes: small {first_small:.1f} s, large "
          f"{statistics.median(probes['large']):.1f} s", flush=True)  # fmt: skip
    resume = rows["large"][2]
    per_tile_ms = large["wall"] / max(1, int(large["tiles"])) * 1e3
    per_scene_s = large["wall"] / rows["large"][0]
    print(f"per tile (large run): {per_tile_ms:.2f} ms wall; per scene: {per_scene_s:.2f} s; "
          f"bench {time.perf_counter() - bench_start:.0f} s")  # fmt: skip
    print(
        f"driver peak RSS {int(large['tiles'])} / {int(small['tiles'])} tiles "
        f"{int(large['driver_hwm']) / int(small['driver_hwm']):.3f} (goal <= 1.10); first tile "
        f"{rows['large'][0]} / {rows['small'][0]} scenes {statistics.median(probes['large']) / first_small:.3f} "
        f"(goal <= 1.2); full resume of {int(large['tiles'])} tiles {resume['wall']:.1f} s (goal <= 30), "
        f"{resume['tiles_verified']} tiles read (goal 0)"
    )


if __name__ == "__main__":
    main()
