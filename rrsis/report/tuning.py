"""The report of a `rrsis tune` experiment, read back from its own folder.

The experiment folder has `results.parquet` (one row per trial, sorted by the metric), `best_train.yaml`,
`config.yaml` (the tune job's config: metric and mode) and Ray's trial folders, each with `result.json`
(one JSON line per reported epoch) and its kept `checkpoint_*` folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import yaml

from rrsis import storage
from rrsis.errors import InputError
from rrsis.report import svg
from rrsis.report.page import document, link, run_block, td
from rrsis.report.run import modified, read_parquet

RESULTS = "results.parquet"
#: Trials drawn as lines in the per-epoch plot (the best ones; the table lists them all).
LINES = 8


@dataclass
class TuneFacts:
    run_uri: str
    trials: list[dict[str, Any]]  # results.parquet rows, best first
    metric: str
    mode: str  # max | min
    curves: dict[str, list[tuple[float, float]]]  # trial_id -> (epoch, metric) per reported epoch
    trial_dirs: dict[str, str]  # trial_id -> trial folder, relative
    checkpoints: dict[str, str]  # trial_id -> its kept model file, relative
    config: dict[str, Any] | None
    started: datetime | None
    finished: datetime | None

    @property
    def name(self) -> str:
        return self.run_uri.rstrip("/").rsplit("/", 1)[-1]


def sort_trials(trials: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Best first by `metric` (`mode` max or min); trials without a finite value go last."""

    def key(row: dict[str, Any]) -> tuple[int, float]:
        v = row.get(metric)
        if not isinstance(v, int | float) or not math.isfinite(v):
            return (1, 0.0)
        return (0, -float(v) if mode == "max" else float(v))

    return sorted(trials, key=key)


def trial_files(run_uri: str) -> tuple[dict[str, str], dict[str, str]]:
    """trial_id -> trial folder, and trial_id -> the model file of its newest kept checkpoint (relative)."""
    dirs: dict[str, str] = {}
    ckpts: dict[str, str] = {}
    for uri in storage.list_prefix(run_uri + "/"):
        parts = uri[len(run_uri) + 1 :].split("/")
        if not parts[0].startswith("trial_") or len(parts) < 2:
            continue
        trial_id = "_".join(parts[0].split("_")[1:3])  # trial_<experiment>_<number>_<index>_<params>...
        dirs[trial_id] = parts[0]
        if len(parts) == 3 and parts[1].startswith("checkpoint_") and parts[2].endswith(".pt"):
            if parts[2] != "state.pt" and "/".join(parts) > ckpts.get(trial_id, ""):
                ckpts[trial_id] = "/".join(parts)
    return dirs, ckpts


def curve(uri: str, metric: str) -> list[tuple[float, float]]:
    points = []
    for line in storage.get_bytes(uri).decode().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by an interrupted trial
        value = row.get(metric)
        step = row.get("training_iteration", row.get("epoch"))
        if isinstance(value, int | float) and isinstance(step, int | float):
            points.append((float(step), float(value)))
    return points


def load_tune(run_uri: str, metric: str = "", mode: str = "") -> TuneFacts:
    table = read_parquet(storage.join(run_uri, RESULTS))
    if table is None:
        raise InputError(f"{run_uri} has no {RESULTS}: not a finished rrsis tune experiment")
    config_uri = storage.join(run_uri, "config.yaml")
    config = yaml.safe_load(storage.get_bytes(config_uri)) if storage.exists(config_uri) else None
    config = config if isinstance(config, dict) else None
    metric = metric or str((config or {}).get("metric") or "")
    mode = mode or str((config or {}).get("mode") or "max")
    trials = table.to_pylist()
    if metric:
        trials = sort_trials(trials, metric, mode)
    dirs, ckpts = trial_files(run_uri)
    curves = {}
    for trial_id, folder in dirs.items():
        result = storage.join(run_uri, folder, "result.json")
        if metric and storage.exists(result):
            curves[trial_id] = curve(result, metric)
    return TuneFacts(
        run_uri=run_uri,
        trials=trials,
        metric=metric,
        mode=mode,
        curves=curves,
        trial_dirs=dirs,
        checkpoints=ckpts,
        config=config,
        started=modified(storage.join(run_uri, "tuner.pkl")),
        finished=modified(storage.join(run_uri, RESULTS)),
    )


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else str(v)


