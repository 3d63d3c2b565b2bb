"""/proc readings shared by the map benches: a process tree, its members' memory, names and CPU time."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

from rrsis.pipeline.cores import process_tree


def mem_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process. PSS splits shared pages (torch, GDAL libraries, plasma) among the processes
    sharing them, so its sum over processes is the memory the run really holds; the RSS sum counts a shared
    page once per process."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def descendants(root: int) -> list[int]:
    """Every process descended from `root` (not `root` itself)."""
    return process_tree(root)[1:]


def process_name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    except OSError:
        return "?"
    name = next((w for w in words if w.startswith("ray::")), "")
    return name or " ".join(Path(w).name for w in words[:2])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_schedstats(pid: int) -> dict[int, tuple[float, float]]:
    """tid -> (seconds on a CPU, seconds runnable but waiting for one) of each thread of a process
    (`/proc/<pid>/task/<tid>/schedstat`; the model runs on a worker thread of a Ray actor, not its main one)."""
    out: dict[int, tuple[float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process is gone
        return out
    for tid in tids:
        try:
            run_ns, wait_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (int(run_ns) / 1e9, int(wait_ns) / 1e9)
    return out


def allowed_cpus(pid: int, tid: int | None = None) -> str:
    """The CPUs a process (or one of its threads) may run on, as /proc prints them ("0-1", "1")."""
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "?"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Cpus_allowed_list:")), "?")


def role(name: str) -> str:
    """Which part of a map run a Ray process belongs to, from its name."""
    if "InferStage" in name or "SamStage" in name or "Danet" in name:
        return "inference actor"
    if any(k in name for k in ("read_stage", "write_stage", "RefineStage", "products", "quicklook", "verify")):
        return "CPU stages"
    if name.startswith("ray::") and name != "ray::IDLE":
        return "Ray internals (stats/coordinator actors, agents)"
    if name == "ray::IDLE":
        return "idle workers"
    return "Ray system (raylet, GCS, dashboard)"


class CpuSampler(threading.Thread):
    """CPU seconds per role over the descendants of `root`: each process's last reading, under the last
    non-idle name it was seen with (a worker is IDLE between tasks)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[int, tuple[str, float, float]] = {}  # pid -> (name, first, last CPU seconds)
        self.threads: dict[int, tuple[float, float]] = {}  # inference actor thread -> (on CPU s, runnable s)
        self.cpus: dict[int, str] = {}  # inference actor thread -> the CPUs it may run on (last reading)
        self.system_cpus = "?"  # the CPUs the raylet (and so every worker it starts) may run on
        self.stop = threading.Event()

    def run(self) -> None:
        before = set(descendants(self.root))  # their CPU time so far is not this run's: count from now
        while not self.stop.is_set():
            for pid in descendants(self.root):
                name, cpu = process_name(pid), cpu_seconds(pid)
                old_name, first, _ = self.seen.get(pid, (name, cpu if pid in before else 0.0, cpu))
                self.seen[pid] = (old_name if name == "ray::IDLE" else name, first, cpu)
                if role(name) == "inference actor":
                    stats = thread_schedstats(pid)
                    self.threads.update(stats)
                    self.cpus.update({tid: allowed_cpus(pid, tid) for tid in stats})
                elif "raylet" in name:
                    self.system_cpus = allowed_cpus(pid)
            time.sleep(0.5)

    def actor_cpu_wait(self) -> tuple[float, float, str]:
        """(on-CPU s, runnable-but-waiting s, allowed CPUs) of the inference actor's busiest thread (the one
        running the model): the waiting is CPU the actor wanted while other processes had its core(s)."""
        if not self.threads:
            return 0.0, 0.0, "?"
        tid = max(self.threads, key=lambda t: self.threads[t][0])
        return *self.threads[tid], self.cpus.get(tid, "?")

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, first, last in self.seen.values():
            out[role(name)] = out.get(role(name), 0.0) + last - first
        return out


def infer_timeline(events: list[dict], start_s: float, end_s: float) -> dict[str, float]:
    """Where the inference actor's time went during one `run_map`, from `ray.timeline()` events (µs stamps).

    head: run_map's start -> the actor's first batch (Ray Data start-up, actor start, first read); busy: the
    actor's batches; idle: its gaps between batches (it waited for input); tail: its last batch -> the run's
    return (last refine/write and the last scene's products). head + busy + idle + tail = the run.
    """
    t0, t1 = start_s * 1e6, end_s * 1e6
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if "InferStage" in str(e.get("cat", "")) and str(e.get("cat", "")).endswith(".submit") and "dur" in e
    )
    if not spans:
        return {}
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return {
        "head_s": (spans[0][0] - t0) / 1e6,
        "busy_s": sum(b - a for a, b in spans) / 1e6,
        "idle_s": sum(max(0.0, g) for g in gaps) / 1e6,
        "idle_gaps_over_0.1s": float(sum(1 for g in gaps if g > 1e5)),
        "tail_s": (t1 - spans[-1][1]) / 1e6,
    }
