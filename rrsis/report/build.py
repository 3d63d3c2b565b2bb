"""`build_report(run_uri)`: polygons -> STAC catalog -> report.html, all written beside the run's outputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import yaml

from rrsis import storage
from rrsis.report.geoparquet import write_polygons
from rrsis.report.page import render
from rrsis.report.run import full_uri, load_run, normalize_run_uri
from rrsis.report.stac import write_catalog

log = logging.getLogger("rrsis.report")

REPORT = "report.html"


def build_report(run_uri: str, config: Mapping[str, Any] | None = None) -> str:
    """Write `report.html`, `catalog.json` (+ collection and items) and `polygons/<scene_id>.parquet` for the
    map run at `run_uri`; the URI of `report.html`.

    `config` (the run's resolved config, as the map driver has it) is saved as the run's `config.yaml`, so
    the header can show the task, model checkpoint and inputs, also when the report is rebuilt later.
    """
    run_uri = normalize_run_uri(run_uri)
    if config is not None:
        text = yaml.safe_dump(dict(config), sort_keys=False)
        storage.put_bytes(storage.join(run_uri, "config.yaml"), text.encode())
    facts = load_run(run_uri)
    vectors = {s.scene_id: full_uri(run_uri, s.files["vectors"]) for s in facts.scenes if "vectors" in s.files}
    polygons = write_polygons(run_uri, vectors)
    catalog = write_catalog(facts, polygons)
    page = storage.join(run_uri, REPORT)
    storage.put_bytes(page, render(facts).encode())
    log.info("report %s, STAC catalog %s", page, catalog)
    return page
