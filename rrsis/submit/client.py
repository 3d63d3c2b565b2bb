"""`rrsis submit JOB` and `rrsis jobs …`: the CLI side of Ray Jobs.

Order of `submit`, so nothing reaches a cluster unless it can run: load + validate the job config locally
(`ConfigError`, exit 2) -> refuse outputs the job would lose (a relative local path; `JobError`, exit 2) ->
resolve the address and check the job server answers (`JobError`, exit 2) -> stage config + entrypoint ->
`submit_job` -> print the id -> follow the logs to the end unless `--no-wait`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import yaml

from rrsis import storage
from rrsis.config.jobs import schema_for
from rrsis.config.load import load_config, to_yaml
from rrsis.config.submit import SubmitConfig
from rrsis.errors import JobError
from rrsis.session import verbose
from rrsis.storage.uri import local_path
from rrsis.submit import control
from rrsis.submit.connection import connect
from rrsis.submit.package import job_package, script_for

log = logging.getLogger("rrsis.submit")
#: Ray's loggers that narrate the packaging of a job's working_dir
RAY_PACKAGING_LOGGERS = ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir",
                         "ray.dashboard.modules.dashboard_sdk")  # fmt: skip


def load_submit_config(path: str | None) -> SubmitConfig:
    return load_config(SubmitConfig, path, None)


def resolved_job_config(job: str, path: str | None, overrides: list[str]) -> str:
    """The job's config, validated locally and serialised as the YAML the cluster will load."""
    return to_yaml(load_config(schema_for(job), path, overrides))


# The config keys each job writes its results under (dotted). A job runs in Ray's per-job working directory.
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "map": ("output",),
    "train": ("output",),
    "tune": ("output",),
    "eval": ("output",),
}


def refuse_lost_outputs(job: str, config_yaml: str, sub: SubmitConfig) -> None:
    """One JobError line if the job would write its results to a relative local path.

    On the cluster the job's current folder is Ray's temporary working_dir package
    (`.../runtime_resources/working_dir_files/_ray_pkg_*`), deleted with the job, so results there are lost.
    Only the job's own entrypoint (`jobs/<job>.py`) is checked: another `submit.script` decides what it writes.
    """
    if script_for(job, sub) != f"jobs/{job}.py":
        return
    config = yaml.safe_load(config_yaml) or {}
    for key in OUTPUT_KEYS.get(job, ()):
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or storage.is_remote(value) or os.path.isabs(local_path(value)):
            continue
        name = value.strip("./") or "runs"
        raise JobError(
            f"{key}={value!r} is a relative local path: a submitted {job} job runs in Ray's temporary working "
            f"directory on the cluster, deleted when the job ends, so its results would be lost; give an absolute "
            f"path on storage every node shares ({key}=/shared/rrsis/{name}) or an s3:// URI ({key}=s3://BUCKET/{name})"
        )


def submit(
    job: str,
    config_yaml: str,
    sub: SubmitConfig,
    *,
    address: str | None = None,
    client: Any = None,
) -> str:
    """Submit `jobs/<job>.py` with `config_yaml` to the cluster; returns the submission id."""
    refuse_lost_outputs(job, config_yaml, sub)
    if client is None:
        client = connect(address, sub.address, timeout_s=sub.connect_timeout_s, verify=sub.verify_tls)
    with job_package(job, config_yaml, sub) as pkg:
        log.info("submitting %s", pkg.describe())
        try:
            job_id = client.submit_job(**pkg.submit_kwargs())
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            if _was_created(client, pkg.submission_id):
                # an overloaded dashboard can answer 5xx after it stored the job: it exists, follow it
                log.warning("job server reported an error, but job %s exists; following it", pkg.submission_id)
                return pkg.submission_id
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            values = list(pkg.runtime_env["env_vars"].values())
            raise JobError(control.scrub(f"submitting {pkg.submission_id} failed: {first}", values)) from None
    return str(job_id)


def _was_created(client: Any, submission_id: str) -> bool:
    try:
        client.get_job_status(submission_id)
    except Exception:  # not found, or the server is really down: either way, not created
        return False
    return True


def submit_from_cli(args: argparse.Namespace) -> int:
    sub = load_submit_config(args.submit_config)
    config_yaml = resolved_job_config(args.job, args.config, list(args.overrides or []))
    refuse_lost_outputs(args.job, config_yaml, sub)  # before anything reaches the head
    client = connect(args.address, sub.address, timeout_s=sub.connect_timeout_s, verify=sub.verify_tls)
    if not verbose():  # Ray's packaging lines (every ignored file, '.git is now ignored by default'): --verbose
        for name in RAY_PACKAGING_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    job_id = submit(args.job, config_yaml, sub, client=client)
    print(f"rrsis: submitted {args.job} job {job_id}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        print(f"rrsis: follow with `rrsis jobs logs {job_id} --follow`", file=sys.stderr)
        return 0
    state = control.follow(client, job_id, sys.stdout, poll_s=sub.poll_s, timeout_s=sub.wait_timeout_s)
    print(f"rrsis: job {job_id} {state}", file=sys.stderr)
    return 0 if state == "SUCCEEDED" else 1


def jobs_from_cli(args: argparse.Namespace) -> int:
    client = connect(args.address)
    if args.action == "list":
        control.write_lines(control.list_jobs(client))
        return 0
    if not args.job_id:
        raise JobError(f"`rrsis jobs {args.action}` needs a job id (see `rrsis jobs list`)")
    if args.action == "status":
        print(control.describe(client, args.job_id))
        return 0
    if args.action == "logs":
        if args.follow:
            state = control.follow(client, args.job_id, sys.stdout)
            print(f"rrsis: job {args.job_id} {state}", file=sys.stderr)
            return 0 if state == "SUCCEEDED" else 1
        sys.stdout.write(control.logs(client, args.job_id))
        return 0
    if args.action == "stop":
        state = control.stop(client, args.job_id)
        print(f"{args.job_id} {state}")  # a job that had already ended keeps its status
        return 0
    raise AssertionError(args.action)


def run_submit(cfg: SubmitConfig) -> int:
    """Runner registered for the `submit` config: checks the cluster answers and prints its jobs."""
    client = connect(None, cfg.address, timeout_s=cfg.connect_timeout_s, verify=cfg.verify_tls)
    control.write_lines(control.list_jobs(client))
    return 0
