"""What travels with a submitted job: the resolved config, the `jobs/<job>.py` entrypoint, a runtime_env.

Two shapes (SubmitConfig.working_dir):
- a checkout (default "."): the directory is shipped as runtime_env `working_dir` (minus `excludes` and
  what .gitignore lists); the resolved config is written into it as `.rrsis-submit/<id>.yaml` only for
  the duration of the upload, so relative paths in the config (models/, data/samples/) resolve on the
  cluster exactly as they do locally;
- empty: the cluster image has rrsis installed (cluster/Dockerfile); a small staging directory carries just
  the config and `jobs/<job>.py`.
Environment variables are copied by NAME; `describe()` shows names only, never values.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis.config.submit import SubmitConfig
from rrsis.errors import JobError

CONFIG_DIR = ".rrsis-submit"
_REPO = Path(__file__).resolve().parents[2]


@dataclass
class JobPackage:
    """Everything `JobSubmissionClient.submit_job` receives, plus what to clean up afterwards."""

    job: str
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    entrypoint_resources: dict[str, Any] = field(default_factory=dict)
    env_names: list[str] = field(default_factory=list)

    def submit_kwargs(self) -> dict[str, Any]:
        return {
            "entrypoint": self.entrypoint,
            "submission_id": self.submission_id,
            "runtime_env": self.runtime_env,
            "metadata": self.metadata,
            **self.entrypoint_resources,
        }

    def describe(self) -> str:
        """One line for the console: job id, entrypoint and the NAMES of the variables passed."""
        names = ", ".join(self.env_names) if self.env_names else "none"
        return f"job {self.submission_id}: `{self.entrypoint}` (env passed by name: {names})"


def new_submission_id(job: str) -> str:
    return f"rrsis-{job}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def env_from_names(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Values of the named variables that are set locally (a secret stays in this dict only)."""
    values = {n: os.environ[n] for n in names if os.environ.get(n)}
    return values, sorted(values)


def script_for(job: str, sub: SubmitConfig) -> str:
    """The entrypoint script, relative to the shipped directory."""
    return sub.script or f"jobs/{job}.py"


def _entrypoint_script(rel: str, working_dir: Path | None) -> Path:
    root = working_dir if working_dir is not None else _REPO
    script = root / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not script.is_file():
        raise JobError(f"entrypoint {rel} not found under {root} (submit.script, default jobs/<job>.py)")
    return script


def _entrypoint_resources(sub: SubmitConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sub.entrypoint_num_cpus:
        out["entrypoint_num_cpus"] = sub.entrypoint_num_cpus
    if sub.entrypoint_num_gpus:
        out["entrypoint_num_gpus"] = sub.entrypoint_num_gpus
    if sub.entrypoint_memory_mb:
        out["entrypoint_memory"] = int(sub.entrypoint_memory_mb) * 1024 * 1024
    return out


@contextlib.contextmanager
def job_package(job: str, config_yaml: str, sub: SubmitConfig) -> Iterator[JobPackage]:
    """Stage the config (and, image mode, the entrypoint) and yield the package; staging is removed after.

    Submit inside the `with` block: Ray uploads the working_dir during `submit_job`.
    """
    submission_id = sub.job_id or new_submission_id(job)
    script = script_for(job, sub)
    env_values, env_names = env_from_names(list(sub.env_vars))
    with contextlib.ExitStack() as stack:
        if sub.working_dir:
            root = Path(sub.working_dir).expanduser().resolve()
            if not root.is_dir():
                raise JobError(f"submit.working_dir={sub.working_dir!r} is not a directory")
            _entrypoint_script(script, root)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rrsis-submit-")))
            (root / script).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_entrypoint_script(script, None), root / script)
        config_rel = Path(CONFIG_DIR) / f"{submission_id}.yaml"
        config_path = root / config_rel
        config_path.parent.mkdir(exist_ok=True)
        config_path.write_text(config_yaml)
        stack.callback(_remove_staged, config_path)
        runtime_env: dict[str, Any] = {"working_dir": str(root), "env_vars": env_values}
        if sub.working_dir:
            runtime_env["excludes"] = list(sub.excludes)
        if sub.pip:
            runtime_env["pip"] = list(sub.pip)
        entrypoint = shlex.join([sub.python, script, "--config", config_rel.as_posix(), *sub.script_args])
        yield JobPackage(
            job=job,
            submission_id=submission_id,
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            metadata={"rrsis_job": job, "submitted_by": "rrsis submit"},
            entrypoint_resources=_entrypoint_resources(sub),
            env_names=env_names,
        )


def _remove_staged(config_path: Path) -> None:
    config_path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        config_path.parent.rmdir()  # only when empty: concurrent submissions keep theirs
