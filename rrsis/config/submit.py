"""Config of `rrsis submit`: where the cluster is, what travels with the job, what the entrypoint may use.

Secrets never live here: `env_vars` holds variable NAMES; their values are read from the submitting
shell at submit time and go only into the job's runtime_env (never printed or logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.fields import bounded

# Object-storage and offline-model variables a job needs on the cluster (copied when set locally).
DEFAULT_ENV_VARS = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    # GDAL's /vsis3/ settings for S3-compatible stores
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "AWS_VIRTUAL_HOSTING",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
]

# Never shipped in working_dir (gitignore syntax; the repo's .gitignore applies as well).
DEFAULT_EXCLUDES = [
    ".git",
    ".venv",
    "outputs",
    "runs",
    "build",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
]


@dataclass
class SubmitConfig:
    address: str = ""  # Ray dashboard / job server, e.g. http://head:8265; empty: --address, then RAY_ADDRESS
    # Shipped as runtime_env working_dir (the checkout: code, configs, small sample data). Empty: the job
    # runs against the rrsis installed in the cluster image; only the config and jobs/<job>.py travel.
    working_dir: str = "."
    excludes: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    # names of environment variables copied into the job's runtime_env (values are never printed)
    env_vars: list[str] = field(default_factory=lambda: list(DEFAULT_ENV_VARS))
    pip: list[str] = field(default_factory=list)  # extra pip packages for the job (runtime_env pip)
    python: str = "python"  # the interpreter on the cluster that has rrsis' dependencies
    # entrypoint script relative to the shipped directory; empty: jobs/<job>.py. E.g. jobs/submit_demo.py
    # checks a new cluster end to end (code upload, env by name, resources) without running a model.
    script: str = ""
    script_args: list[str] = field(default_factory=list)  # appended after `--config FILE`
    entrypoint_num_cpus: float = bounded(0.0, 0.0, 256.0)
    entrypoint_num_gpus: float = bounded(0.0, 0.0, 16.0)
    entrypoint_memory_mb: int = bounded(0, 0)
    job_id: str = ""  # submission id; empty: rrsis-<job>-<UTC time>-<random>
    connect_timeout_s: float = bounded(5.0, 0.1, 120.0)  # reachability check before anything is sent
    poll_s: float = bounded(1.0, 0.05, 60.0)  # status polling interval while waiting/following
    wait_timeout_s: float = bounded(0.0, 0.0)  # 0: wait until the job ends
    verify_tls: bool = True
