"""Logging set-up shared by the CLI and the Ray job entry points."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Libraries whose INFO lines are their own chatter, not the run's (botocore prints "Found credentials in
#: environment variables" for every client it makes): WARNING and up unless the level asked is DEBUG.
CHATTY_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3")


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; level from the argument, then RRSIS_LOG_LEVEL, then INFO."""
    name = (level or os.environ.get("RRSIS_LOG_LEVEL") or "INFO").upper()
    chosen = getattr(logging, name, logging.INFO)
    logging.basicConfig(level=chosen, format=_FORMAT, force=True)
    for library in CHATTY_LIBRARIES:
        logging.getLogger(library).setLevel(logging.NOTSET if chosen <= logging.DEBUG else max(chosen, logging.WARNING))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
