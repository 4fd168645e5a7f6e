"""The evaluate page: settings, the metrics table, ROC and cases figures and per-image scores, in the inspection page's style."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nsgan.common.atomic import atomic_write_text
from nsgan.evaluate.metrics import metric_rows
from nsgan.share.html_page import (
    GENERATOR,
    PAGE,
    _filters,
    _now,
    _num,
    _page,
    _settings,
    _settings_table,
    data_uri,
    href,
    text,
)


def _read_scores_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def render_evaluate_page(out_dir: str | Path, metrics: dict, scores: list[dict], figures: dict[str, bytes | None]) -> str:
    """The HTML of the evaluate page: settings, the metrics table, ROC and cases figures, per-image scores."""
    out_dir = Path(out_dir)
    data = Path(str(metrics.get("data", "")))
    title = f"nsgan evaluate: {data.name}"
    parts = [f"<h1>{text(title)}</h1>",
             f'<p class="muted">{len(scores)} test image(s). Written by {text(GENERATOR)} at '
             f"{_now()} from metrics.json and scores.csv in this folder.</p>"]
    th = metrics.get("model_thresholds") or {}
    cal = ", ".join(f"{k} {_num(th[k])}" for k in ("image", "pixel") if isinstance(th.get(k), (int, float)))
    pairs = [("data", text(metrics.get("data"))), ("model", text(metrics.get("model"))),
             ("model sha256", text(metrics["model_sha256"]) if metrics.get("model_sha256") else '<span class="muted">not recorded</span>'),
             ("model's calibrated thresholds", text(cal) if cal else '<span class="muted">none (not used by evaluate)</span>'),
             ("inversion / search", _settings(metrics.get("search"))),
             ("map and image score", _settings(metrics.get("map_settings"))), ("tiling", _settings(metrics.get("tiling")))]
    parts.append("<h2>Model and settings</h2>" + _settings_table(pairs))
    rows = "".join(f'<tr><th>{text(k)}</th><td class="num">{text(v)}</td></tr>' for k, v in metric_rows(metrics))
    parts.append(f'<h2>Metrics</h2><table id="metrics">{rows}</table>')
    for name, heading in (("roc.png", "ROC"), ("cases.png", "Best and worst cases")):
        png = figures.get(name)
        if png:
            parts.append(f'<h2>{heading}</h2><p class="figure"><a href="{href(name)}">'
                         f'<img src="{data_uri(png, "image/png")}" alt="{text(heading)}"></a></p>')
        else:
            parts.append(f'<h2>{heading}</h2><p class="muted">{name} is missing.</p>')

    thr = (metrics.get("image") or {}).get("f1_threshold")
    thr_r = float(f"{thr:.6g}") if isinstance(thr, (int, float)) else None  # scores.csv holds 6 digits
    table, counts = [], {"good": ["good", 0], "defective": ["defective", 0], "miss": ["wrong at the best-F1 threshold", 0]}
    ordered = sorted(scores, key=lambda r: (-_float(r.get("score")), r.get("path", "")))
    for k, r in enumerate(ordered, start=1):
        defective = str(r.get("label")) == "1"
        label = "defective" if defective else "good"
        groups = [label]
        s = _float(r.get("score"))
        if thr_r is not None and (s >= thr_r) != defective:
            groups.append("miss")
        for g in groups:
            counts[g][1] += 1
        image = data / str(r.get("path", ""))
        try:
            link = "./" + quote(os.fsencode(os.path.relpath(image, out_dir)), safe="/")
        except ValueError:  # another drive (Windows)
            link = None
        name = text(r.get("path", ""))
        name = f'<a href="{link}">{name}</a>' if link else name
        miss = ' <span class="badge miss">wrong</span>' if "miss" in groups else ""
        table.append(f'<tr id="row-{k}" data-groups="{" ".join(groups)}"><td class="num">{k}</td><td class="name">{name}</td>'
                     f'<td><span class="badge {label}">{label}</span>{miss}</td><td>{text(r.get("defect_type", ""))}</td>'
                     f'<td class="num">{_num(s)}</td></tr>')
    thr_note = (f" Wrong: on the other side of the best-F1 image threshold {_num(thr)} (defective when score ≥ it)."
                if thr_r is not None else "")
    parts.append(f'<h2>Images</h2><p class="muted">Sorted by image score, highest first.{text(thr_note)}</p>'
                 + _filters({g: (lbl, n) for g, (lbl, n) in counts.items()}, len(ordered)))
    parts.append('<table id="images"><thead><tr><th>#</th><th>image</th><th>label</th><th>defect type</th><th>score</th>'
                 "</tr></thead>\n<tbody>\n" + "\n".join(table) + "\n</tbody></table>")
    return _page(title, "\n".join(parts))


def _float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return -math.inf
    return f if math.isfinite(f) else -math.inf


def write_evaluate_page(out_dir: str | Path) -> Path:
    """(Re)write OUT/index.html of an evaluate folder from its metrics.json, scores.csv, roc.png, cases.png."""
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    scores = _read_scores_csv(out_dir / "scores.csv")
    figures = {}
    for name in ("roc.png", "cases.png"):
        try:
            figures[name] = (out_dir / name).read_bytes()
        except OSError:
            figures[name] = None
    return atomic_write_text(out_dir / PAGE, render_evaluate_page(out_dir, metrics, scores, figures))
