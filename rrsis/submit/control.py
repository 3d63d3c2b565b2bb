"""Follow and control submitted jobs: status, logs (optionally followed), stop, list, wait.

Output never includes a job's runtime_env (it holds the env values passed by name); text that comes back
from Ray (logs, error messages) is scrubbed of the values of locally set secret-looking variables too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rrsis.config.submit import DEFAULT_ENV_VARS
from rrsis.errors import JobError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "KEY")


def secret_values(names: list[str] | None = None) -> list[str]:
    """Locally set values of the secret-looking variables among `names` (default: the submit env + auth)."""
    pool = [*(names or DEFAULT_ENV_VARS), "RAY_AUTH_TOKEN"]
    found = [os.environ.get(n, "") for n in pool if any(m in n.upper() for m in _SECRET_MARKERS)]
    return [v for v in found if len(v) >= 4]


def scrub(text: str, values: list[str] | None = None) -> str:
    for value in values if values is not None else secret_values():
        text = text.replace(value, "***")
    return text


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def _ray_call(what: str, job_id: str, fn: Callable[[], Any]) -> Any:
    """Run one client call; Ray's exceptions become one scrubbed JobError line."""
    try:
        return fn()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "404" in first or "does not exist" in first:
            raise JobError(f"job {job_id}: no such job on this cluster") from None
        raise JobError(scrub(f"{what} {job_id}: {first}")) from None


def status(client: Any, job_id: str) -> str:
    return _status_name(_ray_call("status of", job_id, lambda: client.get_job_status(job_id)))


def describe(client: Any, job_id: str) -> str:
    """One line: id, status, entrypoint, message — never the runtime_env."""
    info = _ray_call("status of", job_id, lambda: client.get_job_info(job_id))
    message = (info.message or "").strip().splitlines()
    tail = f" — {message[0]}" if message else ""
    return scrub(f"{job_id} {_status_name(info.status)} `{info.entrypoint}`{tail}")


def logs(client: Any, job_id: str) -> str:
    return scrub(str(_ray_call("logs of", job_id, lambda: client.get_job_logs(job_id))))


def follow(client: Any, job_id: str, out: TextIO, *, poll_s: float = 1.0, timeout_s: float = 0.0) -> str:
    """Print the job's log as it grows until the job ends; returns the final status.

    Polling `get_job_logs` (whole text, print the new suffix) keeps this synchronous and works through
    HTTP proxies that break the websocket `tail_job_logs` uses.
    """
    printed = 0

    def print_new_logs() -> None:
        nonlocal printed
        text = logs(client, job_id)
        if len(text) > printed:
            out.write(text[printed:])
            out.flush()
            printed = len(text)

    return wait(client, job_id, poll_s=poll_s, timeout_s=timeout_s, on_poll=print_new_logs)


def wait(
    client: Any,
    job_id: str,
    *,
    poll_s: float = 1.0,
    timeout_s: float = 0.0,
    on_poll: Callable[[], None] | None = None,
) -> str:
    """Block until the job is in a terminal state (or the timeout passes); returns the status.

    `on_poll` runs after each status poll (before returning, so a final log suffix is not lost).
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while True:
        state = status(client, job_id)
        if on_poll is not None:
            on_poll()
        if state in TERMINAL:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {state} after {timeout_s:g} s (it keeps running; `rrsis jobs stop`)")
        time.sleep(poll_s)


def stop(client: Any, job_id: str, *, poll_s: float = 0.5, timeout_s: float = 60.0) -> str:
    """Ask the cluster to stop the job and wait until it is no longer running; returns the final status."""
    state = status(client, job_id)
    if state in TERMINAL:
        return state
    _ray_call("stop", job_id, lambda: client.stop_job(job_id))
    return wait(client, job_id, poll_s=poll_s, timeout_s=timeout_s)


def list_jobs(client: Any) -> list[str]:
    """One line per job (newest last): submission id, status, entrypoint."""
    jobs = _ray_call("list", "(all)", client.list_jobs)
    lines = []
    for info in sorted(jobs, key=lambda j: j.start_time or 0):
        job_id = info.submission_id or info.job_id or "?"
        lines.append(scrub(f"{job_id} {_status_name(info.status)} `{info.entrypoint}`"))
    return lines


def write_lines(lines: list[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up at call time (tests and callers may swap sys.stdout)
    for line in lines:
        out.write(line + "\n")
