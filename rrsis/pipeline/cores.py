"""Cores of their own for the CPU inference actors of an embedded Ray.

On a machine without GPUs the inference actor's forward is the run's critical path, and every other process
(read, refine and write tasks, a scene's products, the driver, raylet, GCS) competes with it for the cores.
Ray starts its workers at niceness 15 while the driver, raylet and GCS run at 0, so whenever one of those
shares the model's core the model gets about 3 % of it (scheduler weights 36 against 1024).

`reserve` splits the driver's usable cores: one group per inference actor, the rest for everything else.
Each inference actor claims a group (`CoreClaim`: a lock file per group holding the actor's pid, locked for
the actor's life, so an actor restarted after a crash takes the group its predecessor left) and moves the
threads that run its model there (`CoreClaim.pin`); its helper threads (a scene's background read) go to the
other cores. On the driver, a `Fence` thread keeps every thread of the driver and of the Ray processes it
started (raylet, GCS, workers; new ones too) on the other cores while an actor holds a group, and `lift()`
gives them every core back once the last forward is done. Ray itself starts on every core, so its start-up
and the workers' imports are not squeezed onto the rest. Only where the groups leave at least one core over;
Linux only (setting the cores of a thread of the same user needs no privilege).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CoreGroups = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class CoreReservation:
    groups: CoreGroups  # one group of cores per inference actor
    others: tuple[int, ...]  # the driver, Ray's own processes and every other task
    lock_dir: str  # where the actors' claim files live (on the driver's machine: embedded Ray only)
    every: tuple[int, ...] = ()  # all the driver's cores: what `Fence.lift` gives back


def split_cores(usable: Sequence[int], actors: int, per_actor: int) -> tuple[CoreGroups, tuple[int, ...]] | None:
    """(one group of `per_actor` cores per actor, the rest), or None when that would leave no core over."""
    cores = sorted(usable)
    need = actors * per_actor
    if actors < 1 or per_actor < 1 or need >= len(cores):
        return None
    groups = tuple(tuple(cores[i * per_actor : (i + 1) * per_actor]) for i in range(actors))
    return groups, tuple(cores[need:])


def machine_has_gpus() -> bool:
    """An NVIDIA device node exists (what Ray's GPU detection needs too): the model then runs on a GPU."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def reserve(actors: int, per_actor: int) -> CoreReservation | None:
    """Core groups for `actors` inference actors of `per_actor` cores each, out of the calling thread's cores;
    None where the machine cannot spare them or has no affinity API. Nothing moves until an actor claims a
    group (`CoreClaim`) and a `Fence` runs."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    every = tuple(sorted(os.sched_getaffinity(0)))
    split = split_cores(every, actors, per_actor)
    if split is None:
        return None
    lock_dir = tempfile.mkdtemp(prefix="rrsis-cores-")
    atexit.register(shutil.rmtree, lock_dir, True)
    return CoreReservation(*split, lock_dir, every)


class CoreClaim:
    """One actor's group of reserved cores, claimed at construction (the first group no live actor holds;
    none when all are held or nothing was reserved); `pin()` moves the calling thread onto it."""

    def __init__(self, groups: Sequence[Sequence[int]] = (), lock_dir: str = "") -> None:
        self.cores: tuple[int, ...] = ()
        self.before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self._fd: int | None = None
        self._pinned: set[int] = set()
        for i, group in enumerate(groups if lock_dir and hasattr(os, "sched_setaffinity") else ()):
            fd = os.open(os.path.join(lock_dir, f"group-{i}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel when the actor dies
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())  # the driver's Fence leaves this process alone
            self._fd, self.cores = fd, tuple(int(c) for c in group)
            break

    def pin(self) -> None:
        """Run the calling thread (and the threads it starts, e.g. torch's) on the claimed cores; once per
        thread."""
        thread = threading.get_native_id()
        if self.cores and thread not in self._pinned:
            os.sched_setaffinity(0, self.cores)
            self._pinned.add(thread)

    def unpin(self) -> None:
        """Run the calling thread (a helper of the actor) on the actor's other cores."""
        if self.cores:
            os.sched_setaffinity(0, (self.before - set(self.cores)) or self.before)
            self._pinned.discard(threading.get_native_id())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self.cores = None, ()


def claimed_pids(lock_dir: str) -> set[int]:
    """Pids of the live processes holding a group of `lock_dir` (each wrote its pid into its lock file)."""
    pids: set[int] = set()
    for path in Path(lock_dir).glob("group-*.lock"):
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)  # it could be locked: nobody holds this group now
            except BlockingIOError:
                pids.add(int(os.read(fd, 32).decode().strip()))
            finally:
                os.close(fd)
    return pids


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [root], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


class Fence(threading.Thread):
    """The driver's side of a reservation. While any inference actor holds a group, every `interval_s` it
    moves each thread of the driver and of the driver's descendant processes (raylet, GCS, workers; the
    claiming actors excluded) onto `reservation.others`, each thread once. `lift()` stops it and gives them
    every core back."""

    def __init__(self, reservation: CoreReservation, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="rrsis-cores")
        self.reservation, self.interval_s = reservation, interval_s
        self.moved: set[int] = set()  # threads already on the other cores
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            actors = claimed_pids(self.reservation.lock_dir)
            if actors:
                self.moved |= _move(self._threads(actors, skip=self.moved), self.reservation.others)

    def lift(self) -> None:
        """Stop fencing; every thread of the tree (actors excluded) may use every core again. Idempotent."""
        if self.done.is_set():
            return
        self.done.set()
        if self.is_alive():
            self.join()
        _move(self._threads(claimed_pids(self.reservation.lock_dir), skip=set()), self.reservation.every)
        self.moved.clear()

    def _threads(self, actors: set[int], skip: set[int]) -> list[int]:
        tids: list[int] = []
        for pid in process_tree(os.getpid()):
            if pid not in actors:
                with contextlib.suppress(OSError):
                    tids.extend(t for t in map(int, os.listdir(f"/proc/{pid}/task")) if t not in skip)
        return tids


def _move(tids: Iterable[int], cores: Sequence[int]) -> set[int]:
    """Set each thread's cores (threads that ended meanwhile are skipped); returns the threads moved."""
    moved: set[int] = set()
    for tid in tids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cores)
            moved.add(tid)
    return moved