def trials_table(facts: TuneFacts) -> str:
    keys = list(dict.fromkeys(k for t in facts.trials for k in t))
    numeric = {k for t in facts.trials for k, v in t.items() if isinstance(v, int | float)}
    head = "<th>rank</th>" + "".join(
        f'<th class="sort" data-type="{"num" if k in numeric else "str"}">'
        f"{escape(k)}{' (sorted)' if k == facts.metric else ''}</th>"
        for k in keys
    )
    rows = []
    for i, t in enumerate(facts.trials, 1):
        cells = [td(str(i), i, True)]
        for k in keys:
            v = t.get(k)
            text = escape(fmt_value(v))
            if k == "trial_id" and str(v) in facts.checkpoints:
                text = link(facts.checkpoints[str(v)], str(v))
            cells.append(td(text, v if v is not None else "", isinstance(v, int | float)))
        cls = ' class="best"' if i == 1 else ""
        rows.append(f'<tr id="trial-{escape(str(t.get("trial_id", i)))}"{cls}>{"".join(cells)}</tr>')
    order = "highest" if facts.mode == "max" else "lowest"
    return (
        f'<div class="wide"><table class="sortable trials"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="note">Sorted by {escape(facts.metric or "the metric")}, {order} first (the last value each trial '
        f"reported; ASHA stops weak trials early: see epochs_run). The trial id links to its kept checkpoint. "
        f"All rows: {link(RESULTS, RESULTS)}, {link('results.csv', 'results.csv')}.</p>"
    )


def plots(facts: TuneFacts) -> list[str]:
    metric = facts.metric
    if not metric:
        return []
    values = {
        str(t.get("trial_id")): float(t[metric])
        for t in facts.trials
        if isinstance(t.get(metric), int | float) and math.isfinite(t[metric])
    }
    top = list(values)[:LINES]
    ylabel = f"{metric} (fraction, 0-1)" if all(0 <= v <= 1 for v in values.values()) else f"{metric} (unitless)"
    figs = [
        svg.bar_chart(dict(list(values.items())[:LINES]), f"{metric} per trial (last reported)", ylabel),
        svg.line_chart(
            {t: facts.curves[t] for t in top if facts.curves.get(t)},
            f"{metric} per epoch, by trial",
            "epoch",
            ylabel,
            integer_x=True,
        ),
    ]
    return [f for f in figs if f]


def header(facts: TuneFacts) -> str:
    cfg = facts.config or {}
    best = facts.trials[0] if facts.trials else {}
    best_id = str(best.get("trial_id", ""))
    value = best.get(facts.metric)
    best_text = escape(best_id) + (f": {escape(facts.metric)} = {value:.4f}" if isinstance(value, int | float) else "")
    if best_id in facts.checkpoints:
        best_text += f" · checkpoint {link(facts.checkpoints[best_id], facts.checkpoints[best_id])}"
    wall = (
        f"{(facts.finished - facts.started).total_seconds():.1f} s (search start to results written)"
        if facts.started and facts.finished
        else "unknown"
    )
    base = cfg.get("base") or {}
    rows = [
        ("trials", f"{len(facts.trials)} ({cfg.get('num_samples', '?')} samples asked)"),
        ("metric", escape(f"{facts.metric or 'not recorded'} ({facts.mode})")),
        ("scheduler", escape(str(cfg.get("scheduler", "")))),
        ("model", escape(str((base.get("model") or {}).get("name", "")))),
        ("search space", escape(str(cfg.get("space", "")))),
        ("best trial", best_text),
        ("best config", link("best_train.yaml", "best_train.yaml") + " (ready for rrsis train --config)"),
        ("finished", facts.finished.strftime("%Y-%m-%d %H:%M:%S UTC") if facts.finished else "unknown"),
        ("wall time", wall),
        ("outputs", escape(facts.run_uri)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return run_block(dl, facts.config)


def render_tune(facts: TuneFacts) -> str:
    body = f"""{header(facts)}
<h2>Metric by trial</h2>
<p class=note>The best {LINES} trials are drawn; hover a point or bar for its value.</p>
<div class="figs">{"".join(plots(facts))}</div>
<h2>Trials ({len(facts.trials)})</h2>
{trials_table(facts)}"""
    return document(f"rrsis tune {facts.name}", body, "tr.best td{background:#eef6ee}")
