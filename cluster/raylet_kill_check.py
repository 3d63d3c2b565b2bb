"""Two-node check: a map submitted to `cluster/local_cluster.sh` (a head and one worker node on loopback) whose
worker node's raylet is SIGKILLed mid-run ends complete, byte-identical to a clean local run.

    .venv/bin/python cluster/raylet_kill_check.py [--scenes 2] [--keep]

Steps: a clean run of the demo model on the first Sen1Floods11 chips (its own embedded Ray), then a two-node
cluster (head 4 CPUs, worker 2 CPUs: the head alone still fits every stage once the worker is gone), the
same map through `rrsis submit`, and, once a tenth of the tiles are written, `kill -9` of the worker node's
raylet (its workers die with it). The submitted job must end SUCCEEDED with every product and tile equal to
the clean run's and every tile once in the manifest. Prints one line per step and a closing verdict line;
exit 0 only if everything matched. The cluster is stopped at the end (only the processes the script started).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
#: chips with water (the first ones by name, Ghana's, have none)
CHIPS = [REPO / "data" / "samples" / "sen1floods11" / "S1Hand" / f"{name}_S1Hand.tif"
         for name in ("Spain_7370579", "India_900498", "Pakistan_849790", "Mekong_333434")]  # fmt: skip
MAP_ARGS = ["tiling.tile_px=64", "tiling.overlap_px=16", "infer.batch_size=8", "outputs.report=false"]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def products(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if (p.is_file() and p.suffix in (".tif", ".geojson", ".png")) or p.name == "stats.json"
    }


def raylet_of(state_dir: Path, node_tmp: str) -> int:
    """The pid of the raylet whose session lives under `state_dir/node_tmp` (the node's own temp dir)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet/raylet " in cmd and f"{state_dir}/{node_tmp}/" in cmd:
            return int(entry)
    raise SystemExit(f"no raylet found under {state_dir}/{node_tmp}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=2, help="Sen1Floods11 chips to map (121 tiles each, 1-4)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rrsis-raylet-kill-"))
    state = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    scenes = ",".join(str(c) for c in CHIPS[: args.scenes])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    rrsis = [sys.executable, "-m", "rrsis.cli"]
    checkpoint = REPO / "models" / "waterland_demo" / "model.pt"
    overrides = [f"input=[{scenes}]", f"infer.checkpoint={checkpoint}", *MAP_ARGS]
    start = time.monotonic()

    say(f"clean run of {args.scenes} chips on an embedded Ray -> {work}/clean")
    clean = subprocess.run([*rrsis, "map", *overrides, f"output={work}/clean"], cwd=REPO, env=env,
                           capture_output=True, text=True)  # fmt: skip
    if clean.returncode != 0:
        say(f"clean run failed (exit {clean.returncode}): {clean.stderr.strip().splitlines()[-1:]}")
        return 1
    (clean_run,) = (work / "clean").iterdir()
    tiles = len(list(clean_run.rglob("tiles/*.tif")))
    say(f"clean run: {tiles} tiles; {clean.stdout.strip().splitlines()[-1]}")

    dashboard = free_port()
    cluster_env = {**env, "STATE_DIR": str(state), "WORKERS": "1", "HEAD_CPUS": "4", "WORKER_CPUS": "2",
                   "GCS_PORT": str(free_port()), "DASHBOARD_PORT": str(dashboard), "PORT_BASE": "46000"}  # fmt: skip
    script = str(REPO / "cluster" / "local_cluster.sh")
    up = subprocess.run([script, "start"], env=cluster_env, capture_output=True, text=True)
    say(f"local_cluster.sh start: exit {up.returncode}: {(up.stdout + up.stderr).strip().splitlines()[-2:]}")
    verdict = "FAILED"
    try:
        if up.returncode != 0:
            return 1
        out = work / "cluster_out"
        submit = subprocess.Popen(
            [*rrsis, "submit", "map", "--address", f"http://127.0.0.1:{dashboard}", "--submit-config",
             str(REPO / "configs" / "submit" / "default.yaml"), *overrides, f"output={out}"],
            cwd=REPO, env=cluster_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        killed_at = 0
        while submit.poll() is None:
            written = len(list(out.glob("*/*/tiles/*.tif.json")))
            if not killed_at and written >= max(1, tiles // 10):
                pid = raylet_of(state, "tmp1")
                os.kill(pid, signal.SIGKILL)
                killed_at = written
                say(f"killed the worker node's raylet (pid {pid}) after {written} of {tiles} tiles")
            time.sleep(0.5)
        log = submit.stdout.read() if submit.stdout else ""
        say(f"rrsis submit: exit {submit.returncode}; last lines: {log.strip().splitlines()[-3:]}")
        if not killed_at:
            say("the run ended before the kill: nothing was tested")
            return 1
        (run,) = out.iterdir()
        same = products(run) == products(clean_run)
        keys = [r["key"] for r in pq.read_table(run / "manifest.parquet").to_pylist()]
        once = len(keys) == len(set(keys)) == tiles
        summary = json.loads((run / "summary.json").read_text())
        say(f"products identical to the clean run: {same}; tiles in the manifest {len(keys)} "
            f"(unique {len(set(keys))}, expected {tiles}); summary: scenes_ok {summary['scenes_ok']}, "
            f"tiles_failed {summary['tiles_failed']}")  # fmt: skip
        if submit.returncode == 0 and same and once and summary["tiles_failed"] == 0:
            verdict = "OK"
        return 0 if verdict == "OK" else 1
    finally:
        down = subprocess.run([script, "stop"], env=cluster_env, capture_output=True, text=True)
        say(f"local_cluster.sh stop: {down.stdout.strip()}")
        say(f"raylet kill check: {verdict} in {time.monotonic() - start:.0f} s (load {os.getloadavg()[0]:.1f})")
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work), str(state)], check=False)


if __name__ == "__main__":
    sys.exit(main())
