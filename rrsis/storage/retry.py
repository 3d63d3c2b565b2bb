"""Exponential backoff with full jitter for transient object-storage failures.

Kept apart from the S3 client so the policy (what is transient, how long to wait) is readable in one place.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rrsis.errors import StorageError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` tries in all; the wait before try n+1 is uniform in [0, min(cap_s, base_s * 2**n)]."""

    max_attempts: int = 8
    base_s: float = 0.1
    cap_s: float = 5.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2**attempt)))


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    is_transient: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str],
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> T:
    """Run `fn`, retrying transient errors; raise StorageError (one line naming `what`) when it gives up."""
    rng = rng or random.Random()
    for attempt in range(policy.max_attempts):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            if not transient or attempt + 1 >= policy.max_attempts:
                tries = f" after {attempt + 1} attempts" if transient else ""
                raise StorageError(f"{what} failed{tries}: {describe(exc)}") from exc
            wait_s = policy.delay_s(attempt, rng)
            log.debug("%s: transient error (%s), retry %d in %.2fs", what, describe(exc), attempt + 1, wait_s)
            time.sleep(wait_s)
    raise StorageError(f"{what} failed: no attempt made (max_attempts={policy.max_attempts})")
