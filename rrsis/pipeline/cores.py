"""Cores of their own for the CPU inference actors of an embedded Ray.

On a machine without GPUs the inference actor's forward is the run's critical path, and every other process
(read, refine and write tasks, a scene's products, the driver, raylet, GCS) competes with it for the cores.
Ray starts its workers at niceness 15 while the driver, raylet and GCS run at 0, so whenever one of those
shares the model's core the model gets about 3 % of it (scheduler weights 36 against 1024).

`reserve` splits the driver's usable cores before it starts Ray: one group per inference actor, the rest for
everything else. The driver narrows its own thread to the rest, so raylet, GCS and every worker it starts
inherit that mask. Each inference actor claims a group (`CoreClaim`: a lock file per group, held for the
actor's life, so an actor restarted after a crash takes the group its predecessor left) and moves the
threads that run its model there (`CoreClaim.pin`). The actor's other threads (Ray's, a scene's background
read) stay on the other cores. Only where the groups leave at least one core for the rest; Linux only.
"""

from __future__ import annotations

import atexit
import fcntl
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

CoreGroups = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class CoreReservation:
    groups: CoreGroups  # one group of cores per inference actor
    others: tuple[int, ...]  # the driver, Ray's own processes and every other task
    lock_dir: str  # where the actors' claim files live (on the driver's machine: embedded Ray only)


#: The reservation of the embedded Ray this process started (None: no Ray of ours, a cluster, or no cores).
RESERVED: CoreReservation | None = None
_before: set[int] | None = None  # the driver thread's cores before `reserve` first narrowed them


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
    """Reserve core groups for `actors` inference actors; narrow the calling thread (and so every process it
    starts from now on) to the other cores. None where the machine cannot spare them or has no affinity API."""
    global _before
    if not hasattr(os, "sched_setaffinity"):
        return None
    if _before is None:
        _before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _before)  # a second embedded Ray of the same driver starts from all its cores
    split = split_cores(sorted(_before), actors, per_actor)
    if split is None:
        return None
    groups, others = split
    os.sched_setaffinity(0, others)
    lock_dir = tempfile.mkdtemp(prefix="rrsis-cores-")
    atexit.register(shutil.rmtree, lock_dir, True)
    return CoreReservation(groups, others, lock_dir)


def all_cores() -> tuple[int, ...]:
    """Every core the driver had before `reserve` (reserved ones included); () when nothing is reserved.
    Work that runs after the last forward (the last scene's products) may use them all."""
    return tuple(sorted(_before)) if RESERVED is not None and _before else ()


def run_on(cores: Sequence[int]) -> tuple[int, ...]:
    """Move the calling thread onto `cores` (nothing when empty); returns the cores it ran on before."""
    if not cores:
        return ()
    before = tuple(sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, cores)
    return before


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
        """Run the calling thread on the cores the actor was started with (its helper threads)."""
        if self.cores:
            os.sched_setaffinity(0, self.before)
            self._pinned.discard(threading.get_native_id())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self.cores = None, ()
