"""The contract between the map driver and a task: a prepared run (its id, and how it executes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rrsis.pipeline.context import RunContext


@dataclass(frozen=True)
class TaskRun:
    """A task's run, after its checks: `run_id` names the run folder (what decides the outputs, nothing
    else); `execute(ctx)` maps `ctx.scenes` into it and returns the exit code (0 ok, 1 some failed)."""

    run_id: str
    execute: Callable[[RunContext], int]
