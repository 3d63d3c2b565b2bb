"""`rrsis` command line: one subcommand per job, plus `config show` and cluster job control.

Expected failures (`RrsisError`) print one line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from rrsis import __version__
from rrsis.config.jobs import JOBS, runner_for, schema_for
from rrsis.errors import RrsisError
from rrsis.log import setup_logging

_RUN_JOBS = ("map", "train", "tune", "eval")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (defaults apply for every key it leaves out)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, applied after the file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrsis",
        description="Map very large satellite scenes with language on Ray.",
        epilog="Run `rrsis JOB --help` for one job. Configs: see configs/ and `rrsis config show JOB`.",
    )
    parser.add_argument("--version", action="version", version=f"rrsis {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (env RRSIS_LOG_LEVEL)")
    parser.add_argument(
        "--verbose", action="store_true", help="show Ray's own warnings and log lines too (env RRSIS_VERBOSE=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="JOB")
    for job in _RUN_JOBS:
        _add_common(sub.add_parser(job, help=JOBS[job][2]))
    show = sub.add_parser("config", help="print a job's resolved config")
    show.add_argument("action", choices=["show"])
    show.add_argument("job", choices=list(JOBS))
    _add_common(show)
    submit = sub.add_parser("submit", help=JOBS["submit"][2])
    submit.add_argument("job", choices=list(_RUN_JOBS), help="the job to run on the cluster")
    submit.add_argument("--address", default=None, help="Ray dashboard address (default: RAY_ADDRESS)")
    submit.add_argument("--submit-config", default=None, help="YAML of the submit section (SubmitConfig)")
    submit.add_argument("--no-wait", action="store_true", help="return right after submission")
    _add_common(submit)
    report = sub.add_parser(
        "report", help="(re)build a run's report.html (map runs: also a STAC catalog and GeoParquet polygons)"
    )
    report.add_argument(
        "run_uri",
        help="the run folder (local path or s3://): map <output>/<run_id>, train <output>/<run_name>, "
        "tune <output>/<name>, eval <output>",
    )
    jobs = sub.add_parser("jobs", help="follow and control submitted jobs")
    jobs.add_argument("action", choices=["status", "logs", "stop", "list"])
    jobs.add_argument("job_id", nargs="?", default=None)
    jobs.add_argument("--address", default=None, help="Ray dashboard address (default: RAY_ADDRESS)")
    jobs.add_argument("--follow", "-f", action="store_true", help="stream logs until the job ends")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    # Imported here, and the job's own modules through `runner_for`: `rrsis --help` and `rrsis JOB --help`
    # never pay for omegaconf and the config schemas, nor a job for another job's libraries.
    from rrsis.config.load import load_config, to_yaml

    if args.command in _RUN_JOBS:
        cfg: Any = load_config(schema_for(args.command), args.config, args.overrides)
        return int(runner_for(args.command)(cfg) or 0)
    if args.command == "config":
        cfg = load_config(schema_for(args.job), args.config, args.overrides)
        sys.stdout.write(to_yaml(cfg))
        return 0
    if args.command == "submit":
        from rrsis.submit.client import submit_from_cli  # here: the job-submission client only submit uses

        return submit_from_cli(args)
    if args.command == "jobs":
        from rrsis.submit.client import jobs_from_cli  # here: the job-submission client only jobs uses

        return jobs_from_cli(args)
    if args.command == "report":
        from rrsis.report import build_report, run_kind  # here: rasterio and pyarrow, which only report needs

        page = build_report(args.run_uri)
        run = page.rsplit("/", 1)[0]
        extra = f"; STAC catalog {run}/catalog.json; polygons {run}/polygons/" if run_kind(run) == "map" else ""
        print(f"rrsis report: {page}{extra}", flush=True)
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot put `key=value` overrides into `overrides` when they follow an option that follows
    # another positional (`rrsis submit map --config f.yaml a=1`); fold them in, reject anything else.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    if args.verbose:
        os.environ["RRSIS_VERBOSE"] = "1"
    # imported here like every job's modules: `rrsis --help` stays free of boto3 and the configs (~1.4 s)
    from rrsis.session import quiet_libraries

    quiet_libraries()  # before any job reads a GeoTIFF with OpenCV or starts Ray
    setup_logging(args.log_level)
    try:
        return _dispatch(args)
    except RrsisError as exc:
        if args.debug:
            raise
        print(f"rrsis: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rrsis: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"rrsis: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
