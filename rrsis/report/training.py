"""The report of a `rrsis train` run, read back from its own folder.

A plain run has `config.yaml`, `metrics.jsonl` (one record per epoch), `best.pt` and `last.pt`; a Ray Train
run has `epoch_NNNNN/` checkpoint folders instead of `best.pt`. The best checkpoint is the plain run's
`best.pt` (its header names the epoch), else the kept `epoch_*` folder whose epoch ranks highest by the
run's ranking metric (`rank_by`, recorded in `report.json` by the training job). Checkpoint headers are
read without torch (`rrsis.checkpoint_header`).
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
from rrsis.checkpoint_header import read_header
from rrsis.errors import InputError
from rrsis.report import svg
from rrsis.report.page import document, link, run_block, td
from rrsis.report.run import modified

METRICS = "metrics.jsonl"
#: Record keys that are bookkeeping, not metrics to plot.
NOT_PLOTTED = ("epoch", "elapsed_s", "restored_from_epoch", "timestamp")


@dataclass
class BestCheckpoint:
    path: str  # relative to the run folder
    epoch: int | None
    metric: str  # the ranking metric, "" when not recorded
    value: float | None


@dataclass
class TrainFacts:
    run_uri: str
    records: list[dict[str, Any]]  # one per epoch, in epoch order
    config: dict[str, Any] | None
    best: BestCheckpoint | None
    checkpoints: list[str]  # model files of the run, relative paths
    started: datetime | None  # config.yaml written
    finished: datetime | None  # the last metrics line or model file written

    @property
    def name(self) -> str:
        return self.run_uri.rstrip("/").rsplit("/", 1)[-1]


def read_records(uri: str) -> list[dict[str, Any]]:
    """The epoch records of `metrics.jsonl`, one per epoch (the last line of an epoch wins: a restarted Ray
    Train group may report an epoch again), in epoch order."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(storage.get_bytes(uri).decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{uri} line {n} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or "epoch" not in record:
            raise InputError(f"{uri} line {n} has no 'epoch'")
        by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def score(record: dict[str, Any], metric: str) -> float:
    value = record.get(metric)
    return -math.inf if not isinstance(value, int | float) or math.isnan(value) else float(value)


def model_files(run_uri: str) -> list[str]:
    """Model files of the run (relative): `*.pt` at the top and in `epoch_*/` folders, never `state.pt`."""
    out = []
    for uri in storage.list_prefix(run_uri + "/"):
        rel = uri[len(run_uri) + 1 :]
        parts = rel.split("/")
        top = len(parts) == 1
        in_epoch = len(parts) == 2 and parts[0].startswith("epoch_")
        if rel.endswith(".pt") and parts[-1] != "state.pt" and (top or in_epoch):
            out.append(rel)
    return sorted(out)


def best_checkpoint(
    run_uri: str, records: list[dict[str, Any]], files: list[str], rank_by: str
) -> BestCheckpoint | None:
    top = [f for f in files if f.startswith("best.")]
    if top:
        header = read_header(storage.join(run_uri, top[0])) or {}
        metrics = header.get("metrics") or {}
        epoch = int(metrics["epoch"]) if isinstance(metrics.get("epoch"), int | float) else None
        value = metrics.get(rank_by) if rank_by else None
        return BestCheckpoint(top[0], epoch, rank_by, float(value) if isinstance(value, int | float) else None)
    kept = {int(f.split("/")[0].removeprefix("epoch_")): f for f in files if f.startswith("epoch_")}
    candidates = [r for r in records if int(r["epoch"]) in kept]
    if not candidates:
        return None
    if rank_by:  # the highest score; ties keep the earlier epoch (NaN ranks lowest)
        chosen = max(candidates, key=lambda r: (score(r, rank_by), -int(r["epoch"])))
    else:
        chosen = candidates[-1]
    value = chosen.get(rank_by) if rank_by else None
    epoch = int(chosen["epoch"])
    return BestCheckpoint(kept[epoch], epoch, rank_by, float(value) if isinstance(value, int | float) else None)


def load_train(run_uri: str, rank_by: str = "") -> TrainFacts:
    metrics_uri = storage.join(run_uri, METRICS)
    records = read_records(metrics_uri)
    config_uri = storage.join(run_uri, "config.yaml")
    config = yaml.safe_load(storage.get_bytes(config_uri)) if storage.exists(config_uri) else None
    files = model_files(run_uri)
    times = [t for t in (modified(storage.join(run_uri, f)) for f in [METRICS, *files]) if t is not None]
    return TrainFacts(
        run_uri=run_uri,
        records=records,
        config=config if isinstance(config, dict) else None,
        best=best_checkpoint(run_uri, records, files, rank_by),
        checkpoints=files,
        started=modified(config_uri),
        finished=max(times) if times else None,
    )


