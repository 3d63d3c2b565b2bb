"""One run at a time per run folder: a lease object the driver holds, refreshes, and releases.

`<run>/_lease.json` names the holder (host, pid, a random token), since when it holds the run and when it
last refreshed it. It is created with a conditional write (`rrsis.storage.conditional`: `If-None-Match` on
S3, `O_EXCL` locally), so two drivers never both hold it. A thread refreshes it every `stale_s / 4` seconds
by compare-and-swap; a lease not refreshed for `stale_s` seconds, or whose holder ran on this machine and
is gone, belongs to a dead driver and is taken over (with a warning). A holder whose refresh finds someone
else's lease has lost the run: `check()` raises, and the driver stops before writing more.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from rrsis import storage
from rrsis.errors import ConfigError, RrsisError, StorageError
from rrsis.storage import conditional

log = logging.getLogger("rrsis.map")

LEASE = "_lease.json"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def holder_is_dead(held: dict[str, Any]) -> bool:
    """The holder ran on this machine and its process is gone (a killed or crashed driver): its lease is stale
    at once, not only after `stale_s`."""
    if held.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(held.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return int(held.get("pid", 0)) <= 0


class LeaseHeld(ConfigError):
    """Another live driver holds the run (exit code 2)."""


class RunLease:
    """Context manager: acquire on enter (or raise `LeaseHeld`), refresh in a thread, release on exit."""

    def __init__(self, run_prefix: str, stale_s: float = 120.0, now: Any = time.time) -> None:
        self.uri = storage.join(run_prefix, LEASE)
        self.run = run_prefix
        self.stale_s = float(stale_s)
        self.now = now
        self.token = uuid.uuid4().hex
        self.since = 0.0
        self.current = b""  # the bytes of our lease as last written
        self.lost = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, t: float) -> bytes:
        host, pid = socket.gethostname(), os.getpid()
        body = {"host": host, "pid": pid, "token": self.token, "since": self.since, "refreshed": t}
        return json.dumps(body, sort_keys=True).encode()

    def acquire(self) -> None:
        self.since = self.now()
        data = self._record(self.since)
        if conditional.create(self.uri, data):
            self.current = data
            return
        try:
            held_bytes = storage.get_bytes(self.uri)
            held = json.loads(held_bytes)
        except (StorageError, ValueError):  # released between our create and read, or unreadable: retry once
            if conditional.create(self.uri, data):
                self.current = data
                return
            raise LeaseHeld(f"run {self.run} is in progress (its lease {self.uri} is unreadable)") from None
        age = self.now() - float(held.get("refreshed", 0))
        who = f"host {held.get('host', '?')} pid {held.get('pid', '?')}"
        if age < self.stale_s and not holder_is_dead(held):
            raise LeaseHeld(
                f"run {self.run} is in progress: held by {who} since {_stamp(float(held.get('since', 0)))} "
                f"(refreshed {age:.0f} s ago); wait for it, or after {self.stale_s:g} s without a refresh "
                "(key 'lease_stale_s') it is taken over"
            )
        if not conditional.swap(self.uri, held_bytes, data):
            raise LeaseHeld(f"run {self.run}: another driver took over the stale lease of {who} first")
        log.warning("run %s: took over the lease of %s (a dead driver: not refreshed for %.0f s, or its process is "
                    "gone)", self.run, who, age)  # fmt: skip
        self.current = data

    def refresh(self) -> bool:
        """Refresh our lease; False (and `lost` set) when it is no longer ours."""
        data = self._record(self.now())
        try:
            ok = conditional.swap(self.uri, self.current, data)
        except (RrsisError, OSError) as exc:  # storage hiccup: try again next round, the lease is not stale yet
            log.warning("run %s: could not refresh its lease: %s", self.run, exc)
            return True
        if ok:
            self.current = data
        else:
            self.lost = f"run {self.run}: another driver took over this run's lease ({self.uri}); stopping"
        return ok

    def check(self) -> None:
        if self.lost:
            raise RrsisError(self.lost)

    def _loop(self) -> None:
        interval = max(0.5, self.stale_s / 4)
        while not self._stop.wait(interval):
            if not self.refresh():
                return

    def __enter__(self) -> RunLease:
        self.acquire()
        self._thread = threading.Thread(target=self._loop, name="rrsis-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.lost:
            try:
                conditional.remove(self.uri, self.current)
            except (RrsisError, OSError) as err:
                log.warning("run %s: could not release its lease: %s", self.run, err)
