"""Config sections shared by several jobs."""

from __future__ import annotations

from dataclasses import dataclass

from rrsis.fields import bounded


@dataclass
class StorageConfig:
    """S3-compatible object storage; credentials come only from the standard AWS environment variables."""

    endpoint_url: str = ""  # empty: AWS_ENDPOINT_URL or AWS default
    region: str = ""
    max_attempts: int = bounded(6, 1, 20)
    backoff_s: float = bounded(0.2, 0.0, 60.0)


@dataclass
class RayConfig:
    """Where to run: empty address starts an embedded local Ray on 127.0.0.1, else RAY_ADDRESS/this value."""

    address: str = ""
    num_cpus: int = bounded(0, 0)  # 0: let Ray decide (embedded Ray only)
    num_gpus: int = bounded(0, 0)
