"""`build_report(run_uri)`: the report of any rrsis run, written beside the run's outputs.

The run's kind decides what is written: a map run gets `report.html`, a STAC catalog and
`polygons/<scene_id>.parquet`; a train, tune or eval run gets `report.html` from its metrics. The kind is
recorded in `report.json` (with the training job's ranking metric) when a job builds its report, so a
later `rrsis report RUN` rebuilds the same page; without it the kind is read from the files present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import yaml

from rrsis import storage
from rrsis.errors import InputError
from rrsis.report.evaluation import load_eval, render_eval
from rrsis.report.geoparquet import write_polygons
from rrsis.report.page import render
from rrsis.report.run import full_uri, load_run, normalize_run_uri, read_json
from rrsis.report.stac import write_catalog
from rrsis.report.training import load_train, render_train
from rrsis.report.tuning import load_tune, render_tune

log = logging.getLogger("rrsis.report")

REPORT = "report.html"
META = "report.json"
KINDS = ("map", "train", "tune", "eval")
#: The file that marks each kind, checked in this order when `report.json` does not say.
MARKERS = (("summary.json", "map"), ("results.parquet", "tune"), ("metrics.jsonl", "train"), ("metrics.json", "eval"))


def run_kind(run_uri: str) -> str:
    """map | train | tune | eval: from `report.json`, else from the files in the folder."""
    meta_uri = storage.join(run_uri, META)
    if storage.exists(meta_uri):
        kind = str(read_json(meta_uri).get("kind", ""))
        if kind in KINDS:
            return kind
    for name, kind in MARKERS:
        if storage.exists(storage.join(run_uri, name)):
            return kind
    raise InputError(
        f"{run_uri} is not a finished rrsis run: it has none of "
        f"{', '.join(n for n, _ in MARKERS)} (give the run folder: <output>/<run_id> of a map, "
        "<output>/<run_name> of train, <output>/<name> of tune, the output of eval)"
    )


def build_report(
    run_uri: str,
    config: Mapping[str, Any] | None = None,
    kind: str = "",
    rank_by: str = "",
    reuse_polygons: bool = False,
) -> str:
    """Write the report of the run at `run_uri`; the URI of its `report.html`.

    `config` (the run's resolved config, as the job has it) is saved as the run's `config.yaml`, so the page
    can show it, also when the report is rebuilt later. `kind` and `rank_by` (train: the metric that picks
    the best checkpoint) are recorded in `report.json` for rebuilds. `reuse_polygons` (a map run's own
    report): keep the GeoParquet partitions its products tasks wrote; a rebuild converts every scene again.
    """
    run_uri = normalize_run_uri(run_uri)
    if kind and kind not in KINDS:
        raise InputError(f"report kind {kind!r} is not one of {', '.join(KINDS)}")
    if config is not None:
        text = yaml.safe_dump(dict(config), sort_keys=False)
        storage.put_bytes(storage.join(run_uri, "config.yaml"), text.encode())
    meta_uri = storage.join(run_uri, META)
    meta = read_json(meta_uri) if storage.exists(meta_uri) else {}
    if kind or rank_by:
        meta.update({k: v for k, v in (("kind", kind), ("rank_by", rank_by)) if v})
        storage.put_bytes(meta_uri, json.dumps(meta, indent=2).encode())
    kind = kind or run_kind(run_uri)
    page = storage.join(run_uri, REPORT)
    if kind == "map":
        return map_report(run_uri, reuse_polygons)
    if kind == "train":
        html = render_train(load_train(run_uri, str(meta.get("rank_by") or "")))
    elif kind == "tune":
        html = render_tune(load_tune(run_uri))
    else:
        html = render_eval(load_eval(run_uri))
    storage.put_bytes(page, html.encode())
    log.info("%s report %s", kind, page)
    return page


def map_report(run_uri: str, reuse_polygons: bool = False) -> str:
    """report.html, the STAC catalog and the GeoParquet polygons of a map run."""
    facts = load_run(run_uri)
    vectors = {s.scene_id: full_uri(run_uri, s.files["vectors"]) for s in facts.scenes if "vectors" in s.files}
    polygons = write_polygons(run_uri, vectors, reuse=reuse_polygons)
    catalog = write_catalog(facts, polygons)
    page = storage.join(run_uri, REPORT)
    storage.put_bytes(page, render(facts).encode())
    log.info("report %s, STAC catalog %s", page, catalog)
    return page


def report_run(run_uri: str, config: Mapping[str, Any] | None = None, kind: str = "", rank_by: str = "") -> str | None:
    """`build_report` for the end of a job: a report that cannot be built is one warning line, never a
    failed job (`rrsis report RUN` builds it again). The page's URI, or None."""
    try:
        page = build_report(run_uri, config=config, kind=kind, rank_by=rank_by)
    except Exception as exc:  # the job's own outputs are written; the report is a view of them
        log.warning(
            "report of %s not written: %s", run_uri, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
        return None
    print(f"report: {page}", flush=True)
    return page
