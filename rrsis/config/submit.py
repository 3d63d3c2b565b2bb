"""Config of `rrsis submit`: where the cluster is and what travels with the job."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SubmitConfig:
    address: str = ""  # empty: RAY_ADDRESS
    working_dir: str = "."  # shipped as runtime_env working_dir; empty: use the package installed in the image
    # names of environment variables copied into the job's runtime_env (values are never printed)
    env_vars: list[str] = field(
        default_factory=lambda: ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"]
    )
    pip: list[str] = field(default_factory=list)
    entrypoint_num_cpus: float = 0.0
    job_id: str = ""