def metric_groups(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Plotted keys by chart: losses, validation metrics, training metrics, learning rate, other terms."""
    keys = list(dict.fromkeys(k for r in records for k, v in r.items() if isinstance(v, int | float)))
    keys = [k for k in keys if k not in NOT_PLOTTED and not k.endswith("n_pixels")]
    groups: dict[str, list[str]] = {"loss": [], "validation": [], "training": [], "lr": [], "other": []}
    for k in keys:
        if "loss" in k:
            groups["loss"].append(k)
        elif k.startswith("val_"):
            groups["validation"].append(k)
        elif k.startswith("train_"):
            groups["training"].append(k)
        elif k == "lr":
            groups["lr"].append(k)
        else:
            groups["other"].append(k)
    return {g: ks for g, ks in groups.items() if ks}


def unit_label(records: list[dict[str, Any]], keys: list[str], name: str) -> str:
    values = [float(r[k]) for r in records for k in keys if isinstance(r.get(k), int | float)]
    finite = [v for v in values if math.isfinite(v)]
    if finite and all(0.0 <= v <= 1.0 for v in finite) and name != "loss":
        return f"{name} (fraction, 0-1)"
    return f"{name} (unitless)"


def plots(facts: TrainFacts) -> list[str]:
    recs = facts.records
    best = facts.best.epoch if facts.best else None
    mark = f"best checkpoint: epoch {best}"
    titles = {
        "loss": ("training loss per epoch", "loss"),
        "validation": ("validation metrics per epoch", "metric"),
        "training": ("training-set metrics per epoch", "metric"),
        "lr": ("learning rate at the end of each epoch", "learning rate"),
        "other": ("other training terms per epoch", "value"),
    }
    figs = []
    for group, keys in metric_groups(recs).items():
        title, name = titles[group]
        series = {
            k: [(float(r["epoch"]), float(r[k])) for r in recs if isinstance(r.get(k), int | float)] for k in keys
        }
        ylabel = "learning rate (unitless)" if group == "lr" else unit_label(recs, keys, name)
        figs.append(svg.line_chart(series, title, "epoch", ylabel, best, mark, integer_x=True))
    durations, before = [], 0.0
    for r in recs:
        if isinstance(r.get("elapsed_s"), int | float):
            durations.append((float(r["epoch"]), float(r["elapsed_s"]) - before))
            before = float(r["elapsed_s"])
    figs.append(
        svg.line_chart({"epoch time": durations}, "wall time per epoch", "epoch", "time, s", best, mark, integer_x=True)
    )
    return [f for f in figs if f]


def epochs_table(facts: TrainFacts) -> str:
    keys = list(dict.fromkeys(k for r in facts.records for k in r if k != "epoch"))
    head = '<th class="sort" data-type="num">epoch</th>' + "".join(
        f'<th class="sort" data-type="num">{escape(k)}</th>' for k in keys
    )
    best = facts.best.epoch if facts.best else None
    rows = []
    for r in facts.records:
        cells = [td(str(r["epoch"]), r["epoch"], True)]
        for k in keys:
            v = r.get(k)
            text = "-" if not isinstance(v, int | float) else f"{v:.6g}" if isinstance(v, float) else str(v)
            cells.append(td(text, v if isinstance(v, int | float) else "", True))
        cls = ' class="best"' if r["epoch"] == best else ""
        rows.append(f'<tr id="epoch-{r["epoch"]}"{cls}>{"".join(cells)}</tr>')
    return (
        f'<div class="wide"><table class="sortable epochs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="note">One row per epoch of {link(METRICS, METRICS)}; the best checkpoint\'s epoch is shaded.</p>'
    )


def header(facts: TrainFacts) -> str:
    cfg = facts.config or {}
    model = cfg.get("model") or {}
    family = (model.get(str(model.get("name"))) or {}) if isinstance(model, dict) else {}
    model_text = str(model.get("name") or "not recorded")
    if isinstance(family, dict) and family.get("family"):
        model_text += f" ({family['family']}, {family.get('width', '')})".replace(", )", ")")
    data = cfg.get("data") or {}
    optim = cfg.get("optim") or {}
    best = facts.best
    if best is None:
        best_text = "none written"
    else:
        metric = (f", {escape(best.metric)} = {best.value:.4f}" if best.metric and best.value is not None else "") or (
            f", ranked by {escape(best.metric)}" if best.metric else ""
        )
        epoch = f"epoch {best.epoch}" if best.epoch is not None else "epoch not recorded"
        best_text = f"{link(best.path, best.path)}: {epoch}{metric}"
    wall = (
        f"{(facts.finished - facts.started).total_seconds():.1f} s (config.yaml written to the last output)"
        if facts.started and facts.finished
        else "unknown"
    )
    last = facts.records[-1] if facts.records else {}
    rows = [
        ("status", f'<span class="ok">{len(facts.records)} epochs</span> of {optim.get("epochs", "?")} planned'),
        ("model", escape(model_text)),
        ("data", escape(f"{data.get('format', '')} {data.get('root', '')}".strip())),
        (
            "optimiser",
            escape(f"{optim.get('name', '')}, lr {optim.get('lr', '')}, batch {optim.get('batch_size', '')}"),
        ),
        ("best checkpoint", best_text),
        ("checkpoints", " · ".join(link(f, f) for f in facts.checkpoints) or "none"),
        ("finished", facts.finished.strftime("%Y-%m-%d %H:%M:%S UTC") if facts.finished else "unknown"),
        ("wall time", wall),
        ("training loop", f"{float(last.get('elapsed_s') or 0):.1f} s (elapsed_s of the last epoch)"),
        ("outputs", escape(facts.run_uri)),
        ("files", " · ".join(link(f, f) for f in ("config.yaml", METRICS))),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return run_block(dl, facts.config)


def render_train(facts: TrainFacts) -> str:
    figs = "".join(plots(facts))
    body = f"""{header(facts)}
<h2>Per-epoch metrics</h2>
<p class=note>Dashed line: the best checkpoint's epoch. Hover a point for its value.</p>
<div class="figs">{figs}</div>
<h2>Epochs ({len(facts.records)})</h2>
{epochs_table(facts)}"""
    return document(f"rrsis train {facts.name}", body, "tr.best td{background:#eef6ee}")
